"""Bring what the pods of a sharded sweep found back into the primary registry.

Each pod of an Indexed Job (`run-once --shard auto/N`) works on a copy of the primary registry
and leaves its copy behind (config/kubernetes/README.md). `import_shard` folds one such copy in:
its candidate rows (so the next snapshot skips what any pod already triaged), its per-shard
cursors (keys `scope#I/N`, distinct per shard), and its detection events — through
`record_event`, so an event the primary already has only counts a sighting. No outbox rows are
written: the pods delivered their own alerts, and PagerDuty's dedup_key (model, location) keeps
a copy found by two pods to one page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from monitor.records import NewEvent
from monitor.registry import Registry


@dataclass(frozen=True)
class Imported:
    candidates: int
    cursors: int
    events_new: int
    events_seen_again: int


def import_shard(primary: Registry, shard_path: Path, *, actor: str) -> Imported:
    """Fold the shard registry at `shard_path` into `primary`; idempotent for candidates/events."""
    with Registry.open(shard_path) as shard:
        rows = shard.candidates()
        cursors = [(s, k, c) for s, k, c in shard.cursors() if "#" in k]
        events = shard.list_events()
    for r in rows:
        if primary.candidate_status(r["source"], r["location"], r["revision"]) in (None, "failed"):
            primary.record_candidate(r["source"], r["location"], r["revision"], status=r["status"],
                                     bytes_read=r["bytes_read"], reason=r["reason"], verdict=r["verdict"])
    for source, key, cursor in cursors:
        primary.set_cursor(source, key, cursor)
    new = 0
    for e in reversed(events):  # oldest first, as they were found
        _, created = primary.record_event(
            NewEvent(e.model_id, e.model_name, e.location, e.verdict, e.score, e.confidence,
                     e.p_value, e.evidence), actor=f"{actor} (import {shard_path.name})")
        new += created
    return Imported(len(rows), len(cursors), new, len(events) - new)
