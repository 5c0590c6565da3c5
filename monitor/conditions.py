"""What a crawler's sweep says about its source, turned into conditions that can alert.

After every sweep that ran to the end (not one stopped by a signal), each scope is observed:
`scope_failing` when its listing raised, fine otherwise; and the crawler as a whole:
`source_unreachable` when no scope could be listed at all (DNS, TLS, a 5xx outage, a revoked
token). A scope's condition names its source's as parent, so while the source is unreachable the
per-scope alerts are held back (inhibition) and the source pages once.

Candidate fetch failures are not conditions: they are recorded per candidate, retried next sweep
(`monitor candidates --status failed`) and counted in /metrics; one broken repo must not look like
an outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.alert.policy import Routes
from monitor.records import ConditionKind, ConditionRecord
from monitor.registry import Registry
from monitor.registry.conditions import condition_key
from monitor.sweep import RETRY_SCOPE, ScopeRun

SOURCE_UNREACHABLE = ConditionKind.SOURCE_UNREACHABLE.value
SCOPE_FAILING = ConditionKind.SCOPE_FAILING.value


@dataclass(frozen=True)
class Observation:
    """One condition as one sweep saw it."""

    kind: str
    subject: str
    failing: bool
    detail: str
    parent: str | None = None  # the fingerprint of the condition that inhibits this one


def observe_sweep(crawler: str, runs: Sequence[ScopeRun]) -> list[Observation]:
    """The source first, then each scope that was listed (pure: no registry, no clock)."""
    listed = [r for r in runs if r.scope != RETRY_SCOPE]
    failed = [r for r in listed if r.errors]
    source_down = bool(listed) and len(failed) == len(listed)
    detail = (f"no scope could be listed: {failed[0].errors[0]}" if source_down else
              f"{len(listed) - len(failed)} of {len(listed)} scopes listed")
    parent = condition_key(SOURCE_UNREACHABLE, crawler)
    return [Observation(SOURCE_UNREACHABLE, crawler, source_down, detail),
            *(Observation(SCOPE_FAILING, f"{crawler}/{r.scope}", bool(r.errors),
                          r.errors[0] if r.errors else "listed", parent) for r in listed)]


def record(registry: Registry, observations: Sequence[Observation], routes: Routes, *,
           fire_after: int, actor: str) -> list[ConditionRecord]:
    """Store each observation; returns the conditions that are open (pending or firing) now.

    A scope's condition still open but not observed (the scope was removed from the config)
    is resolved, so it neither repeats nor inhibits forever."""
    parents = {o.parent for o in observations if o.parent is not None}
    seen = {(o.kind, o.subject) for o in observations}
    stale = [Observation(c.kind, c.subject, False, "no longer configured", c.parent)
             for c in registry.list_conditions() if c.resolved_at is None
             and c.parent in parents and (c.kind, c.subject) not in seen]
    open_now = []
    for o in [*observations, *stale]:
        c = registry.observe_condition(o.kind, o.subject, failing=o.failing, detail=o.detail,
                                       fire_after=fire_after, channels=routes.for_kind(o.kind),
                                       actor=actor, parent=o.parent)
        if c is not None and c.resolved_at is None:
            open_now.append(c)
    return open_now
