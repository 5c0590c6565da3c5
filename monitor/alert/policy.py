"""Routing and severity: which channels each kind of alert is sent to, and how loudly it pages.

The pipeline asks `Routes.channels(match)` when it records an event, so each match's outbox rows
go only to its verdict's channels (an exact copy pages, a derivative posts to Slack); conditions
ask `Routes.for_kind`. A kind without a route gets no outbox row: a detection is still an event
(`monitor events list`), a condition still a row (`monitor alerts conditions`).

Repeats and inhibition are decided at delivery (alert/deliver.py), from `[alerts]
repeat_every_h` and each condition's parent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from monitor.records import Match, Verdict


@dataclass(frozen=True)
class Routes:
    """Verdict → channels and verdict → PagerDuty severity, from [alerts] routes and severity."""

    routes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    severity: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, alerts: object) -> Routes:
        return cls(routes=dict(alerts.routes), severity=dict(alerts.severity))  # type: ignore[attr-defined]

    def channels(self, match: Match) -> list[str]:
        return self.for_kind(Verdict(match.verdict).value)

    def for_kind(self, kind: str) -> list[str]:
        return list(self.routes.get(kind, ()))

    def __call__(self, match: Match) -> list[str]:
        return self.channels(match)

    @property
    def used(self) -> set[str]:
        """Every channel some verdict is routed to (the notifiers a deliverer needs)."""
        return {c for channels in self.routes.values() for c in channels}
