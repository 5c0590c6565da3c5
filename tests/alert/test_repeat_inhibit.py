"""Alertmanager's habits through the outbox: conditions that fire after `for` runs and resolve
themselves, repeat reminders for what nobody acknowledged, and inhibition of a condition's
children while it fires — with fake notifiers, a hand-moved clock and a real registry."""

from __future__ import annotations

from datetime import timedelta

from monitor.alert.base import Action, ConditionAlert, DetectionAlert, Permanent, Transient
from monitor.alert.deliver import deliver_due, queue_repeats
from monitor.alert.policy import Routes
from monitor import conditions
from monitor.conditions import SCOPE_FAILING, SOURCE_UNREACHABLE, observe_sweep
from monitor.records import ConditionState, EventStatus, NewEvent, OutboxStatus, Verdict
from monitor.registry.conditions import condition_key
from monitor.sweep import RETRY_SCOPE, ScopeRun
from tests.alert.conftest import record
from tests.alert.test_deliver import Scripted

DAY = timedelta(days=1)
EVERY = {"exact": DAY, "source_unreachable": DAY, "scope_failing": timedelta(0)}


def _observe(registry, kind="source_unreachable", subject="hf_hub", *, failing=True,
             parent=None, channels=("slack",)):
    return registry.observe_condition(kind, subject, failing=failing, detail="HTTP 503",
                                      fire_after=2, channels=list(channels), actor="t",
                                      parent=parent)


def _pass(registry, clock, *notifiers):
    queue_repeats(registry, EVERY, clock())
    return deliver_due(registry, {n.name: n for n in notifiers}, clock)


# -- conditions ----------------------------------------------------------------------------------

def test_a_condition_fires_after_fire_after_failing_runs_and_queues_its_trigger_then(registry):
    first = _observe(registry)
    assert first.state is ConditionState.PENDING and registry.list_outbox() == []
    second = _observe(registry)
    assert (second.id, second.state, second.failures) == (first.id, ConditionState.FIRING, 2)
    (row,) = registry.list_outbox()
    assert (row.condition_id, row.event_id, row.action) == (first.id, None, Action.TRIGGER)
    assert row.dedup_key == condition_key("source_unreachable", "hf_hub")
    _observe(registry)  # still failing: counted, no second trigger
    assert len(registry.list_outbox()) == 1 and registry.get_condition(first.id).failures == 3
    assert [e.action for e in registry.audit_log()][:1] == ["condition.fire"]


def test_a_fine_run_resolves_silently_if_pending_and_with_a_resolve_if_it_fired(registry, clock):
    pending = _observe(registry, subject="a")
    assert _observe(registry, subject="a", failing=False).state is ConditionState.RESOLVED
    assert registry.list_outbox() == [] and registry.get_condition(pending.id).resolved_at
    assert _observe(registry, subject="never-failed", failing=False) is None

    _observe(registry, subject="b")
    fired = _observe(registry, subject="b")
    slack = Scripted("slack")
    _pass(registry, clock, slack)
    _observe(registry, subject="b", failing=False)
    _pass(registry, clock, slack)
    assert [(type(a), a.action) for a in slack.sent] == [(ConditionAlert, Action.TRIGGER),
                                                         (ConditionAlert, Action.RESOLVE)]
    assert slack.sent[0].condition_id == fired.id and "hf_hub" not in slack.sent[0].summary
    assert "source unreachable: b (2 runs failed: HTTP 503)" in slack.sent[0].summary
    # failing again later is a new condition, with a new trigger
    _observe(registry, subject="b"), _observe(registry, subject="b")
    assert len([c for c in registry.list_conditions() if c.subject == "b"]) == 2


def test_observe_sweep_reads_listing_failures_not_candidate_failures():
    ok, down = ScopeRun("hf_hub", "search"), ScopeRun("hf_hub", "author", errors=["HTTP 503"])
    retry = ScopeRun("hf_hub", RETRY_SCOPE, seen=3, new=3, failed=3, errors=["refresh failed"])
    partly = observe_sweep("hf_hub", [retry, ok, down])
    assert [(o.kind, o.subject, o.failing) for o in partly] == [
        (SOURCE_UNREACHABLE, "hf_hub", False), (SCOPE_FAILING, "hf_hub/search", False),
        (SCOPE_FAILING, "hf_hub/author", True)]
    assert partly[2].parent == condition_key(SOURCE_UNREACHABLE, "hf_hub")
    (source, *_) = observe_sweep("hf_hub", [down, ScopeRun("hf_hub", "x", errors=["DNS"])])
    assert source.failing and "no scope could be listed: HTTP 503" in source.detail
    failing_fetches = ScopeRun("hf_hub", "search", seen=5, new=5, failed=5)
    assert not observe_sweep("hf_hub", [failing_fetches])[0].failing


