"""The scheduler: catch-up after downtime (once, never per missed slot), locks, stop, sharding."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from monitor import config
from monitor.errors import ConfigError
from monitor.locks import JobBusy, job_lock
from monitor.metrics import Metrics
from monitor.registry import Registry
from monitor.schedule import JOBS_SOURCE, Daemon, Job, crontab, last_runs, trigger
from monitor.sweep import Shard

NOW = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)


@pytest.fixture()
def settings(tmp_path):
    return config.load(env={"MONITOR_DB": str(tmp_path / "r.db"), "MONITOR_DAEMON_JITTER_S": "0"})


def _daemon(settings, jobs, now=NOW):
    return Daemon(settings, jobs, Metrics(settings.db_path), clock=lambda: now)


def _remember(settings, job_id, when):
    with Registry.open(settings.db_path) as r:
        r.set_cursor(JOBS_SOURCE, job_id, json.dumps({"last_run": when.isoformat(), "outcome": "ok"}))


HOURLY = "0 * * * *"


@pytest.mark.parametrize("last_run,catch_up", [
    (datetime(2026, 11, 26, 11, 0, 5, tzinfo=UTC), True),  # the 12:00 run was missed 30 s ago
    (datetime(2026, 11, 26, 9, 0, 5, tzinfo=UTC), False),  # missed 2 h ago: past the grace, skip
    (datetime(2026, 11, 26, 12, 0, 10, tzinfo=UTC), False),  # 12:00 ran; next is 13:00
    (None, False),  # never ran: wait for the schedule
])
def test_a_run_missed_while_down_is_made_up_once_within_the_grace(settings, last_run, catch_up):
    job = Job("crawl:x", crontab(HOURLY, 0), lambda stop: None)
    if last_run:
        _remember(settings, job.id, last_run)
    with Registry.open(settings.db_path) as r:
        assert _daemon(settings, [job])._missed_while_down(r, job) is catch_up


def test_restart_after_downtime_runs_the_missed_job_once_not_per_slot(settings):
    ran = []
    job = Job("crawl:x", crontab(HOURLY, 0), lambda stop: ran.append(1))
    _remember(settings, job.id, datetime.now(UTC) - timedelta(hours=1, minutes=59))
    settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(
        update={"misfire_grace_s": 7200})})
    d = Daemon(settings, [job], Metrics(settings.db_path))
    d.start()
    try:
        _wait(lambda: ran, 5)
        threading.Event().wait(0.5)
    finally:
        assert d.stop(5)
    assert ran == [1]  # two hourly slots were missed; one run makes up for both
    with Registry.open(settings.db_path) as r:
        assert last_runs(r, [job])[job.id]["outcome"] == "ok"


def test_jobs_run_on_their_trigger_and_stop_waits_for_the_unit_of_work(settings):
    runs, inside = [], threading.Event()

    def long_job(stop: threading.Event) -> None:
        inside.set()
        while not stop.wait(0.05):  # a sweep checks between candidates
            pass
        runs.append("finished")

    job = Job("crawl:slow", IntervalTrigger(seconds=0.2, timezone=UTC), long_job)
    d = Daemon(settings, [job], Metrics(settings.db_path))
    d.start()
    assert inside.wait(5)
    assert d.health()[0] is True
    assert d.stop(5) is True and runs == ["finished"]
    assert d.health()[0] is False


def test_a_job_whose_lock_is_held_is_skipped_and_counted(settings):
    ran = []
    job = Job("crawl:x", IntervalTrigger(seconds=60, timezone=UTC), lambda stop: ran.append(1))
    d = _daemon(settings, [job])
    with job_lock(settings.db_path, job.id):
        with pytest.raises(JobBusy, match="crawl:x is already running .*pid"):
            with job_lock(settings.db_path, job.id):
                pass
        d._execute(job)
    assert ran == []
    assert d.metrics.registry.get_sample_value("monitor_job_runs_total", {"job": "crawl:x", "outcome": "busy"}) == 1
    d._execute(job)  # released: runs
    assert ran == [1]


@pytest.mark.parametrize("text,env,expected", [("0/2", {}, Shard(0, 2)), ("auto/4", {"JOB_COMPLETION_INDEX": "3"}, Shard(3, 4))])
def test_shards_parse(text, env, expected):
    assert Shard.parse(text, env) == expected


@pytest.mark.parametrize("text,env", [("2/2", {}), ("x", {}), ("auto/2", {}), ("-1/2", {})])
def test_bad_shards_are_config_errors(text, env):
    with pytest.raises(ConfigError, match="--shard"):
        Shard.parse(text, env)


def test_shards_split_candidates_exactly(settings):
    locations = [f"hf://org/model-{i}" for i in range(1000)]
    owners = [[s.owns(loc) for s in (Shard(0, 3), Shard(1, 3), Shard(2, 3))] for loc in locations]
    assert all(sum(o) == 1 for o in owners)
    assert all(250 < sum(o[i] for o in owners) < 420 for i in range(3))


def _wait(condition, seconds: float) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    while not condition():
        assert datetime.now(UTC) < deadline, "timed out"
        threading.Event().wait(0.02)


@pytest.mark.parametrize("last_run,first", [
    (NOW - timedelta(minutes=10), NOW + timedelta(minutes=50)),  # counts from its last run
    (NOW - timedelta(hours=5), NOW),  # five intervals missed: once, now
    (None, NOW),  # never ran: now
])
def test_an_interval_job_counts_from_its_last_run(settings, last_run, first):
    job = Job("crawl:x", trigger("every 1h", 0), lambda stop: None)
    if last_run:
        _remember(settings, job.id, last_run)
    with Registry.open(settings.db_path) as r:
        assert _daemon(settings, [job])._next_interval_run(r, job) == first


@pytest.mark.parametrize("text,ok", [("every 6h", True), ("every 30m", True), ("every 1d", True),
                                     ("*/5 * * * *", True), ("every 0h", False),
                                     ("every 6 hours", False), ("every", False),
                                     ("hourly", False)])
def test_a_crawler_schedule_is_a_crontab_or_an_interval(tmp_path, text, ok):
    toml = tmp_path / "m.toml"
    toml.write_text(f'[crawlers.hf_hub]\nschedule = "{text}"\n')
    if ok:
        config.load(toml, env={})
        assert isinstance(trigger(text, 0), IntervalTrigger) is text.startswith("every")
    else:
        with pytest.raises(ConfigError, match="crawlers.hf_hub.schedule"):
            config.load(toml, env={})


def test_the_daemons_crawl_job_observes_its_source_after_each_sweep(tmp_path):
    """The daemon path (build_jobs → crawl job), not only run-once: two refused sweeps fire
    source_unreachable into the outbox with its route, and a sweep that lists resolves it."""
    from monitor.sandbox.hub import HubServer
    from monitor.schedule import build_jobs

    with HubServer() as hub:
        toml = tmp_path / "m.toml"
        toml.write_text(f'[alerts]\nroutes = {{ source_unreachable = ["log"] }}\n'
                        f'[crawlers.hf_hub]\n[crawlers.hf_hub.options]\nendpoint = "{hub.url}"\n'
                        f'[crawlers.hf_hub.scopes.all]\nrecent = true\n')
        settings = config.load(toml, env={"MONITOR_DB": str(tmp_path / "r.db")})
        (crawl,) = [j for j in build_jobs(settings, {}, Metrics(settings.db_path))
                    if j.id == "crawl:hf_hub"]
        for _ in range(2):
            hub.fail_next("/api/models", status=401, retry_after=None)
            crawl.run(threading.Event())
        with Registry.open(settings.db_path) as r:
            scope, source = r.list_conditions(state="firing")  # the scope's is held back
            assert (source.kind, source.subject, source.failures) == ("source_unreachable", "hf_hub", 2)
            assert (scope.kind, scope.subject, scope.parent) == ("scope_failing", "hf_hub/all",
                                                                 source.fingerprint)
            assert [(o.channel, o.action.value) for o in r.list_outbox()] == [("log", "trigger")]
        crawl.run(threading.Event())
        with Registry.open(settings.db_path) as r:
            assert r.list_conditions(state="firing") == []
            assert [o.action.value for o in r.list_outbox()] == ["resolve", "trigger"]
