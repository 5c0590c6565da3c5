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
from enum import Enum
from typing import Any

from monitor.errors import MonitorError
from monitor.records import OutboxRow


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


class Action(str, Enum):
    TRIGGER = "trigger"  # a new detection
    RESOLVE = "resolve"  # its event was closed (resolved or false_positive)


@dataclass(frozen=True)
class Alert:
    """One notification for one channel, as a notifier needs it."""

    outbox_id: int
    event_id: int
    channel: str
    fingerprint: str  # stable per (model, location): the outbox dedup_key, PagerDuty's dedup_key
    action: Action
    model: str
    location: str  # where the copy was found: a path, an https URL, hf://owner/repo[@rev]
    verdict: str
    score: float
    confidence: str
    p_value: float | None
    status: str  # the event's triage status when the notification was queued
    detected_at: str  # ISO-8601 UTC

    @classmethod
    def from_row(cls, row: OutboxRow) -> Alert:
        p: dict[str, Any] = row.payload
        return cls(outbox_id=row.id, event_id=row.event_id, channel=row.channel,
                   fingerprint=row.dedup_key, action=Action(p.get("action", "trigger")),
                   model=p["model_name"], location=p["location"], verdict=p["verdict"],
                   score=p["score"], confidence=p["confidence"], p_value=p.get("p_value"),
                   status=p.get("status", "new"), detected_at=p["created_at"])

    @property
    def summary(self) -> str:
        """One line, for a page title or a log line."""
        if self.action is Action.RESOLVE:
            return f"resolved ({self.status}): {self.model} at {self.location}"
        return f"{self.verdict} copy of {self.model} found at {self.location}"

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


class Notifier(ABC):
    """Sends alerts to one channel. Fakes in tests subclass this, not a client library."""

    name: str  # the channel name routes use: "slack", "pagerduty", "log"

    @abstractmethod
    def send(self, alert: Alert) -> dict[str, Any] | None:
        """Deliver or raise Transient/Permanent; may return what the channel answered
        (a message ts, a dedup_key) for the notification log."""

    def close(self) -> None:
        """Release the client's connections."""