# -- inhibition ----------------------------------------------------------------------------------

def test_a_firing_parent_holds_its_children_back_until_it_clears(registry, clock):
    parent = condition_key("source_unreachable", "hf_hub")
    for _ in range(2):
        _observe(registry)
        _observe(registry, "scope_failing", "hf_hub/search", parent=parent)
        _observe(registry, "scope_failing", "hf_hub/author", parent=parent)
    slack = Scripted("slack")
    report = _pass(registry, clock, slack)
    assert [a.subject for a in slack.sent] == ["hf_hub"]
    assert (report.delivered, report.inhibited) == (1, 2)

    clock.advance(60)  # the source answers again, one scope still fails, the other is fine
    _observe(registry, failing=False)
    _observe(registry, "scope_failing", "hf_hub/author", parent=parent, failing=False)
    _observe(registry, "scope_failing", "hf_hub/search", parent=parent)
    report = _pass(registry, clock, slack)
    assert [(a.subject, a.action) for a in slack.sent[1:]] == [
        ("hf_hub/search", Action.TRIGGER), ("hf_hub", Action.RESOLVE)]
    author = {r.payload["subject"]: r for r in registry.list_outbox()
              if r.condition_id is not None and r.action is Action.TRIGGER}["hf_hub/author"]
    assert author.status is OutboxStatus.SUPPRESSED  # resolved while held back: never sent
    assert report.suppressed == 1  # and its resolve had nothing to resolve


def test_detections_are_never_inhibited_by_an_unreachable_source(registry, model, clock):
    _observe(registry), _observe(registry)
    record(registry, model, "hf://thief/copy")
    slack = Scripted("slack")
    _pass(registry, clock, slack)
    assert {type(a) for a in slack.sent} == {ConditionAlert, DetectionAlert}


# -- repeats -------------------------------------------------------------------------------------

def test_an_unacknowledged_event_is_repeated_once_per_interval_until_acknowledged(
        registry, model, clock):
    event = record(registry, model, "hf://thief/copy")
    slack = Scripted("slack")
    _pass(registry, clock, slack)
    clock.advance(DAY.total_seconds() - 1)
    assert _pass(registry, clock, slack).repeats_queued == 0
    registry.record_event(NewEvent(model.id, model.name, "hf://thief/copy", Verdict.EXACT, 1.0,
                                   "high", 3e-12, {}), actor="t", channels=["slack"])  # a sighting
    clock.advance(1)
    _pass(registry, clock, slack)
    _pass(registry, clock, slack)  # the same moment again: nothing more is owed
    assert [(a.action, a.repeat) for a in slack.sent] == [(Action.TRIGGER, 0), (Action.REPEAT, 1)]
    assert slack.sent[1].sightings == 2 and "reminder 1" in slack.sent[1].summary
    assert slack.sent[1].fingerprint == slack.sent[0].fingerprint

    clock.advance(DAY.total_seconds())
    _pass(registry, clock, slack)
    assert [a.repeat for a in slack.sent] == [0, 1, 2]
    registry.set_event_status(event.id, EventStatus.INVESTIGATING, actor="ops")
    clock.advance(10 * DAY.total_seconds())
    _pass(registry, clock, slack)
    assert [a.action for a in slack.sent[3:]] == [Action.ACKNOWLEDGE]  # and no more reminders
    assert "acknowledged (investigating, by ops)" in slack.sent[3].summary


def test_a_pending_repeat_is_dropped_when_the_event_is_acknowledged_or_closed(registry, model, clock):
    """The channels hear the acknowledgement or the resolve instead of the reminder."""
    a = record(registry, model, "hf://thief/a")
    b = record(registry, model, "hf://thief/b")
    slack = Scripted("slack")
    _pass(registry, clock, slack)
    clock.advance(DAY.total_seconds())
    assert queue_repeats(registry, EVERY, clock()) == 2
    registry.set_event_status(a.id, EventStatus.CONFIRMED, actor="ops")
    registry.set_event_status(b.id, EventStatus.FALSE_POSITIVE, actor="ops")
    report = deliver_due(registry, {"slack": slack}, clock)
    assert [(a.action, a.location) for a in slack.sent[2:]] == [
        (Action.ACKNOWLEDGE, "hf://thief/a"), (Action.RESOLVE, "hf://thief/b")]
    assert report.delivered == 2
    repeats = [r for r in registry.list_outbox() if r.action is Action.REPEAT]
    assert {r.status for r in repeats} == {OutboxStatus.SUPPRESSED}


