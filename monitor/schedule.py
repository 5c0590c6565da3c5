"""The daemon's scheduler: pipeline jobs wired to APScheduler 3, nothing more.

Every job runs with coalescing, at most one instance, a misfire grace and jitter (APScheduler's
own job options), and under the registry's per-job lock (monitor.locks) so `monitor run-once`
and the daemon never sweep the same crawler at once. Each job's last run is persisted in the
registry (crawl_state, source "_jobs"): on start, a crontab run missed while the daemon was down
by less than the misfire grace happens once, now — never once per missed slot, and not skipped;
an interval job ("every 6h", and alert delivery) next runs one interval after its last run, or
now if that has passed.
APScheduler's own persistent job stores pickle the job; we keep the registry free of pickles.

Stopping (SIGTERM/SIGINT → `Daemon.stop`) sets an event every job polls between units of work
(a sweep checks it between candidates), then waits up to `stop_timeout_s` for running jobs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from monitor import conditions, enabled
from monitor.alert.deliver import drain
from monitor.alert.policy import Routes
from monitor.config import Settings, interval_seconds
from monitor.errors import MonitorError
from monitor.locks import JobBusy, job_lock
from monitor.match import Thresholds
from monitor.metrics import Metrics
from monitor.owned import OwnedModels
from monitor.registry import Registry
from monitor.sweep import Sweep

log = logging.getLogger(__name__)

JOBS_SOURCE = "_jobs"  # crawl_state rows that remember each job's last run


@dataclass(frozen=True)
class Job:
    """One scheduled unit of work; `run` gets the stop event and must return soon after it is set."""

    id: str
    trigger: BaseTrigger
    run: Callable[[threading.Event], None]


def trigger(expr: str, jitter_s: int) -> BaseTrigger:
    """A crawler's `schedule`: a crontab, or "every <N><s|m|h|d>" (config validated it)."""
    seconds = interval_seconds(expr)
    if seconds is not None:
        return IntervalTrigger(seconds=seconds, timezone=UTC, jitter=jitter_s or None)
    return crontab(expr, jitter_s)


def crontab(expr: str, jitter_s: int) -> CronTrigger:
    trigger = CronTrigger.from_crontab(expr, timezone=UTC)
    trigger.jitter = jitter_s or None
    return trigger


def build_jobs(settings: Settings, env: Mapping[str, str], metrics: Metrics,
               actor: str = "daemon") -> list[Job]:
    """A sweep job per enabled crawler on its own schedule, the retention job, and alert delivery
    every `deliver_every_s` (under the "deliver" lock that `monitor alerts deliver` takes too)."""
    jobs = []
    for name, cs in settings.crawlers.items():
        if cs.enabled:
            jobs.append(Job(f"crawl:{name}", trigger(cs.schedule, settings.daemon.jitter_s),
                            _crawl(settings, env, name, metrics, actor)))
    jobs.append(Job("retention", crontab(settings.daemon.retention_schedule, settings.daemon.jitter_s),
                    _retention(settings)))
    jobs.append(Job("deliver", IntervalTrigger(seconds=settings.daemon.deliver_every_s, timezone=UTC),
                    _deliver(settings, env)))
    return jobs


def _deliver(settings: Settings, env: Mapping[str, str]) -> Callable[[threading.Event], None]:
    """Drain the alert outbox; rows whose channel is down stay pending for the next run."""
    def run(_stop: threading.Event) -> None:
        with _registry(settings) as registry:
            report, problems = drain(registry, settings.alerts, env, lambda: datetime.now(UTC))
        if report.delivered or report.retrying or report.failed or problems:
            log.info("alerts delivered", extra={"delivered": report.delivered,
                                                "retrying": report.retrying, "failed": report.failed,
                                                "config_errors": problems})
    return run


def _crawl(settings: Settings, env: Mapping[str, str], name: str, metrics: Metrics,
           actor: str) -> Callable[[threading.Event], None]:
    def run(stop: threading.Event) -> None:
        (configured,) = enabled.build(settings, env, [name])
        try:
            with _registry(settings) as registry:
                def count(run, candidate, outcome) -> None:
                    metrics.candidates.labels(name, outcome.status).inc()
                    metrics.bytes_read.labels(name).inc(outcome.bytes_read)
                    for m in outcome.matches:
                        metrics.matches.labels(name, m.verdict.value).inc()

                sweep = Sweep(registry, configured.crawler, OwnedModels.load(registry),
                              Thresholds(**settings.match.model_dump()), actor, concurrency=configured.settings.concurrency,
                              on_outcome=count, stop=stop, channels=Routes.from_settings(settings.alerts))
                runs = sweep.run(configured.scopes)
                log.info("sweep done", extra={"crawler": name, "runs": [r.as_dict() for r in runs]})
                if not stop.is_set():  # a stopped sweep says nothing about its source
                    conditions.record(registry, conditions.observe_sweep(name, runs), sweep.channels,
                                      fire_after=settings.alerts.fire_after_runs, actor=actor)
        finally:
            configured.crawler.close()
    return run


