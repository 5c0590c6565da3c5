"""Detections: dedup by model and location, the triage workflow, and what each writes."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from monitor.errors import InputError, NotFoundError
from monitor.records import EventStatus, OutboxStatus, Verdict


@pytest.fixture
def model(make_model):
    return make_model("llama")


def test_new_event_writes_event_outbox_rows_and_audit_together(registry, model, new_event,
                                                                counts):
    event, created = registry.record_event(new_event(model), actor="crawler",
                                           channels=["slack", "pagerduty", "slack"])
    assert created
    assert (event.status, event.verdict, event.model_id) == (EventStatus.NEW, Verdict.REPACKAGED,
                                                             model.id)
    assert event.created_at == "2024-05-01T12:00:00.000000+00:00"
    assert registry.get_event(event.id) == event

    rows = registry.pending_outbox()
    assert [r.channel for r in rows] == ["slack", "pagerduty"]  # a channel named twice: one row
    key = hashlib.sha256(b"llama\nhf://thief/copy@abc").hexdigest()[:32]
    assert {r.dedup_key for r in rows} == {key}
    assert rows[0].payload["id"] == event.id and rows[0].payload["verdict"] == "repackaged"
    assert rows[0].payload["evidence"] == {"matched_tensors": 3, "score": 0.9}
    assert rows[0].status is OutboxStatus.PENDING and rows[0].attempts == 0

    entry = registry.audit_log(limit=1)[0]
    assert (entry.action, entry.subject, entry.actor) == ("event.create", f"event:{event.id}",
                                                          "crawler")
    assert counts()["events"] == 1


def test_second_sighting_adds_no_alert_and_counts(registry, model, new_event, clock, counts):
    first, _ = registry.record_event(new_event(model), actor="crawler", channels=["slack"])
    before = counts()
    later = clock.advance(hours=6)

    again, created = registry.record_event(new_event(model, score=0.5), actor="crawler",
                                           channels=["slack"])

    assert not created and again == first  # a weaker sighting changes nothing shown
    assert counts()["outbox"] == before["outbox"] == 1
    assert counts()["events"] == 1
    sightings = registry.event_sightings(first.id)
    assert sightings.count == 2
    assert sightings.first_seen_at == first.created_at
    assert sightings.last_seen_at == later.isoformat(timespec="microseconds")


def test_a_stronger_sighting_updates_verdict_score_and_evidence(registry, model, new_event):
    first, _ = registry.record_event(new_event(model, score=0.6), actor="c")
    stronger = new_event(model, score=0.99, verdict=Verdict.EXACT)
    again, created = registry.record_event(stronger, actor="c")
    assert not created and again.id == first.id
    assert (again.verdict, again.score, again.evidence["score"]) == (Verdict.EXACT, 0.99, 0.99)


def test_other_location_or_model_is_a_new_event(registry, model, make_model, new_event):
    other = make_model("other")
    a, _ = registry.record_event(new_event(model), actor="c")
    b, created_b = registry.record_event(new_event(model, location="hf://x/y"), actor="c")
    c, created_c = registry.record_event(new_event(other), actor="c")
    assert created_b and created_c and len({a.id, b.id, c.id}) == 3


def test_after_resolution_a_sighting_is_a_new_event_with_new_alerts(registry, model, new_event,
                                                                    counts):
    first, _ = registry.record_event(new_event(model), actor="c", channels=["slack"])
    registry.set_event_status(first.id, EventStatus.RESOLVED, actor="bob", note="taken down")

    second, created = registry.record_event(new_event(model), actor="c", channels=["slack"])

    assert created and second.id != first.id and second.status is EventStatus.NEW
    assert counts()["outbox"] == 3  # trigger, its resolve, the new trigger
    assert registry.event_sightings(first.id).count == 1


def test_a_false_positive_suppresses_further_alerts(registry, model, new_event, counts):
    first, _ = registry.record_event(new_event(model), actor="c", channels=["slack"])
    registry.set_event_status(first.id, EventStatus.FALSE_POSITIVE, actor="bob")
    _, created = registry.record_event(new_event(model), actor="c", channels=["slack"])
    assert not created and counts()["outbox"] == 2  # the trigger and its resolve, nothing new
    assert [(r.action.value, r.status.value) for r in registry.list_outbox()] == [
        ("resolve", "pending"), ("trigger", "suppressed")]  # the trigger was never sent


def test_status_workflow_is_audited_with_from_to_and_note(registry, model, new_event, clock):
    event, _ = registry.record_event(new_event(model), actor="crawler")
    clock.advance(minutes=5)
    investigating = registry.set_event_status(event.id, EventStatus.INVESTIGATING, actor="bob")
    clock.advance(minutes=5)
    confirmed = registry.set_event_status(event.id, "confirmed", actor="carol",
                                          note="weights identical")

    assert investigating.status is EventStatus.INVESTIGATING and investigating.status_by == "bob"
    assert confirmed.status is EventStatus.CONFIRMED
    assert (confirmed.status_by, confirmed.status_at) == ("carol",
                                                          "2024-05-01T12:10:00.000000+00:00")
    changes = [e for e in registry.audit_log() if e.action == "event.status"]
    assert [(e.actor, e.subject, e.detail) for e in changes] == [
        ("carol", f"event:{event.id}", {"from": "investigating", "to": "confirmed",
                                        "note": "weights identical"}),
        ("bob", f"event:{event.id}", {"from": "new", "to": "investigating", "note": None,
                                      "acknowledge_channels": []}),  # it was routed nowhere
    ]


def test_reopening_is_refused_while_another_event_is_open_for_the_same_place(registry, model,
                                                                            new_event):
    old, _ = registry.record_event(new_event(model), actor="c")
    registry.set_event_status(old.id, EventStatus.RESOLVED, actor="bob")
    registry.record_event(new_event(model), actor="c")
    with pytest.raises(InputError, match=f"event {old.id} cannot be reopened"):
        registry.set_event_status(old.id, EventStatus.INVESTIGATING, actor="bob")
    assert registry.get_event(old.id).status is EventStatus.RESOLVED


def test_bad_status_and_unknown_event_are_user_errors(registry, model, new_event):
    event, _ = registry.record_event(new_event(model), actor="c")
    with pytest.raises(InputError, match="event status 'done': must be one of new, "):
        registry.set_event_status(event.id, "done", actor="bob")
    with pytest.raises(NotFoundError, match="^no event 999$"):
        registry.get_event(999)
    with pytest.raises(NotFoundError):
        registry.set_event_status(999, EventStatus.CONFIRMED, actor="bob")


def test_an_event_for_an_unregistered_model_writes_nothing(registry, model, new_event, counts):
    before = counts()
    ghost = dataclasses.replace(new_event(model), model_id=model.id + 100, model_name="ghost")
    with pytest.raises(NotFoundError, match=f"no registered model '{model.id + 100}'"):
        registry.record_event(ghost, actor="c", channels=["slack"])
    assert counts() == before


def test_list_events_filters_and_orders_newest_first(registry, model, make_model, new_event):
    other = make_model("other")
    e1, _ = registry.record_event(new_event(model, location="l1"), actor="c")
    e2, _ = registry.record_event(new_event(other, location="l2"), actor="c")
    e3, _ = registry.record_event(new_event(model, location="l3"), actor="c")
    registry.set_event_status(e3.id, EventStatus.CONFIRMED, actor="bob")

    assert [e.id for e in registry.list_events()] == [e3.id, e2.id, e1.id]
    assert [e.id for e in registry.list_events(limit=2)] == [e3.id, e2.id]
    assert [e.id for e in registry.list_events(model="llama")] == [e3.id, e1.id]
    assert [e.id for e in registry.list_events(model=str(other.id))] == [e2.id]
    assert [e.id for e in registry.list_events(status=EventStatus.NEW)] == [e2.id, e1.id]
    assert registry.list_events(status=EventStatus.CONFIRMED, model="other") == []


def test_numpy_values_in_evidence_are_stored_as_plain_json(registry, model, new_event):
    event = dataclasses.replace(new_event(model), score=np.float32(0.75), p_value=np.float64(1e-9),
                                evidence={"cosine": np.float32(0.5), "n": np.int64(7),
                                          "per_layer": np.array([0.25, 1.0])})
    stored, _ = registry.record_event(event, actor="c", channels=["log"])
    assert stored.evidence == {"cosine": 0.5, "n": 7, "per_layer": [0.25, 1.0]}
    assert (stored.score, stored.p_value) == (0.75, 1e-9)
    assert registry.pending_outbox()[0].payload["evidence"]["n"] == 7
