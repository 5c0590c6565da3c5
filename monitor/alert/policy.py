"""Routing and severity: which channels a verdict is sent to, and how loudly it pages.

The pipeline asks `Routes.channels(match)` when it records an event, so each match's outbox rows
go only to its verdict's channels (an exact copy pages, a derivative posts to Slack). A verdict
without a route gets no outbox row: it is still an event (`monitor events list`).

Not implemented (the issue borrows them from Alertmanager): repeat_interval — re-notifying an
event still open after a while — and inhibition — a "source unreachable" alert muting the
alerts of that source's candidates; neither has an event kind to hang on yet.
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
        return list(self.routes.get(Verdict(match.verdict).value, ()))

    def __call__(self, match: Match) -> list[str]:
        return self.channels(match)

    @property
    def used(self) -> set[str]:
        """Every channel some verdict is routed to (the notifiers a deliverer needs)."""
        return {c for channels in self.routes.values() for c in channels}
