"""The real slack-sdk and python-pagerduty clients against the local capture servers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from monitor.alert import pagerduty
from monitor.alert.base import Action, Alert, DetectionAlert, Permanent, Transient
from monitor.alert.deliver import Backoff, deliver_due
from monitor.alert.pagerduty import PagerDutyNotifier
from monitor.alert.slack import SlackNotifier, SlackWebhookNotifier
from monitor.records import EventStatus, OutboxStatus
from monitor.sandbox.pagerduty import trust
from tests.alert.conftest import record

FAST = Backoff(base_s=1, cap_s=60, jitter=0)


def _slack(server, token="xoxb-test", channel="#alerts"):
    return SlackNotifier(WebClient(token=token, base_url=server.api_url, retry_handlers=[],
                                   timeout=5), channel)


def _pd(server, certificate, key="R" * 32):
    return PagerDutyNotifier(pagerduty.client(key, base_url=server.url, timeout_s=5,
                                              verify=trust(certificate[0])),
                             {"exact": "critical", "derivative": "warning"})


def test_slack_500_then_429_then_200_is_delivered_once(registry, model, clock, slack_server):
    event = record(registry, model, "hf://thief/copy@abc123")
    slack_server.fail_next(1, 500)
    slack_server.fail_next(1, 429, retry_after=7)
    notifiers = {"slack": _slack(slack_server)}
    assert deliver_due(registry, notifiers, clock, backoff=FAST).retrying == 1  # 500
    clock.advance(1)
    deliver_due(registry, notifiers, clock, backoff=FAST)  # 429, Retry-After 7
    (row,) = registry.list_outbox()
    assert "429" in row.last_error and row.status is OutboxStatus.PENDING
    clock.advance(6)
    assert deliver_due(registry, notifiers, clock, backoff=FAST).delivered == 0  # waits for it
    clock.advance(1)
    assert deliver_due(registry, notifiers, clock, backoff=FAST).delivered == 1
    clock.advance(3600)
    assert deliver_due(registry, notifiers, clock, backoff=FAST).delivered == 0
    assert [c.status for c in slack_server.received] == [500, 429, 200]
    (message,) = slack_server.messages()
    assert message["channel"] == "#alerts" and "our-model" in message["text"]
    blocks = str(message["blocks"])
    assert "<https://huggingface.co/thief/copy/tree/abc123|hf://thief/copy@abc123>" in blocks
    assert f"monitor events show {event.id}" in blocks and "3.00e-12" in blocks
    assert registry.notifications()[0]["detail"]["ts"].startswith("1700000000.")


def test_slack_errors_are_translated_once(model, slack_server):
    alert = DetectionAlert(1, "slack", "k", Action.TRIGGER, 0, 1, "m", "/x", "exact", 1.0, "high",
                           None, "new", "2025-01-01T00:00:00")
    with pytest.raises(Permanent, match="invalid_auth"):
        _slack(slack_server, token="wrong").send(alert)
    with pytest.raises(Permanent, match="channel_not_found"):
        _slack(slack_server, channel="#nope").send(alert)
    slack_server.fail_next(1, 503)
    with pytest.raises(Transient, match="503"):
        _slack(slack_server).send(alert)
    with pytest.raises(Transient, match="cannot reach"):
        SlackNotifier(WebClient(token="t", base_url="http://127.0.0.1:9/api/", retry_handlers=[],
                                timeout=2), "#alerts").send(alert)
    hook = SlackWebhookNotifier(WebhookClient(slack_server.webhook_url, retry_handlers=[]))
    slack_server.fail_next(1, 429, retry_after=3)
    with pytest.raises(Transient) as e:
        hook.send(alert)
    assert e.value.retry_after == 3
    hook.send(alert)
    assert slack_server.messages()[-1]["text"].startswith("exact copy of m")


def test_pagerduty_trigger_acknowledge_resolve_with_the_same_dedup_key(registry, model, clock, pd_server,
                                                                 certificate):
    event = record(registry, model, "hf://thief/copy", channels=["pagerduty"])
    notifiers = {"pagerduty": _pd(pd_server, certificate)}
    assert deliver_due(registry, notifiers, clock).delivered == 1
    registry.set_event_status(event.id, EventStatus.INVESTIGATING, actor="ops")
    assert deliver_due(registry, notifiers, clock).delivered == 1
    (incident,) = pd_server.incidents.values()
    assert incident.status == "acknowledged"  # PagerDuty stops escalating
    registry.set_event_status(event.id, EventStatus.RESOLVED, actor="ops", note="taken down")
    assert deliver_due(registry, notifiers, clock).delivered == 1
    trigger, ack, resolve = pd_server.events()
    assert [e["event_action"] for e in (trigger, ack, resolve)] == ["trigger", "acknowledge",
                                                                    "resolve"]
    assert trigger["dedup_key"] == ack["dedup_key"] == resolve["dedup_key"] \
        == registry.list_outbox()[0].dedup_key
    assert trigger["payload"]["severity"] == "critical" and trigger["routing_key"] == "R" * 32
    assert trigger["links"][0]["href"] == "https://huggingface.co/thief/copy"
    (incident,) = pd_server.incidents.values()
    assert incident.status == "resolved" and incident.events == ["trigger", "acknowledge", "resolve"]


def test_pagerduty_resend_after_a_crash_updates_the_same_incident(model, registry, clock, pd_server,
                                                                  certificate):
    record(registry, model, "hf://thief/copy", channels=["pagerduty"])
    notifier = _pd(pd_server, certificate)
    alert = Alert.from_row(registry.list_outbox()[0])
    notifier.send(alert)
    notifier.send(alert)  # what a kill between send and mark would cause
    assert len(pd_server.incidents) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_pagerduty_client_makes_one_attempt_and_the_outbox_retries(model, registry, clock,
                                                                   pd_server, certificate, status):
    record(registry, model, "hf://thief/copy", channels=["pagerduty"])
    pd_server.fail_next(1, status, retry_after=5 if status == 429 else None)
    notifiers = {"pagerduty": _pd(pd_server, certificate)}
    deliver_due(registry, notifiers, clock, backoff=FAST)
    assert len(pd_server.received) == 1  # the client did not retry (it would, forever, on 429)
    (row,) = registry.list_outbox()
    assert row.status is OutboxStatus.PENDING and str(status) in row.last_error
    clock.advance(5)
    assert deliver_due(registry, notifiers, clock, backoff=FAST).delivered == 1


def test_pagerduty_rejections_and_an_untrusted_certificate(model, registry, clock, pd_server,
                                                            certificate):
    record(registry, model, "hf://thief/copy", channels=["pagerduty"])
    bad_key = {"pagerduty": _pd(pd_server, certificate, key="short")}
    assert deliver_due(registry, bad_key, clock).failed == 1
    assert "routing_key" in registry.list_outbox()[0].last_error
    untrusted = PagerDutyNotifier(pagerduty.client("R" * 32, base_url=pd_server.url, timeout_s=5),
                                  {})
    with pytest.raises(Transient, match="cannot reach"):
        untrusted.send(Alert.from_row(registry.list_outbox()[0]))
    assert len(pd_server.received) == 1  # the handshake failed before any request was read


def test_a_repeat_and_a_condition_over_the_real_clients(registry, model, clock, pd_server,
                                                        certificate, slack_server):
    """A reminder is another trigger on the same PagerDuty incident and a Slack message saying
    so; a condition pages with its own severity and fingerprint, and resolves itself."""
    from monitor.alert.deliver import queue_repeats

    record(registry, model, "hf://thief/copy", channels=["pagerduty", "slack"])
    notifiers = {"pagerduty": _pd(pd_server, certificate), "slack": _slack(slack_server)}
    notifiers["pagerduty"].severities = {"exact": "critical", "source_unreachable": "error"}
    deliver_due(registry, notifiers, clock)
    clock.advance(86400)
    assert queue_repeats(registry, {"exact": timedelta(days=1)}, clock()) == 2
    assert deliver_due(registry, notifiers, clock).delivered == 2
    (incident,) = pd_server.incidents.values()
    assert incident.events == ["trigger", "trigger"] and incident.status == "triggered"
    reminder = slack_server.messages()[-1]
    assert "reminder 1" in reminder["text"] and "Still unacknowledged" in str(reminder["blocks"])
    registry.set_event_status(registry.list_events()[0].id, EventStatus.CONFIRMED, actor="dana")
    assert deliver_due(registry, notifiers, clock).delivered == 2
    assert "*Acknowledged* (confirmed, by dana)" in str(slack_server.messages()[-1]["blocks"])
    assert incident.status == "acknowledged"

    for failing in (True, True, False):
        registry.observe_condition("source_unreachable", "hf_hub", failing=failing,
                                   detail="cannot reach the Hub: HTTP 503", fire_after=2,
                                   channels=["pagerduty"], actor="t")
        deliver_due(registry, notifiers, clock)
    trigger, resolve = pd_server.events()[3:]
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["payload"]["severity"] == "error"
    assert trigger["payload"]["summary"].startswith("source unreachable: hf_hub")
    assert trigger["payload"]["custom_details"]["kind"] == "source_unreachable"
    assert len(pd_server.incidents) == 2 and resolve["dedup_key"] == trigger["dedup_key"]
