"""deliver_due against fake notifiers: delivered only once accepted, backoff and Retry-After,
permanent failures, resolve notifications, and per-verdict routing through the pipeline."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from monitor.alert.base import Action, Alert, Notifier, Permanent, Transient
from monitor.alert.deliver import Backoff, deliver_due
from monitor.alert.policy import Routes
from monitor.pipeline import record_matches
from monitor.records import EventStatus, Match, OutboxStatus, Verdict
from tests.alert.conftest import record


class Scripted(Notifier):
    """Answers with the scripted outcomes in turn (None: accept), recording each alert."""

    def __init__(self, name: str, outcomes=()) -> None:
        self.name, self.outcomes, self.sent = name, list(outcomes), []

    def send(self, alert: Alert):
        self.sent.append(alert)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return {"id": len(self.sent)}


NO_JITTER = Backoff(base_s=30, cap_s=600, jitter=0)


def _rows(registry):
    return {r.id: r for r in registry.list_outbox()}


def test_each_due_row_is_sent_once_and_logged(registry, model, clock):
    e1 = record(registry, model, "hf://a/one", channels=["slack", "log"])
    record(registry, model, "hf://a/two", channels=["slack"])
    slack, log = Scripted("slack"), Scripted("log")
    report = deliver_due(registry, {"slack": slack, "log": log}, clock)
    assert (report.delivered, report.retrying, report.failed) == (3, 0, 0)
    assert [a.location for a in slack.sent] == ["hf://a/one", "hf://a/two"]
    assert slack.sent[0].fingerprint == log.sent[0].fingerprint and slack.sent[0].event_id == e1.id
    assert all(r.status is OutboxStatus.DELIVERED for r in registry.list_outbox())
    assert [n["detail"] for n in registry.notifications(channel="slack")] == [{"id": 1}, {"id": 2}]
    assert deliver_due(registry, {"slack": slack, "log": log}, clock).delivered == 0
    assert len(slack.sent) == 2


def test_a_transient_failure_backs_off_exponentially_then_delivers(registry, model, clock):
    record(registry, model, "hf://a/one")
    slack = Scripted("slack", [Transient("slack", "HTTP 500"), Transient("slack", "HTTP 503")])
    assert deliver_due(registry, {"slack": slack}, clock, backoff=NO_JITTER).retrying == 1
    (row,) = registry.list_outbox()
    assert row.status is OutboxStatus.PENDING and row.last_error == "slack: HTTP 500"
    assert row.next_attempt_at.startswith((clock.now + timedelta(seconds=30)).isoformat()[:19])
    clock.advance(29)
    assert deliver_due(registry, {"slack": slack}, clock, backoff=NO_JITTER).retrying == 0
    clock.advance(1)
    deliver_due(registry, {"slack": slack}, clock, backoff=NO_JITTER)  # second failure: 60 s
    clock.advance(60)
    assert deliver_due(registry, {"slack": slack}, clock, backoff=NO_JITTER).delivered == 1
    assert len(slack.sent) == 3 and registry.list_outbox()[0].attempts == 3


def test_retry_after_is_honoured_capped_and_holds_the_channel_for_the_pass(registry, model, clock):
    for i in range(3):
        record(registry, model, f"hf://a/{i}")
    slack = Scripted("slack", [Transient("slack", "429", retry_after=120)])
    report = deliver_due(registry, {"slack": slack}, clock, backoff=NO_JITTER)
    assert (report.retrying, report.deferred, len(slack.sent)) == (1, 2, 1)
    first = registry.list_outbox()[-1]
    assert first.next_attempt_at.startswith((clock.now + timedelta(seconds=120)).isoformat()[:19])
    capped = Backoff(base_s=1, cap_s=5, jitter=0)
    assert capped.delay(0, 86400, random.Random()) == 5 and capped.delay(10, None, random.Random()) == 5


def test_a_permanent_failure_is_marked_failed_with_the_reason_and_can_be_retried(registry, model, clock):
    record(registry, model, "hf://a/one")
    slack = Scripted("slack", [Permanent("slack", "chat.postMessage: invalid_auth")])
    assert deliver_due(registry, {"slack": slack}, clock).failed == 1
    (row,) = registry.list_outbox(status="failed")
    assert row.last_error == "slack: chat.postMessage: invalid_auth"
    assert deliver_due(registry, {"slack": slack}, clock).delivered == 0
    assert registry.retry_outbox(None, actor="ops") == [row.id]
    assert deliver_due(registry, {"slack": slack}, clock).delivered == 1
    assert registry.audit_log(limit=1)[0].action == "outbox.retry"


def test_rows_without_a_notifier_stay_pending(registry, model, clock):
    record(registry, model, "hf://a/one", channels=["pagerduty"])
    report = deliver_due(registry, {}, clock)
    assert report.no_notifier == 1 and registry.list_outbox()[0].status is OutboxStatus.PENDING


def test_closing_an_event_queues_one_resolve_per_channel_with_the_same_fingerprint(registry, model, clock):
    event = record(registry, model, "hf://a/one", channels=["pagerduty", "slack"])
    pd, slack = Scripted("pagerduty"), Scripted("slack")
    deliver_due(registry, {"pagerduty": pd, "slack": slack}, clock)
    registry.set_event_status(event.id, EventStatus.FALSE_POSITIVE, actor="ops")
    registry.set_event_status(event.id, EventStatus.RESOLVED, actor="ops")  # closed already: no more
    assert deliver_due(registry, {"pagerduty": pd, "slack": slack}, clock).delivered == 2
    assert [a.action for a in pd.sent] == [Action.TRIGGER, Action.RESOLVE]
    assert pd.sent[0].fingerprint == pd.sent[1].fingerprint and pd.sent[1].status == "false_positive"
    assert [(n["channel"], n["action"]) for n in registry.notifications()] == [
        ("pagerduty", "trigger"), ("slack", "trigger"), ("pagerduty", "resolve"), ("slack", "resolve")]
    assert registry.audit_log(limit=1)[0].detail["to"] == "resolved"


def test_a_trigger_in_flight_when_its_event_closes_leaves_the_resolve_pending(registry, model, clock):
    event = record(registry, model, "hf://a/one", channels=["pagerduty"])

    class ClosesWhileSending(Scripted):
        def send(self, alert):
            if alert.action is Action.TRIGGER:
                registry.set_event_status(event.id, EventStatus.RESOLVED, actor="ops")
            return super().send(alert)

    pd = ClosesWhileSending("pagerduty")
    deliver_due(registry, {"pagerduty": pd}, clock)
    resolve, trigger = registry.list_outbox()
    assert resolve.status is OutboxStatus.PENDING and resolve.action is Action.RESOLVE
    assert trigger.status is OutboxStatus.SUPPRESSED  # closed while in flight, but it went out:
    assert [n["action"] for n in registry.notifications()] == ["trigger"]  # the log says so
    deliver_due(registry, {"pagerduty": pd}, clock)
    assert [a.action for a in pd.sent] == [Action.TRIGGER, Action.RESOLVE]


def test_a_row_already_in_the_notification_log_is_not_sent_again(registry, model, clock, db_path):
    record(registry, model, "hf://a/one")
    (row,) = registry.list_outbox()
    registry.record_notification(row.id, {"ts": "1"})
    registry._db.execute("UPDATE outbox SET status = 'pending' WHERE id = ?", [row.id])  # as if lost
    slack = Scripted("slack")
    report = deliver_due(registry, {"slack": slack}, clock)
    assert (report.already_sent, slack.sent) == (1, [])


def test_routes_send_each_verdict_to_its_channels(registry, model):
    routes = Routes({"exact": ["pagerduty", "slack"], "derivative": ["slack"]})

    def match(verdict):
        return Match(model.id, model.name, verdict, 0.9, "high", 1e-9, {})

    record_matches(registry, "hf://x/exact", [match(Verdict.EXACT)], actor="t",
                   record_events=True, channels=routes)
    record_matches(registry, "hf://x/deriv", [match(Verdict.DERIVATIVE)], actor="t",
                   record_events=True, channels=routes)
    record_matches(registry, "hf://x/repack", [match(Verdict.REPACKAGED)], actor="t",
                   record_events=True, channels=routes)
    got = sorted((r.payload["location"], r.channel) for r in registry.list_outbox())
    assert got == [("hf://x/deriv", "slack"), ("hf://x/exact", "pagerduty"), ("hf://x/exact", "slack")]
    # a repeat sighting of an open event does not alert again
    record_matches(registry, "hf://x/exact", [match(Verdict.EXACT)], actor="t",
                   record_events=True, channels=routes)
    assert len(registry.list_outbox()) == 3


@pytest.mark.parametrize("location,link", [
    ("hf://owner/repo", "https://huggingface.co/owner/repo"),
    ("hf://owner/repo@abc123", "https://huggingface.co/owner/repo/tree/abc123"),
    ("https://files.example.com/m.safetensors", "https://files.example.com/m.safetensors"),
    ("/srv/downloads/model", None),
])
def test_alert_links(registry, model, location, link):
    record(registry, model, location)
    assert Alert.from_row(registry.list_outbox()[0]).link == link
