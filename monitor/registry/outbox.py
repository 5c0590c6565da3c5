"""The alert outbox and the notification log: what is owed to each channel, what it accepted.

One outbox row is one notification (trigger, acknowledge, repeat or resolve) about one subject —
an event or a condition — for one channel, written in the transaction of the change that caused
it. What a channel accepted goes to the notification log in the transaction that marks the row
delivered; the deliverer checks the log before sending (Alertmanager's notification log).

Closing a subject queues a resolve row for every channel that was sent a trigger, and
suppresses what it had not sent yet; acknowledging one queues an acknowledge the same way and
drops unsent reminders. Whether a resolve or acknowledge is sent is decided when it is due: only
a channel that accepted a trigger or repeat has something to close. Deciding late is what makes
a trigger in flight while its event closes safe — it is logged, so its resolve goes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlite_utils import Database

from monitor.errors import NotFoundError
from monitor.records import AlertAction, OutboxRow, OutboxStatus
from monitor.registry.core import RegistryCore, dumps, iso, operation, placeholders


@dataclass(frozen=True)
class Subject:
    """What outbox rows are about: `column` names the outbox column that holds `id`."""

    column: Literal["event_id", "condition_id"]
    id: int

    def where(self, alias: str = "") -> str:
        return f"{alias}{self.column} = {self.id:d}"


def _row(row: dict[str, Any]) -> OutboxRow:
    return OutboxRow(
        id=row["id"], event_id=row["event_id"], condition_id=row["condition_id"],
        channel=row["channel"], dedup_key=row["dedup_key"], action=AlertAction(row["action"]),
        seq=row["seq"], payload=json.loads(row["payload"]), status=OutboxStatus(row["status"]),
        attempts=row["attempts"], next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"], created_at=row["created_at"],
        delivered_at=row["delivered_at"])


def queue(db: Database, now: str, subject: Subject, channels: Iterable[str], *, dedup_key: str,
          action: AlertAction, payload: Mapping[str, Any], seq: int = 0) -> None:
    """Owe each channel one notification (inside the caller's transaction)."""
    body = dumps({**payload, "action": action.value})
    db["outbox"].insert_all(
        {subject.column: subject.id, "channel": channel, "dedup_key": dedup_key,
         "action": action.value, "seq": seq, "payload": body,
         "status": OutboxStatus.PENDING.value, "attempts": 0, "next_attempt_at": now,
         "created_at": now} for channel in channels)


def close(db: Database, now: str, subject: Subject, payload: Mapping[str, Any], *,
          dedup_key: str) -> list[str]:
    """The subject closed: suppress what was not sent yet, owe every channel that was sent a
    trigger (or may be sending one now) a resolve. Returns those channels."""
    _suppress(db, subject, ("trigger", "acknowledge", "repeat"), "closed before it was sent")
    return _follow_up(db, now, subject, payload, dedup_key, AlertAction.RESOLVE)


def acknowledge(db: Database, now: str, subject: Subject, payload: Mapping[str, Any], *,
                dedup_key: str) -> list[str]:
    """Someone took the subject: reminders not yet sent are dropped, and every channel that was
    sent a trigger is told (PagerDuty acknowledges the incident, which stops its escalation)."""
    _suppress(db, subject, ("repeat",), "acknowledged before it was sent")
    return _follow_up(db, now, subject, payload, dedup_key, AlertAction.ACKNOWLEDGE)


def _suppress(db: Database, subject: Subject, actions: Sequence[str], reason: str) -> None:
    db.execute(f"UPDATE outbox SET status = 'suppressed', last_error = ? WHERE {subject.where()} "
               f"AND action IN ({placeholders(list(actions))}) AND status IN ('pending', 'failed')",
               [reason, *actions])


def _follow_up(db: Database, now: str, subject: Subject, payload: Mapping[str, Any],
               dedup_key: str, action: AlertAction) -> list[str]:
    """One `action` row per channel that has a trigger row; numbered, since an event reopened
    and closed again resolves again."""
    rows = db.execute(f"SELECT channel, (SELECT count(*) FROM outbox r WHERE r.{subject.where()} "
                      "AND r.channel = o.channel AND r.action = ?) FROM outbox o "
                      f"WHERE o.{subject.where()} AND o.action = 'trigger' GROUP BY channel "
                      "ORDER BY channel", [action.value]).fetchall()
    for channel, so_far in rows:
        queue(db, now, subject, [channel], dedup_key=dedup_key, action=action, payload=payload,
              seq=so_far)
    return [channel for channel, _ in rows]


def due_repeats(db: Database, now: datetime, column: str, open_subjects: str,
                every: Mapping[str, timedelta]) -> list[tuple[int, str, str, int]]:
    """(subject id, channel, dedup_key, next repeat number) for each open subject whose channel
    accepted a trigger or repeat and heard nothing for its kind's interval.

    `open_subjects` selects (id, kind) of the subjects still open and unacknowledged. A channel
    with a row still pending gets nothing more; a repeat that failed counts as heard from, so a
    channel that keeps refusing is asked once per interval, not once per delivery pass.
    """
    rows = db.execute(f"""
        SELECT o.{column}, o.channel, o.dedup_key, s.kind, max(o.seq),
               max(coalesce(n.sent_at, CASE WHEN o.status = 'failed' THEN o.created_at END)),
               count(n.id), sum(o.status = 'pending')
        FROM outbox o JOIN ({open_subjects}) s ON s.id = o.{column}
        LEFT JOIN notifications n ON n.outbox_id = o.id AND n.action = o.action
        WHERE o.action IN ('trigger', 'repeat')
        GROUP BY o.{column}, o.channel""").fetchall()
    due = []
    for subject_id, channel, key, kind, seq, last, accepted, pending in rows:
        interval = every.get(kind, timedelta(0))
        if interval > timedelta(0) and accepted and not pending and \
                datetime.fromisoformat(last) + interval <= now:
            due.append((subject_id, channel, key, seq + 1))
    return due


class OutboxStore(RegistryCore):
    """The outbox and notification-log methods of the Registry."""

    @operation
    def pending_outbox(self, *, channel: str | None = None,
                       now: datetime | None = None) -> list[OutboxRow]:
        """Rows due for delivery at `now` (default: the clock), oldest first."""
        sql = "SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?"
        params = [iso(now) if now is not None else self._now()]
        if channel is not None:
            sql += " AND channel = ?"
            params.append(channel)
        return [_row(row) for row in self._db.query(sql + " ORDER BY created_at, id", params)]

    @operation
    def mark_delivered(self, outbox_id: int) -> None:
        """The channel accepted the alert. A row already delivered is left as it was."""
        with self._tx() as db:
            self._require_outbox_row(outbox_id)
            db.execute("UPDATE outbox SET status = 'delivered', attempts = attempts + 1, "
                       "delivered_at = ? WHERE id = ? AND status != 'delivered'",
                       [self._now(), outbox_id])

    @operation
    def mark_failed(self, outbox_id: int, error: str, *, next_attempt_at: datetime | None) -> None:
        """A delivery attempt failed: retry at `next_attempt_at`, or give up if it is None.

        Only a pending row changes: a late failure report cannot undo a delivery, and a row
        suppressed meanwhile (its subject closed) stays suppressed.
        """
        status = OutboxStatus.FAILED if next_attempt_at is None else OutboxStatus.PENDING
        with self._tx() as db:
            self._require_outbox_row(outbox_id)
            db.execute("UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, "
                       "next_attempt_at = coalesce(?, next_attempt_at) "
                       "WHERE id = ? AND status = 'pending'",
                       [status.value, error,
                        None if next_attempt_at is None else iso(next_attempt_at), outbox_id])

    @operation
    def mark_suppressed(self, outbox_id: int, reason: str) -> None:
        """Not sent on purpose (a resolve for a channel that never heard the trigger)."""
        with self._tx() as db:
            self._require_outbox_row(outbox_id)
            db.execute("UPDATE outbox SET status = 'suppressed', last_error = ? "
                       "WHERE id = ? AND status = 'pending'", [reason, outbox_id])

    # -- the notification log --------------------------------------------------------------------

    @operation
    def notified(self, outbox_id: int) -> bool:
        """Whether the channel already accepted this row (checked before sending)."""
        return self._db.execute("SELECT 1 FROM notifications n JOIN outbox o ON o.id = n.outbox_id "
                                "AND n.action = o.action WHERE o.id = ?",
                                [outbox_id]).fetchone() is not None

    @operation
    def opened(self, row: OutboxRow) -> bool:
        """Whether `row`'s channel accepted a trigger or repeat about its subject: only then does
        a resolve or an acknowledge have something to act on."""
        subject = _subject(row)
        return self._db.execute(
            f"SELECT 1 FROM notifications WHERE {subject.where()} AND channel = ? "
            "AND action IN ('trigger', 'repeat')", [row.channel]).fetchone() is not None

    @operation
    def record_notification(self, outbox_id: int, detail: dict[str, Any] | None = None) -> None:
        """The channel accepted this row: log it and mark the row delivered, in one transaction.
        A row suppressed while it was in flight is logged but stays suppressed; its subject's
        resolve row, already queued, then finds the log entry and is sent."""
        with self._tx() as db:
            row = db.execute("SELECT event_id, condition_id, channel, dedup_key, action "
                             "FROM outbox WHERE id = ?", [outbox_id]).fetchone()
            if row is None:
                raise NotFoundError(f"no outbox row {outbox_id}")
            now = self._now()
            db.execute("INSERT OR IGNORE INTO notifications (outbox_id, event_id, condition_id, "
                       "channel, dedup_key, action, sent_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [outbox_id, *row, now, dumps(detail or {})])
            db.execute("UPDATE outbox SET status = 'delivered', attempts = attempts + 1, "
                       "delivered_at = ? WHERE id = ? AND status IN ('pending', 'failed')",
                       [now, outbox_id])

    @operation
    def notifications(self, *, channel: str | None = None) -> list[dict[str, Any]]:
        """The notification log, oldest first."""
        sql, params = "SELECT * FROM notifications", []
        if channel is not None:
            sql, params = sql + " WHERE channel = ?", [channel]
        return [{**r, "detail": json.loads(r["detail"])}
                for r in self._db.query(sql + " ORDER BY id", params)]

    # -- what operators do with the outbox -------------------------------------------------------

    @operation
    def list_outbox(self, *, status: OutboxStatus | str | None = None,
                    limit: int | None = None) -> list[OutboxRow]:
        """Outbox rows whatever their state, newest first."""
        sql, params = "SELECT * FROM outbox", []
        if status is not None:
            sql, params = sql + " WHERE status = ?", [OutboxStatus(status).value]
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        return [_row(row) for row in self._db.query(sql, params)]

    @operation
    def retry_outbox(self, outbox_ids: Sequence[int] | None, *, actor: str) -> list[int]:
        """Put failed rows (these, or all failed ones if None) back to pending, due now."""
        with self._tx() as db:
            if outbox_ids is None:
                ids = [r[0] for r in db.execute("SELECT id FROM outbox WHERE status = 'failed'")]
            else:
                for outbox_id in outbox_ids:
                    self._require_outbox_row(outbox_id)
                ids = [r[0] for r in db.execute(
                    f"SELECT id FROM outbox WHERE status = 'failed' AND id IN "
                    f"({placeholders([str(i) for i in outbox_ids])})", list(outbox_ids))]
            if ids:
                db.execute(f"UPDATE outbox SET status = 'pending', next_attempt_at = ? WHERE id IN "
                           f"({placeholders([str(i) for i in ids])})", [self._now(), *ids])
                self._append_audit(db, actor=actor, action="outbox.retry", subject="outbox",
                                   detail={"ids": ids})
        return ids

    def _require_outbox_row(self, outbox_id: int) -> None:
        if self._db.execute("SELECT 1 FROM outbox WHERE id = ?", [outbox_id]).fetchone() is None:
            raise NotFoundError(f"no outbox row {outbox_id}")


def _subject(row: OutboxRow) -> Subject:
    if row.event_id is not None:
        return Subject("event_id", row.event_id)
    assert row.condition_id is not None  # the table's CHECK: exactly one is set
    return Subject("condition_id", row.condition_id)
