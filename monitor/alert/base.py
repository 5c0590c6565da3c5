"""The notifier interface, the alert it sends, and the two ways a send fails.

A notifier is one method (alert → None, or raise): like an httpx transport, it translates its
client library's errors into ``Transient`` or ``Permanent`` at exactly that boundary, and never
retries on its own — retries live in the outbox (deliver.py), where they survive restarts::

    MonitorError
    └── DeliveryError          a channel did not accept an alert
        ├── Transient          try again later (5xx, 429, timeout); retry_after if the channel said
        └── Permanent          retrying cannot help (4xx: bad token, unknown channel, bad payload)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from monitor.errors import MonitorError
from monitor.records import AlertAction, OutboxRow


class DeliveryError(MonitorError):
    """A channel did not accept an alert; `str()` is one line naming the channel."""

    def __init__(self, channel: str, problem: str) -> None:
        self.channel, self.problem = channel, problem
        super().__init__(f"{channel}: {problem}")


class Transient(DeliveryError):
    """Worth retrying; `retry_after` is the channel's own answer (Retry-After), in seconds."""

    def __init__(self, channel: str, problem: str, retry_after: float | None = None) -> None:
        super().__init__(channel, problem)
        self.retry_after = retry_after


class Permanent(DeliveryError):
    """Retrying the same alert cannot succeed; the outbox row is marked failed with the reason."""


Action = AlertAction  # the name notifiers use


@dataclass(frozen=True)
class Alert:
    """One notification for one channel, as a notifier needs it. Its subject is a detection
    (`DetectionAlert`) or a condition of the monitor itself (`ConditionAlert`)."""

    outbox_id: int
    channel: str
    fingerprint: str  # stable per subject: the outbox dedup_key, PagerDuty's dedup_key
    action: Action
    repeat: int  # which reminder this is (1, 2, ...) for a repeat, else 0

    @staticmethod
    def from_row(row: OutboxRow) -> Alert:
        p: dict[str, Any] = row.payload
        common = dict(outbox_id=row.id, channel=row.channel, fingerprint=row.dedup_key,
                      action=row.action, repeat=row.seq if row.action is Action.REPEAT else 0)
        if row.condition_id is not None:
            return ConditionAlert(**common, condition_id=row.condition_id, kind=p["kind"],
                                  subject=p["subject"], detail=p["detail"],
                                  failures=p["failures"], since=p["started_at"])
        return DetectionAlert(**common, event_id=row.event_id, model=p["model_name"],
                              location=p["location"], verdict=p["verdict"], score=p["score"],
                              confidence=p["confidence"], p_value=p.get("p_value"),
                              status=p.get("status", "new"), detected_at=p["created_at"],
                              sightings=p.get("sightings", 1), status_by=p.get("status_by"))

    # Each kind of alert also has `kind`: its route key, a verdict or a condition kind, by which
    # its severity is looked up.

    @property
    def summary(self) -> str:
        """One line, for a page title or a log line."""
        raise NotImplementedError

    @property
    def link(self) -> str | None:
        return None

    @property
    def next_step(self) -> str:
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        """Key facts, for PagerDuty's custom_details and structured log lines."""
        raise NotImplementedError

    def _prefix(self) -> str:
        if self.action is Action.REPEAT:
            return f"still open (reminder {self.repeat}): "
        return ""


@dataclass(frozen=True)
class DetectionAlert(Alert):
    """About a detection event: a copy of a registered model found somewhere."""

    event_id: int
    model: str
    location: str  # where the copy was found: a path, an https URL, hf://owner/repo[@rev]
    verdict: str
    score: float
    confidence: str
    p_value: float | None
    status: str  # the event's triage status when the notification was queued
    detected_at: str  # ISO-8601 UTC
    sightings: int = 1  # how often the copy was seen while the event was open
    status_by: str | None = None  # who set `status` (for an acknowledge or resolve)

    @property
    def kind(self) -> str:
        """The route key: the verdict."""
        return self.verdict

    @property
    def summary(self) -> str:
        if self.action is Action.RESOLVE:
            return f"resolved ({self.status}): {self.model} at {self.location}"
        if self.action is Action.ACKNOWLEDGE:
            return (f"acknowledged ({self.status}, by {self.status_by or 'someone'}): "
                    f"{self.model} at {self.location}")
        return f"{self._prefix()}{self.verdict} copy of {self.model} found at {self.location}"

    @property
    def link(self) -> str | None:
        """A browsable URL for the location, if it has one (hf://owner/repo → the Hub page)."""
        if self.location.startswith(("https://", "http://")):
            return self.location
        if self.location.startswith("hf://"):
            repo, _, revision = self.location.removeprefix("hf://").partition("@")
            return f"https://huggingface.co/{repo}" + (f"/tree/{revision}" if revision else "")
        return None

    @property
    def next_step(self) -> str:
        return (f"monitor events show {self.event_id}  ·  monitor events set-status "
                f"{self.event_id} investigating|confirmed|false_positive|resolved")

    def details(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "model": self.model, "location": self.location,
                "verdict": self.verdict, "confidence": self.confidence, "score": self.score,
                "p_value": self.p_value, "sightings": self.sightings,
                "next_step": self.next_step}


@dataclass(frozen=True)
class ConditionAlert(Alert):
    """About the monitor itself: a source it cannot list, a scope that keeps failing."""

    condition_id: int
    kind: str  # source_unreachable, scope_failing
    subject: str  # a crawler name, or crawler/scope
    detail: str  # the last failure, one line
    failures: int  # failed runs in a row
    since: str  # ISO-8601 UTC: the first failure

    @property
    def summary(self) -> str:
        what = self.kind.replace("_", " ")
        if self.action is Action.RESOLVE:
            return f"resolved: {what}: {self.subject}"
        return f"{self._prefix()}{what}: {self.subject} ({self.failures} runs failed: {self.detail})"

    @property
    def next_step(self) -> str:
        return ("check the source and its credentials; monitor candidates and the daemon's log "
                "show each failure; it resolves itself on the next run that works")

    def details(self) -> dict[str, Any]:
        return {"condition_id": self.condition_id, "kind": self.kind, "subject": self.subject,
                "detail": self.detail, "failures": self.failures, "since": self.since,
                "next_step": self.next_step}


class Notifier(ABC):
    """Sends alerts to one channel. Fakes in tests subclass this, not a client library."""

    name: str  # the channel name routes use: "slack", "pagerduty", "log"

    @abstractmethod
    def send(self, alert: Alert) -> dict[str, Any] | None:
        """Deliver or raise Transient/Permanent; may return what the channel answered
        (a message ts, a dedup_key) for the notification log."""

    def close(self) -> None:
        """Release the client's connections."""
