"""Frozen dataclasses that cross module boundaries.

Records are values: the registry returns them, fingerprint/match take and return them, the CLI
renders them. Alternatives are sibling classes or enums, not optional fields that mean "sometimes".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    """How a suspect relates to a registered model, strongest evidence first."""

    EXACT = "exact"            # a weight file is byte-identical (same sha256)
    REPACKAGED = "repackaged"  # same tensor values, different files (renamed, resharded, converted)
    DERIVATIVE = "derivative"  # changed values that still carry the model's fingerprint
    NONE = "none"


class EventStatus(str, Enum):
    """Triage workflow of a detection event; every change is audited with who and when."""

    NEW = "new"
    INVESTIGATING = "investigating"
    CONFIRMED = "confirmed"
    FALSE_POSITIVE = "false_positive"
    RESOLVED = "resolved"


# Canonical dtype names (safetensors' spelling; GGUF block types keep their own names, e.g. Q8_0).
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
# Integer and bool storage holds ids, masks and buffers, never values a model learned.
INTEGER_DTYPES = frozenset({"I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"})


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as its file declares it, before any of its values are read."""

    name: str
    dtype: str  # canonical: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL F8_E4M3 F8_E5M2, or a GGUF type (Q8_0 ...)
    shape: tuple[int, ...]
    file: str  # path or URL of the file that holds the bytes
    begin: int  # absolute byte offset of the first value in `file`
    end: int  # exclusive; end - begin is the stored size

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class WeightFile:
    """One weight file: what a Hub LFS pointer or a release digest lets us match for free."""

    path: str
    size: int
    sha256: str
    format: str  # "safetensors" | "torch" | "gguf"


@dataclass(frozen=True)
class TensorDigest:
    """A tensor's identity independent of file, name and shard: sha256 of its canonical bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    begin: int
    end: int
    digest: str  # sha256 over dtype, shape and little-endian C-order values
    constant: bool  # every value equal (init-like); such a tensor is no evidence of copying


@dataclass(frozen=True)
class FingerprintBlob:
    """An opaque, versioned fingerprint as stored; only its algorithm's module decodes `data`."""

    algorithm: str
    version: int
    data: bytes


@dataclass(frozen=True)
class ModelRecord:
    """A model the user owns, as registered."""

    id: int
    name: str
    owner: str | None
    source: str  # the path it was registered from
    registered_at: str  # ISO-8601 UTC
    n_files: int
    n_tensors: int
    total_bytes: int


@dataclass(frozen=True)
class Match:
    """One registered model a suspect resembles, with the evidence behind the verdict."""

    model_id: int
    model_name: str
    verdict: Verdict
    score: float  # 0..1, share of the model's evidence that agreed
    confidence: str  # "high" | "medium" | "low"
    p_value: float | None  # None when the architecture has no anchored units to test
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewEvent:
    """A detection about to be stored; the registry assigns id, status and timestamps."""

    model_id: int
    model_name: str
    location: str  # where the suspect was found: a local path, hf://owner/repo@rev, a URL
    verdict: Verdict
    score: float
    confidence: str
    p_value: float | None
    evidence: dict[str, Any]


@dataclass(frozen=True)
class EventRecord:
    """A stored detection event and where it stands in triage."""

    id: int
    model_id: int | None  # None once the model was removed; model_name keeps who it was
    model_name: str
    location: str
    verdict: Verdict
    score: float
    confidence: str
    p_value: float | None
    evidence: dict[str, Any]
    status: EventStatus
    status_by: str | None
    status_at: str | None
    created_at: str


@dataclass(frozen=True)
class AuditEntry:
    """One append-only audit row: who did what to which subject, when."""

    id: int
    at: str
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


class OutboxStatus(str, Enum):
    """Where one alert stands on its way to one channel."""

    PENDING = "pending"      # due at next_attempt_at (again, after a failure with a retry time)
    DELIVERED = "delivered"  # the channel accepted it
    FAILED = "failed"        # given up on; last_error says why
    SUPPRESSED = "suppressed"  # not sent on purpose: its subject closed first, or nothing to resolve


class AlertAction(str, Enum):
    """What one notification says about its subject (Alertmanager's firing/resolved, plus
    reminders). PagerDuty hears a repeat as another trigger on the same dedup_key."""

    TRIGGER = "trigger"  # first notification: a new detection, a condition starting to fire
    ACKNOWLEDGE = "acknowledge"  # someone took the event (investigating, confirmed)
    REPEAT = "repeat"    # still open and unacknowledged after the kind's repeat interval
    RESOLVE = "resolve"  # the event was closed, the condition cleared


@dataclass(frozen=True)
class OutboxRow:
    """One notification for one channel about one subject — an event or a condition — written
    in the same transaction as the change that caused it."""

    id: int
    event_id: int | None  # exactly one of event_id and condition_id is set
    condition_id: int | None
    channel: str
    dedup_key: str  # stable per subject: one model at one location, one condition; PagerDuty's
    action: AlertAction
    seq: int  # which repeat this is (1, 2, ...); for other actions, how many came before (0, ...)
    payload: dict[str, Any]  # the subject as JSON, frozen when the notification was queued
    status: OutboxStatus
    attempts: int  # delivery attempts so far, successful or not
    next_attempt_at: str  # ISO-8601 UTC; the row is due once now reaches it
    last_error: str | None
    created_at: str
    delivered_at: str | None


class ConditionKind(str, Enum):
    """What the monitor raises about itself (monitor.conditions); the values are route keys in
    [alerts], beside the verdicts. Endpoint probes will add theirs here."""

    SOURCE_UNREACHABLE = "source_unreachable"  # no scope of a crawler could be listed
    SCOPE_FAILING = "scope_failing"  # one scope's listing failed


class ConditionState(str, Enum):
    """Alertmanager's alert states: failing, but not yet for `fire_after` runs in a row, is
    pending (no notification); firing notifies; resolved closes it (and notifies if it fired)."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class ConditionRecord:
    """Something wrong with the monitor's own view of the world (not a finding): a source that
    cannot be listed, a scope that keeps failing. Notified like an event, resolved by itself."""

    id: int
    kind: str  # the route key: source_unreachable, scope_failing
    subject: str  # what it is about: a crawler name, or crawler/scope
    fingerprint: str  # stable per (kind, subject): the outbox dedup_key
    parent: str | None  # the fingerprint of the condition that inhibits this one while firing
    state: ConditionState
    failures: int  # failed runs in a row so far
    detail: str  # the last failure, one line
    started_at: str
    last_seen_at: str
    fired_at: str | None
    resolved_at: str | None


@dataclass(frozen=True)
class Sightings:
    """How often one open event's suspect was seen again; re-sightings raise no new alert."""

    event_id: int
    count: int  # 1 when first recorded
    first_seen_at: str  # the event's created_at
    last_seen_at: str
