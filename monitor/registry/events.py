"""Detections and their triage workflow.

A new detection, its outbox rows (one trigger per channel) and its audit row are written in one
transaction, so an alert is never lost or sent for an event that was not stored. A suspect seen
again at the same location while its event is still open only counts a sighting: no new alert.
An event nobody has acknowledged (still ``new``) is repeated to its channels after its verdict's
repeat interval; acknowledging it (new → investigating or confirmed) tells its channels and drops
reminders not yet sent (outbox.acknowledge); closing it (resolved, false_positive) queues a
resolve (outbox.close) — each in the transaction of the status change.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from monitor.errors import InputError, NotFoundError
from monitor.records import AlertAction, EventRecord, EventStatus, NewEvent, Sightings, Verdict
from monitor.registry.core import dumps, operation, stable_key
from monitor.registry.outbox import OutboxStore, Subject, acknowledge, close, due_repeats, queue

_EVENT_COLUMNS = ("id, model_id, model_name, location, verdict, score, confidence, p_value, "
                  "evidence, status, status_by, status_at, created_at")


def dedup_key(model_name: str, location: str) -> str:
    """Same for every detection of one model at one location."""
    return stable_key(model_name, location)


def _event(row: dict[str, Any]) -> EventRecord:
    return EventRecord(
        id=row["id"], model_id=row["model_id"], model_name=row["model_name"],
        location=row["location"], verdict=Verdict(row["verdict"]), score=row["score"],
        confidence=row["confidence"], p_value=row["p_value"],
        evidence=json.loads(row["evidence"]), status=EventStatus(row["status"]),
        status_by=row["status_by"], status_at=row["status_at"], created_at=row["created_at"])


CLOSED = (EventStatus.RESOLVED, EventStatus.FALSE_POSITIVE)


def _as_status(status: EventStatus | str) -> EventStatus:
    try:
        return EventStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in EventStatus)
        raise InputError(f"event status {status!r}: must be one of {allowed}") from None


class EventStore(OutboxStore):
    """The event methods of the Registry."""

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
            queue(db, now, Subject("event_id", event_id), channels, dedup_key=key,
                  action=AlertAction.TRIGGER, payload=self._event_payload(event_id))
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
            subject = Subject("event_id", event_id)
            if status in CLOSED and before.status not in CLOSED:
                payload = self._event_payload(event_id)
                detail["resolve_channels"] = close(db, self._now(), subject, payload,
                                                   dedup_key=payload["dedup_key"])
            elif before.status is EventStatus.NEW and status is not EventStatus.NEW:
                payload = self._event_payload(event_id)
                detail["acknowledge_channels"] = acknowledge(db, self._now(), subject, payload,
                                                             dedup_key=payload["dedup_key"])
            self._append_audit(db, actor=actor, action="event.status", subject=f"event:{event_id}",
                               detail=detail)
            return self.get_event(event_id)

    @operation
    def queue_event_repeats(self, every: Mapping[str, timedelta], now: datetime) -> int:
        """Owe a reminder for each unacknowledged event whose channel heard nothing for its
        verdict's interval (`every`: verdict → interval; absent or 0 means never)."""
        with self._tx() as db:
            due = due_repeats(db, now, "event_id",
                              "SELECT id, verdict AS kind FROM events WHERE status = 'new'", every)
            for event_id, channel, key, seq in due:
                queue(db, self._now(), Subject("event_id", event_id), [channel], dedup_key=key,
                      action=AlertAction.REPEAT, payload=self._event_payload(event_id), seq=seq)
        return len(due)

    def _event_payload(self, event_id: int) -> dict[str, Any]:
        """The event as a notification carries it: findings, triage status, sightings."""
        record = self.get_event(event_id)
        key, sightings, last_seen = self._db.execute(
            "SELECT dedup_key, sightings, last_seen_at FROM events WHERE id = ?",
            [event_id]).fetchone()
        return {**dataclasses.asdict(record), "dedup_key": key, "sightings": sightings,
                "last_seen_at": last_seen}