def _retention(settings: Settings) -> Callable[[threading.Event], None]:
    def run(_stop: threading.Event) -> None:
        with _registry(settings) as registry:
            n = registry.forget_candidates(older_than=timedelta(days=settings.daemon.candidate_retention_days))
            log.info("retention", extra={"candidates_forgotten": n})
    return run


def _registry(settings: Settings) -> Registry:
    return Registry.open(settings.db_path, busy_timeout_s=settings.registry.busy_timeout_s)


class Daemon:
    """Runs `jobs` on a background scheduler until `stop`; `health()` feeds /healthz."""

    def __init__(self, settings: Settings, jobs: list[Job], metrics: Metrics,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings, self.jobs, self.metrics, self.clock = settings, jobs, metrics, clock
        self.stopping = threading.Event()
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        grace = settings.daemon.misfire_grace_s
        self.scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": grace})
        self.scheduler.add_listener(self._missed, EVENT_JOB_MISSED)

    def start(self) -> None:
        with _registry(self.settings) as registry:
            for job in self.jobs:
                options = {}
                if isinstance(job.trigger, IntervalTrigger):
                    options["next_run_time"] = self._next_interval_run(registry, job)
                elif self._missed_while_down(registry, job):
                    options["next_run_time"] = self.clock()
                self.scheduler.add_job(self._execute, job.trigger, args=[job], id=job.id, name=job.id,
                                       replace_existing=True, **options)
        self.scheduler.start()
        log.info("daemon started", extra={"jobs": [j.id for j in self.jobs]})

    def stop(self, timeout: float | None = None) -> bool:
        """Stop scheduling, tell running jobs to finish; True if they did within `timeout`."""
        timeout = self.settings.daemon.stop_timeout_s if timeout is None else timeout
        self.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._running.values())
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        done = not any(t.is_alive() for t in threads)
        log.info("daemon stopped", extra={"clean": done})
        return done

    def health(self) -> tuple[bool, dict]:
        jobs = {j.id: {"next_run": (job.next_run_time.isoformat() if (job := self.scheduler.get_job(j.id))
                                    and job.next_run_time else None)} for j in self.jobs}
        return self.scheduler.running and not self.stopping.is_set(), {"jobs": jobs}

    # -- one run -------------------------------------------------------------------------------

    def _execute(self, job: Job) -> None:
        """A scheduled run: under the job's lock, timed, remembered, counted."""
        if self.stopping.is_set():
            return
        with self._lock:
            self._running[job.id] = threading.current_thread()
        started = time.monotonic()
        outcome = "ok"
        try:
            with job_lock(self.settings.db_path, job.id):
                job.run(self.stopping)
        except JobBusy as e:
            outcome = "busy"
            log.warning("job skipped", extra={"job": job.id, "reason": str(e)})
        except MonitorError as e:
            outcome = "error"
            log.error("job failed", extra={"job": job.id, "error": str(e)})
        except Exception:  # a bug in one job must not stop the others
            outcome = "error"
            log.exception("job crashed", extra={"job": job.id})
        finally:
            with self._lock:
                self._running.pop(job.id, None)
        elapsed = time.monotonic() - started
        self.metrics.runs.labels(job.id, outcome).inc()
        self.metrics.last_duration.labels(job.id).set(elapsed)
        if outcome == "ok":
            self.metrics.last_success.labels(job.id).set(time.time())
        if outcome != "busy":
            self._remember(job, outcome, elapsed)

    def _remember(self, job: Job, outcome: str, elapsed: float) -> None:
        try:
            with _registry(self.settings) as registry:
                registry.set_cursor(JOBS_SOURCE, job.id, json.dumps(
                    {"last_run": self.clock().isoformat(), "outcome": outcome,
                     "seconds": round(elapsed, 3)}))
        except MonitorError as e:
            log.error("cannot record job run", extra={"job": job.id, "error": str(e)})

    def _missed_while_down(self, registry: Registry, job: Job) -> bool:
        """Was a run due between the last one and now, recently enough to still make up?"""
        state = registry.get_cursor(JOBS_SOURCE, job.id)
        if state is None:
            return False
        last = datetime.fromisoformat(json.loads(state)["last_run"])
        due = job.trigger.get_next_fire_time(None, last + timedelta(microseconds=1))
        now = self.clock()
        return due is not None and due <= now and (now - due).total_seconds() <= self.settings.daemon.misfire_grace_s

    def _next_interval_run(self, registry: Registry, job: Job) -> datetime:
        """An interval job counts from its last run, not from the daemon's start: one interval
        after it, or now if that is past (once, however many intervals were missed)."""
        state = registry.get_cursor(JOBS_SOURCE, job.id)
        if state is None:
            return self.clock()
        last = datetime.fromisoformat(json.loads(state)["last_run"])
        return max(self.clock(), last + job.trigger.interval)  # type: ignore[attr-defined]

    def _missed(self, event: JobExecutionEvent) -> None:
        log.warning("job run missed", extra={"job": event.job_id,
                                             "scheduled": str(event.scheduled_run_time)})


def last_runs(registry: Registry, jobs: list[Job]) -> dict[str, dict | None]:
    """Each job's remembered last run (for reports and tests)."""
    return {j.id: (json.loads(s) if (s := registry.get_cursor(JOBS_SOURCE, j.id)) else None)
            for j in jobs}
