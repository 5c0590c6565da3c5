"""Detections, their triage workflow, and the alert outbox the notifiers drain.

A new detection, its outbox rows (one per channel) and its audit row are written in one
transaction, so an alert is never lost or sent for an event that was not stored. A suspect seen
again at the same location while its event is still open only counts a sighting: no new alert.

Closing an event (resolved, false_positive) turns each of its outbox rows into a pending
"resolve" notification in the same transaction as the status change: the row is reused (UNIQUE
(event_id, channel) holds) and its payload carries ``"action": "resolve"``. What a channel
accepted is kept in the notification log (one row per outbox row and action).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from monitor.errors import InputError, NotFoundError
from monitor.records import (EventRecord, EventStatus, NewEvent, OutboxRow, OutboxStatus,
                             Sightings, Verdict)
from monitor.registry.core import RegistryCore, dumps, iso, operation, placeholders

_EVENT_COLUMNS = ("id, model_id, model_name, location, verdict, score, confidence, p_value, "
                  "evidence, status, status_by, status_at, created_at")


def dedup_key(model_name: str, location: str) -> str:
    """Same for every detection of one model at one location."""
    return hashlib.sha256(f"{model_name}\n{location}".encode()).hexdigest()[:32]


def _event(row: dict[str, Any]) -> EventRecord:
    return EventRecord(
        id=row["id"], model_id=row["model_id"], model_name=row["model_name"],
        location=row["location"], verdict=Verdict(row["verdict"]), score=row["score"],
        confidence=row["confidence"], p_value=row["p_value"],
        evidence=json.loads(row["evidence"]), status=EventStatus(row["status"]),
        status_by=row["status_by"], status_at=row["status_at"], created_at=row["created_at"])


def _outbox(row: dict[str, Any]) -> OutboxRow:
    return OutboxRow(
        id=row["id"], event_id=row["event_id"], channel=row["channel"],
        dedup_key=row["dedup_key"], payload=json.loads(row["payload"]),
        status=OutboxStatus(row["status"]), attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], last_error=row["last_error"],
        created_at=row["created_at"], delivered_at=row["delivered_at"])


CLOSED = (EventStatus.RESOLVED, EventStatus.FALSE_POSITIVE)
# The action an outbox row currently asks for: absent from a detection's payload means trigger.
_ACTION = "coalesce(json_extract(payload, '$.action'), 'trigger')"


def _as_status(status: EventStatus | str) -> EventStatus:
    try:
        return EventStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in EventStatus)
        raise InputError(f"event status {status!r}: must be one of {allowed}") from None


class EventStore(RegistryCore):
    """Events and outbox methods of the Registry."""

    @operation
    def record_event(self, event: NewEvent, *, actor: str,
                     channels: Sequence[str] = ()) -> tuple[EventRecord, bool]:
        """Store a detection; return it and whether it is new (False: a repeat sighting)."""
        key, now = dedup_key(event.model_name, event.location), self._now()
        channels = list(dict.fromkeys(channels))  # a channel named twice still gets one alert
        # What a stronger (higher-scoring) sighting of an open event overwrites.
        findings = {"verdict": Verdict(event.verdict).value, "score": float(event.score),
                    "confidence": event.confidence,
                    "p_value": None if event.p_value is None else float(event.p_value),
                    "evidence": dumps(event.evidence)}
        with self._tx() as db:
            open_row = next(db.query(
                "SELECT id, score FROM events WHERE dedup_key = ? AND status != 'resolved'",
                [key]), None)
            if open_row is not None:
                db.execute("UPDATE events SET sightings = sightings + 1, last_seen_at = ? "
                           "WHERE id = ?", [now, open_row["id"]])
                if findings["score"] > open_row["score"]:
                    db["events"].update(open_row["id"], findings)
                return self.get_event(open_row["id"]), False
            if db.execute("SELECT 1 FROM models WHERE id = ?", [event.model_id]).fetchone() is None:
                raise NotFoundError(f"no registered model '{event.model_id}'")
            event_id = db["events"].insert({
                "model_id": event.model_id, "model_name": event.model_name,
                "location": event.location, **findings, "status": EventStatus.NEW.value,
                "created_at": now, "dedup_key": key, "sightings": 1, "last_seen_at": now,
            }).last_pk
            record = self.get_event(event_id)
            payload = dumps({**dataclasses.asdict(record), "dedup_key": key})
            db["outbox"].insert_all(
                {"event_id": event_id, "channel": channel, "dedup_key": key, "payload": payload,
                 "status": OutboxStatus.PENDING.value, "attempts": 0, "next_attempt_at": now,
                 "created_at": now} for channel in channels)
            self._append_audit(db, actor=actor, action="event.create", subject=f"event:{event_id}",
                               detail={"model": event.model_name, "location": event.location,
                                       "verdict": findings["verdict"], "score": findings["score"],
                                       "channels": channels})
        return record, True

    @operation
    def get_event(self, event_id: int) -> EventRecord:
        row = next(self._db.query(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?",
                                  [event_id]), None)
        if row is None:
            raise NotFoundError(f"no event {event_id}")
        return _event(row)

    @operation
    def list_events(self, *, status: EventStatus | None = None, model: str | None = None,
                    limit: int | None = None) -> list[EventRecord]:
        """Newest first. `model` is a model name, or a model id if all digits."""
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(_as_status(status).value)
        if model is not None:
            where.append("(model_name = ? OR model_id = ?)")
            params.extend([str(model), int(model) if str(model).isdigit() else None])
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_event(row) for row in self._db.query(sql, params)]

    @operation
    def event_sightings(self, event_id: int) -> Sightings:
        row = self._db.execute("SELECT sightings, created_at, last_seen_at FROM events "
                               "WHERE id = ?", [event_id]).fetchone()
        if row is None:
            raise NotFoundError(f"no event {event_id}")
        return Sightings(event_id=event_id, count=row[0], first_seen_at=row[1],
                         last_seen_at=row[2])

    @operation
    def set_event_status(self, event_id: int, status: EventStatus, *, actor: str,
                         note: str | None = None) -> EventRecord:
        """Move an event in triage; audited with from, to and note."""
        status = _as_status(status)
        with self._tx() as db:
            before = self.get_event(event_id)
            if before.status is EventStatus.RESOLVED and status is not EventStatus.RESOLVED:
                other = db.execute(
                    "SELECT id FROM events WHERE status != 'resolved' AND dedup_key = "
                    "(SELECT dedup_key FROM events WHERE id = ?)", [event_id]).fetchone()
                if other is not None:
                    raise InputError(f"event {event_id} cannot be reopened: event {other[0]} "
                                     "is open for the same model and location")
            db.execute("UPDATE events SET status = ?, status_by = ?, status_at = ? WHERE id = ?",
                       [status.value, actor, self._now(), event_id])
            detail = {"from": before.status.value, "to": status.value, "note": note}
            if status in CLOSED and before.status not in CLOSED:
                detail["resolve_channels"] = self._queue_resolve(db, event_id, status)
            self._append_audit(db, actor=actor, action="event.status", subject=f"event:{event_id}",
                               detail=detail)
            return self.get_event(event_id)

    def _queue_resolve(self, db: Any, event_id: int, status: EventStatus) -> list[str]:
        """Every channel alerted about the event gets a resolve notification (attempts restart).

        A trigger still pending is replaced too: a resolve for an incident never opened is a
        no-op for PagerDuty, and a trigger sent after its resolve would page for nothing.
        """
        channels = [r[0] for r in db.execute(
            f"SELECT channel FROM outbox WHERE event_id = ? AND {_ACTION} = 'trigger'", [event_id])]
        db.execute("UPDATE outbox SET payload = json_set(payload, '$.action', 'resolve', "
                   "'$.status', ?), status = 'pending', attempts = 0, next_attempt_at = ?, "
                   f"last_error = NULL, delivered_at = NULL WHERE event_id = ? AND {_ACTION} = "
                   "'trigger'", [status.value, self._now(), event_id])
        return channels

    @operation
    def pending_outbox(self, *, channel: str | None = None,
                       now: datetime | None = None) -> list[OutboxRow]:
        """Rows due for delivery at `now` (default: the clock), oldest first."""
        sql = "SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?"
        params = [iso(now) if now is not None else self._now()]
        if channel is not None:
            sql += " AND channel = ?"
            params.append(channel)
        return [_outbox(row) for row in self._db.query(sql + " ORDER BY created_at, id", params)]

    @operation
    def mark_delivered(self, outbox_id: int) -> None:
        """The channel accepted the alert. A row already delivered is left as it was."""
        with self._tx() as db:
            self._require_outbox_row(outbox_id)
            db.execute("UPDATE outbox SET status = 'delivered', attempts = attempts + 1, "
                       "delivered_at = ? WHERE id = ? AND status != 'delivered'",
                       [self._now(), outbox_id])

    @operation
    def mark_failed(self, outbox_id: int, error: str, *, next_attempt_at: datetime | None,
                    action: str | None = None) -> None:
        """A delivery attempt failed: retry at `next_attempt_at`, or give up if it is None.

        A row already delivered is left as it was: a late failure report cannot undo delivery.
        With `action`, a row whose action changed meanwhile (its event closed) is left alone.
        """
        status = OutboxStatus.FAILED if next_attempt_at is None else OutboxStatus.PENDING
        same_action = "" if action is None else f" AND {_ACTION} = ?"
        with self._tx() as db:
            self._require_outbox_row(outbox_id)
            db.execute("UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, "
                       "next_attempt_at = coalesce(?, next_attempt_at) "
                       f"WHERE id = ? AND status != 'delivered'{same_action}",
                       [status.value, error,
                        None if next_attempt_at is None else iso(next_attempt_at), outbox_id,
                        *([] if action is None else [action])])

    # -- the notification log and what operators do with the outbox -----------------------------

    @operation
    def notified(self, outbox_id: int, action: str) -> bool:
        """Whether the channel already accepted this row's `action` (checked before sending)."""
        return self._db.execute("SELECT 1 FROM notifications WHERE outbox_id = ? AND action = ?",
                                [outbox_id, action]).fetchone() is not None

    @operation
    def record_notification(self, outbox_id: int, action: str,
                            detail: dict[str, Any] | None = None) -> None:
        """The channel accepted `action` for this row: log it and mark the row delivered, in one
        transaction. If the row's action changed since it was read (the event closed while its
        trigger was in flight), the row stays pending for the new action."""
        with self._tx() as db:
            row = db.execute("SELECT event_id, channel, dedup_key FROM outbox WHERE id = ?",
                             [outbox_id]).fetchone()
            if row is None:
                raise NotFoundError(f"no outbox row {outbox_id}")
            now = self._now()
            db.execute("INSERT OR IGNORE INTO notifications (outbox_id, event_id, channel, "
                       "dedup_key, action, sent_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [outbox_id, *row, action, now, dumps(detail or {})])
            db.execute("UPDATE outbox SET status = 'delivered', attempts = attempts + 1, "
                       f"delivered_at = ? WHERE id = ? AND status != 'delivered' AND {_ACTION} = ?",
                       [now, outbox_id, action])

    @operation
    def notifications(self, *, channel: str | None = None) -> list[dict[str, Any]]:
        """The notification log, oldest first."""
        sql, params = "SELECT * FROM notifications", []
        if channel is not None:
            sql, params = sql + " WHERE channel = ?", [channel]
        return [{**r, "detail": json.loads(r["detail"])}
                for r in self._db.query(sql + " ORDER BY id", params)]

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
        return [_outbox(row) for row in self._db.query(sql, params)]

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
