"""The alert outbox: what is due, delivery, retries and giving up."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta

import pytest

from monitor.errors import NotFoundError
from monitor.records import OutboxRow, OutboxStatus


@pytest.fixture
def rows(registry, make_model, new_event, clock):
    model = make_model("m")
    registry.record_event(new_event(model, location="first"), actor="c", channels=["slack", "log"])
    clock.advance(minutes=1)
    registry.record_event(new_event(model, location="second"), actor="c", channels=["slack"])
    return registry.pending_outbox()


def test_due_rows_come_oldest_first_and_filter_by_channel(registry, rows):
    assert [(r.payload["location"], r.channel) for r in rows] == [
        ("first", "slack"), ("first", "log"), ("second", "slack")]
    assert [r.id for r in registry.pending_outbox(channel="slack")] == [rows[0].id, rows[2].id]
    before_second = datetime.fromisoformat(rows[2].created_at) - timedelta(seconds=30)
    assert [r.id for r in registry.pending_outbox(now=before_second)] == [rows[0].id, rows[1].id]


def test_delivered_rows_are_no_longer_due(registry, rows, clock):
    clock.advance(minutes=1)
    registry.mark_delivered(rows[0].id)
    registry.mark_delivered(rows[0].id)  # a second report changes nothing
    assert [r.id for r in registry.pending_outbox()] == [rows[1].id, rows[2].id]
    delivered = _row(registry, rows[0].id)
    assert delivered.status is OutboxStatus.DELIVERED and delivered.attempts == 1
    assert delivered.delivered_at == "2024-05-01T12:02:00.000000+00:00"


def test_a_failure_with_a_retry_time_stays_pending_until_then(registry, rows, clock):
    retry_at = clock.now + timedelta(minutes=10)
    registry.mark_failed(rows[0].id, "slack 503", next_attempt_at=retry_at)

    assert rows[0].id not in [r.id for r in registry.pending_outbox()]
    due_then = registry.pending_outbox(now=retry_at)
    assert [r.id for r in due_then] == [r.id for r in rows]  # by creation, retries included
    failed = _row(registry, rows[0].id)
    assert (failed.status, failed.attempts, failed.last_error) == (OutboxStatus.PENDING, 1,
                                                                   "slack 503")


def test_a_failure_without_retry_is_final(registry, rows, clock):
    registry.mark_failed(rows[0].id, "channel removed", next_attempt_at=None)
    far = clock.now + timedelta(days=365)
    assert rows[0].id not in [r.id for r in registry.pending_outbox(now=far)]


def test_a_late_failure_report_cannot_undo_delivery(registry, rows):
    registry.mark_delivered(rows[0].id)
    registry.mark_failed(rows[0].id, "timeout", next_attempt_at=None)
    assert _row(registry, rows[0].id).status is OutboxStatus.DELIVERED


def test_unknown_outbox_rows_are_not_found(registry, rows):
    with pytest.raises(NotFoundError, match="no outbox row 999"):
        registry.mark_delivered(999)
    with pytest.raises(NotFoundError):
        registry.mark_failed(999, "x", next_attempt_at=None)


def _row(registry, outbox_id: int) -> OutboxRow:
    """Any outbox row, due or not, read from the file by a connection of its own."""
    conn = sqlite3.connect(registry.path)
    conn.row_factory = sqlite3.Row
    try:
        row = dict(conn.execute("SELECT * FROM outbox WHERE id = ?", [outbox_id]).fetchone())
    finally:
        conn.close()
    return OutboxRow(**{**row, "payload": json.loads(row["payload"]),
                        "status": OutboxStatus(row["status"])})
