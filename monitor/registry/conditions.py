"""Conditions: alerts about the monitor's own view of the world, kept like Alertmanager's.

A condition is observed once per run of whatever watches it (a crawler's sweep, later an
endpoint probe): failing or fine. Failing starts it `pending`; after `fire_after` failing runs
in a row it fires and its trigger rows are queued in that same transaction; the first fine run
resolves it (a resolve is queued only if it had fired). One open condition per fingerprint.

A condition may name a `parent` (by fingerprint): while the parent fires, the child's triggers
and repeats are held back (inhibition: a source that cannot be reached at all should page once,
not once per scope). They go out if the child still fires when the parent clears.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from monitor.errors import NotFoundError
from monitor.records import AlertAction, ConditionRecord, ConditionState
from monitor.registry.core import operation, stable_key
from monitor.registry.outbox import OutboxStore, Subject, close, due_repeats, queue


def condition_key(kind: str, subject: str) -> str:
    """Stable per (kind, subject): the condition's fingerprint and PagerDuty dedup_key."""
    return stable_key("condition", kind, subject)


def _condition(row: dict[str, Any]) -> ConditionRecord:
    return ConditionRecord(
        id=row["id"], kind=row["kind"], subject=row["subject"], fingerprint=row["fingerprint"],
        parent=row["parent"], state=ConditionState(row["state"]), failures=row["failures"],
        detail=row["detail"], started_at=row["started_at"], last_seen_at=row["last_seen_at"],
        fired_at=row["fired_at"], resolved_at=row["resolved_at"])


class ConditionStore(OutboxStore):
    """The condition methods of the Registry."""

    @operation
    def observe_condition(self, kind: str, subject: str, *, failing: bool, detail: str,
                          fire_after: int, channels: Sequence[str], actor: str,
                          parent: str | None = None) -> ConditionRecord | None:
        """Record one run's observation; returns the condition, or None if it was fine and none
        was open."""
        key, now = condition_key(kind, subject), self._now()
        with self._tx() as db:
            row = next(db.query("SELECT * FROM conditions WHERE fingerprint = ? AND "
                                "state != 'resolved'", [key]), None)
            if row is None and not failing:
                return None
            if row is None:
                condition_id = db["conditions"].insert({
                    "kind": kind, "subject": subject, "fingerprint": key, "parent": parent,
                    "state": ConditionState.PENDING.value, "failures": 1, "detail": detail,
                    "started_at": now, "last_seen_at": now}).last_pk
                state = ConditionState.PENDING
            else:
                condition_id, state = row["id"], ConditionState(row["state"])
            subject_ref = Subject("condition_id", condition_id)
            if failing:
                if row is not None:
                    db.execute("UPDATE conditions SET failures = failures + 1, detail = ?, "
                               "last_seen_at = ? WHERE id = ?", [detail, now, condition_id])
                failures = 1 if row is None else row["failures"] + 1
                if state is ConditionState.PENDING and failures >= fire_after:
                    db.execute("UPDATE conditions SET state = 'firing', fired_at = ? WHERE id = ?",
                               [now, condition_id])
                    channels = list(dict.fromkeys(channels))
                    queue(db, now, subject_ref, channels, dedup_key=key,
                          action=AlertAction.TRIGGER, payload=self._condition_payload(condition_id))
                    self._append_audit(db, actor=actor, action="condition.fire",
                                       subject=f"condition:{condition_id}",
                                       detail={"kind": kind, "subject": subject, "detail": detail,
                                               "failures": failures, "channels": channels})
            else:
                db.execute("UPDATE conditions SET state = 'resolved', resolved_at = ?, "
                           "last_seen_at = ? WHERE id = ?", [now, now, condition_id])
                if state is ConditionState.FIRING:
                    channels = close(db, now, subject_ref, self._condition_payload(condition_id),
                                     dedup_key=key)
                    self._append_audit(db, actor=actor, action="condition.resolve",
                                       subject=f"condition:{condition_id}",
                                       detail={"kind": kind, "subject": subject,
                                               "resolve_channels": channels})
            return self.get_condition(condition_id)

    @operation
    def get_condition(self, condition_id: int) -> ConditionRecord:
        row = next(self._db.query("SELECT * FROM conditions WHERE id = ?", [condition_id]), None)
        if row is None:
            raise NotFoundError(f"no condition {condition_id}")
        return _condition(row)

    @operation
    def list_conditions(self, *, state: ConditionState | str | None = None) -> list[ConditionRecord]:
        """Newest first."""
        sql, params = "SELECT * FROM conditions", []
        if state is not None:
            sql, params = sql + " WHERE state = ?", [ConditionState(state).value]
        return [_condition(r) for r in self._db.query(sql + " ORDER BY id DESC", params)]

    @operation
    def inhibited_by(self, condition_id: int) -> ConditionRecord | None:
        """The firing parent that holds back this condition's notifications, if any."""
        row = next(self._db.query(
            "SELECT p.* FROM conditions c JOIN conditions p ON p.fingerprint = c.parent "
            "AND p.state = 'firing' WHERE c.id = ?", [condition_id]), None)
        return None if row is None else _condition(row)

    @operation
    def queue_condition_repeats(self, every: Mapping[str, timedelta], now: datetime) -> int:
        """Owe a reminder for each firing condition whose channel heard nothing for its kind's
        interval (`every`: kind → interval; absent or 0 means never)."""
        with self._tx() as db:
            due = due_repeats(db, now, "condition_id",
                              "SELECT id, kind FROM conditions WHERE state = 'firing'", every)
            for condition_id, channel, key, seq in due:
                queue(db, self._now(), Subject("condition_id", condition_id), [channel],
                      dedup_key=key, action=AlertAction.REPEAT,
                      payload=self._condition_payload(condition_id), seq=seq)
        return len(due)

    def _condition_payload(self, condition_id: int) -> dict[str, Any]:
        return dataclasses.asdict(self.get_condition(condition_id))
