"""One sweep of one crawler over its scopes: discover, triage in parallel, record in order.

Discovery runs on the calling thread and triage on a bounded pool (network latency, not CPU,
is what a sweep waits for). Every write to the registry happens on the calling thread, in
discovery order, so a scope's cursor is stored only once every candidate before it is recorded:
a sweep killed half way resumes where it stopped and loses nothing.

A revision already recorded is not fetched again (unless its last attempt failed); candidates
that failed are retried first, through `Crawler.refresh`. Nothing a source does ends the sweep:
listing errors are kept per scope, candidate problems become recorded skips or failures.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from threadpoolctl import threadpool_limits

from crawlers.base import Candidate, Crawler, Settings
from monitor.errors import ConfigError, MonitorError
from monitor.match import Thresholds
from monitor.owned import OwnedModels
from monitor.pipeline import Channels, record_matches
from monitor.registry import Registry
from monitor.triage import Outcome, summarise, triage

log = logging.getLogger(__name__)

RETRY_SCOPE = "(retry)"  # the pseudo-scope under which failed candidates are retried


@dataclass
class ScopeRun:
    """Counts for one crawler scope in one sweep (what `monitor run-once` prints)."""

    crawler: str
    scope: str
    seen: int = 0  # candidates discovered
    new: int = 0  # revisions not recorded before (or failed last time): triaged now
    fingerprinted: int = 0  # triaged down to the planned byte ranges
    matched: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_read: int = 0  # weight-file bytes fetched (headers and ranges)
    errors: list[str] = field(default_factory=list)  # listing failures, one line each

    def add(self, outcome: Outcome) -> None:
        self.bytes_read += outcome.bytes_read
        self.fingerprinted += outcome.fingerprinted
        self.matched += outcome.status == "matched"
        self.skipped += outcome.status == "skipped"
        self.failed += outcome.status == "failed"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("crawler", "scope", "seen", "new", "fingerprinted",
                                               "matched", "skipped", "failed", "bytes_read",
                                               "errors")}


OnOutcome = Callable[[ScopeRun, Candidate, Outcome], None]


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the candidates whose location hashes to it.

    The hash is SHA-256 of the location, so every pod of a Kubernetes Indexed Job agrees on who
    owns a candidate without talking to the others, and a candidate stays in its shard forever.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str, env: Mapping[str, str]) -> Shard:
        """"I/N", or "auto/N" with I from $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job)."""
        index, _, count = text.partition("/")
        if index == "auto":
            index = env.get("JOB_COMPLETION_INDEX", "")
            if not index:
                raise ConfigError("--shard", text, "auto needs $JOB_COMPLETION_INDEX (an Indexed Job)")
        if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
            raise ConfigError("--shard", text, "must be I/N with 0 <= I < N, or auto/N")
        return cls(int(index), int(count))

    def owns(self, location: str) -> bool:
        digest = hashlib.sha256(location.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _ignore(_run: ScopeRun, _candidate: Candidate, _outcome: Outcome) -> None:
    pass


@dataclass
class Sweep:
    """Runs one crawler's scopes against a registry; built by the CLI or the scheduler."""

    registry: Registry
    crawler: Crawler
    owned: OwnedModels
    thresholds: Thresholds
    actor: str
    concurrency: int = 8
    channels: Channels = ()  # per match: a list, or a router such as alert.policy.Routes
    on_outcome: OnOutcome = _ignore
    shard: Shard | None = None  # only candidates whose location hashes into this shard
    stop: threading.Event = field(default_factory=threading.Event)  # set: finish in-flight, return

    def run(self, scopes: Mapping[str, Settings]) -> list[ScopeRun]:
        runs = []
        self._handled: set[tuple[str, str]] = set()  # (location, revision) triaged this sweep
        # Each worker's linear algebra is small (64-wide frames, 48-row matches); OpenBLAS
        # threads per call, spinning on 2 cores against 8 workers, made a sweep 2x slower.
        with threadpool_limits(limits=1, user_api="blas"), \
                ThreadPoolExecutor(self.concurrency, thread_name_prefix=self.crawler.name) as pool:
            retry = self._retry_failed(pool)
            if retry.seen:
                runs.append(retry)
            for name, scope in scopes.items():
                if self.stop.is_set():
                    break
                runs.append(self._scope(pool, name, scope))
        return runs

    # -- scopes ----------------------------------------------------------------------------------

    def _scope(self, pool: ThreadPoolExecutor, name: str, scope: Settings) -> ScopeRun:
        run = ScopeRun(self.crawler.name, name)
        pending: deque[tuple[Candidate | None, Future[Outcome] | None, str | None]] = deque()
        key = name if self.shard is None else f"{name}#{self.shard}"  # each shard its own cursor
        cursor = self.registry.get_cursor(self.crawler.name, key)
        try:
            for found in self.crawler.discover(scope, cursor):
                if self.stop.is_set():
                    break
                c = found.candidate
                if self.shard is not None and not self.shard.owns(c.location):
                    pending.append((None, None, found.cursor))
                    continue
                run.seen += 1
                status = self.registry.candidate_status(c.source, c.location, c.revision)
                if (status is None or status == "failed") and (c.location, c.revision) not in self._handled:
                    self._handled.add((c.location, c.revision))
                    run.new += 1
                    pending.append((c, pool.submit(self._triage, c), found.cursor))
                else:
                    pending.append((None, None, found.cursor))
                self._drain(run, key, pending, limit=2 * self.concurrency)
        except MonitorError as e:
            run.errors.append(str(e))
            log.warning("listing failed", extra={"crawler": self.crawler.name, "scope": name,
                                                 "error": str(e)})
        finally:
            self._drain(run, key, pending, limit=0)
        return run

    def _retry_failed(self, pool: ThreadPoolExecutor) -> ScopeRun:
        run = ScopeRun(self.crawler.name, RETRY_SCOPE)
        pending = deque()
        source = self.crawler.name
        for location, revision in self.registry.failed_candidates(source):
            if self.stop.is_set():
                break
            if self.shard is not None and not self.shard.owns(location):
                continue
            try:
                c = self.crawler.refresh(location)
            except MonitorError as e:
                run.errors.append(str(e))
                continue
            if c is not None and c.revision == revision:
                pass  # the same revision again: retry it
            else:  # gone, or replaced: the failed row is closed so it is not retried forever
                status, reason = (("gone", "no longer published") if c is None else
                                  ("superseded", f"replaced by revision {c.revision}"))
                self.registry.record_candidate(source, location, revision, status=status, reason=reason)
                if c is None or self.registry.candidate_status(source, location, c.revision) not in (None, "failed"):
                    continue
            run.seen += 1
            run.new += 1
            self._handled.add((c.location, c.revision))
            pending.append((c, pool.submit(self._triage, c), None))
            self._drain(run, None, pending, limit=2 * self.concurrency)
        self._drain(run, None, pending, limit=0)
        return run

    # -- triage and recording --------------------------------------------------------------------

    def _triage(self, candidate: Candidate) -> Outcome:
        """On a worker thread: list the files if the crawler has not yet, then triage."""
        try:
            candidate = self.crawler.describe(candidate)
        except MonitorError as e:
            return Outcome("failed", str(e))
        return triage(candidate, self.crawler.open, self.owned, self.thresholds)

    def _drain(self, run: ScopeRun, scope: str | None, pending: deque, *, limit: int) -> None:
        """Record finished candidates in order; wait while more than `limit` are in flight."""
        while pending and (len(pending) > limit or pending[0][1] is None or pending[0][1].done()):
            candidate, future, cursor = pending.popleft()
            if future is not None:
                self._record(run, candidate, future.result())
            if cursor is not None and scope is not None:
                self.registry.set_cursor(self.crawler.name, scope, cursor)

    def _record(self, run: ScopeRun, c: Candidate, outcome: Outcome) -> None:
        """Events first, then the candidate row: a crash between the two re-triages the
        candidate next sweep, and the event store deduplicates the second detection."""
        run.add(outcome)
        record_matches(self.registry, c.location, list(outcome.matches), actor=self.actor,
                       record_events=True, channels=self.channels)
        self.registry.record_candidate(c.source, c.location, c.revision, status=outcome.status,
                                       bytes_read=outcome.bytes_read, reason=outcome.reason,
                                       verdict=summarise(outcome.matches)
                                       or ("none" if outcome.status == "no_match" else None))
        log.info("candidate", extra={"crawler": c.source, "location": c.location,
                                     "revision": c.revision, "status": outcome.status,
                                     "reason": outcome.reason, "bytes": outcome.bytes_read})
        self.on_outcome(run, c, outcome)
