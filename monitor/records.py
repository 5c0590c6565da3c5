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


@dataclass(frozen=True)
class OutboxRow:
    """One alert for one channel, written in the same transaction as its event."""

    id: int
    event_id: int
    channel: str
    dedup_key: str  # the event's key: one model at one location; channels may dedupe on it
    payload: dict[str, Any]  # the event as JSON, frozen when it was detected
    status: OutboxStatus
    attempts: int  # delivery attempts so far, successful or not
    next_attempt_at: str  # ISO-8601 UTC; the row is due once now reaches it
    last_error: str | None
    created_at: str
    delivered_at: str | None


@dataclass(frozen=True)
class Sightings:
    """How often one open event's suspect was seen again; re-sightings raise no new alert."""

    event_id: int
    count: int  # 1 when first recorded
    first_seen_at: str  # the event's created_at
    last_seen_at: str