def test_a_kind_with_no_interval_never_repeats_and_a_refusing_channel_is_asked_once_per_interval(
        registry, model, clock):
    record(registry, model, "hf://thief/copy")
    record(registry, model, "hf://thief/derived", verdict=Verdict.DERIVATIVE)
    slack = Scripted("slack")
    _pass(registry, clock, slack)
    clock.advance(DAY.total_seconds())
    slack.outcomes = [Permanent("slack", "channel_not_found")]
    assert _pass(registry, clock, slack).failed == 1  # only the exact copy repeats
    _pass(registry, clock, slack)
    assert len(slack.sent) == 3  # the failed repeat is not re-queued in the same interval
    clock.advance(DAY.total_seconds())
    _pass(registry, clock, slack)
    assert [(a.action, a.repeat) for a in slack.sent[3:]] == [(Action.REPEAT, 2)]


def test_a_firing_condition_repeats_but_not_while_inhibited(registry, clock):
    parent = condition_key("source_unreachable", "hf_hub")
    every = {"scope_failing": DAY, "source_unreachable": DAY}
    for _ in range(2):
        _observe(registry, "scope_failing", "hf_hub/search", parent=parent)
    slack = Scripted("slack")
    deliver_due(registry, {"slack": slack}, clock)
    _observe(registry), _observe(registry)  # now the source is down too
    clock.advance(DAY.total_seconds())
    queue_repeats(registry, every, clock())
    report = deliver_due(registry, {"slack": slack}, clock)
    assert [(a.subject, a.action) for a in slack.sent] == [
        ("hf_hub/search", Action.TRIGGER), ("hf_hub", Action.TRIGGER)]
    assert report.inhibited == 1  # the scope's reminder waits for its source


def test_a_repeat_still_retrying_is_not_queued_twice(registry, model, clock):
    record(registry, model, "hf://thief/copy")
    slack = Scripted("slack")
    _pass(registry, clock, slack)
    clock.advance(DAY.total_seconds())
    slack.outcomes = [Transient("slack", "HTTP 503")]
    assert _pass(registry, clock, slack).retrying == 1
    clock.advance(3600)  # past its backoff: retried, and nothing new owed meanwhile
    _pass(registry, clock, slack)
    assert [(a.action, a.repeat) for a in slack.sent] == [
        (Action.TRIGGER, 0), (Action.REPEAT, 1), (Action.REPEAT, 1)]
    assert len([r for r in registry.list_outbox() if r.action is Action.REPEAT]) == 1


def test_a_scope_removed_from_the_config_resolves_its_condition(registry):
    down = ScopeRun("hf_hub", "old", errors=["HTTP 404"])
    routes = Routes({"scope_failing": ["slack"]})
    for _ in range(2):
        conditions.record(registry, observe_sweep("hf_hub", [ScopeRun("hf_hub", "new"), down]),
                          routes, fire_after=2, actor="t")
    assert [c.subject for c in registry.list_conditions(state="firing")] == ["hf_hub/old"]
    still_open = conditions.record(registry, observe_sweep("hf_hub", [ScopeRun("hf_hub", "new")]),
                                   routes, fire_after=2, actor="t")
    assert still_open == [] and registry.list_conditions(state="firing") == []
    assert [r.action for r in registry.list_outbox()] == [Action.RESOLVE, Action.TRIGGER]


def test_an_acknowledge_goes_only_where_the_trigger_got_through_and_only_once(registry, model,
                                                                            clock):
    event = record(registry, model, "hf://thief/copy", channels=["slack", "pagerduty"])
    slack, pd = Scripted("slack"), Scripted("pagerduty", [Permanent("pagerduty", "HTTP 400")])
    _pass(registry, clock, slack, pd)
    registry.set_event_status(event.id, EventStatus.INVESTIGATING, actor="ops")
    registry.set_event_status(event.id, EventStatus.CONFIRMED, actor="ops")  # still acknowledged
    report = _pass(registry, clock, slack, pd)
    assert [a.action for a in slack.sent] == [Action.TRIGGER, Action.ACKNOWLEDGE]
    assert [a.action for a in pd.sent] == [Action.TRIGGER] and report.suppressed == 1
