"""Operating commands: `run-once`, `candidates`, `snapshot`, `import-shards`, `daemon`, `health`."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from monitor import render
from monitor.cli import (EXIT_INPUT, EXIT_INTERNAL, EXIT_MATCH, InputError, State, app, err, out,
                         _actor, _state)

@app.command()
def candidates(ctx: typer.Context,
               source: Optional[str] = typer.Option(None, "--source", help="Only this crawler's."),
               status: Optional[str] = typer.Option(None, "--status", help="matched, no_match, skipped, failed, superseded, gone."),
               limit: int = typer.Option(50, "--limit", help="Newest N.")) -> None:
    """What the crawlers saw: every candidate revision, its status, reason, bytes read, verdict."""
    st = _state(ctx)
    rows = st.registry.candidates(source=source, status=status, limit=limit)
    if st.json:
        render.print_json(out, rows)
    else:
        out.print(render.candidates_table(rows))


@app.command("run-once")
def run_once(ctx: typer.Context,
             only: list[str] = typer.Option([], "--crawler", help="Run only this crawler (repeatable)."),
             shard: Optional[str] = typer.Option(None, "--shard", help="I/N: only candidates hashing to shard I of N; auto/N takes I from $JOB_COMPLETION_INDEX.")) -> None:
    """Run every enabled crawler once over its scopes and print a summary."""
    from monitor import conditions, enabled
    from monitor.locks import job_lock
    from monitor.owned import OwnedModels
    from monitor.sweep import Shard, Sweep

    st = _state(ctx)
    part = Shard.parse(shard, os.environ) if shard else None
    configured = enabled.build(st.settings, os.environ, only)
    stop = _stop_on_signals()
    runs, matches = [], []
    try:
        if not configured:
            err.print("error: no crawler is enabled: add a [crawlers.<name>] table with a scope to "
                      "the config (see config/monitor.example.toml)")
            raise typer.Exit(EXIT_INPUT)
        owned = OwnedModels.load(st.registry)
        if not len(owned):
            err.print("error: no models are registered, so nothing could match: "
                      "monitor register PATH --name NAME")
            raise typer.Exit(EXIT_INPUT)
        with render.SweepProgress(err, disabled=st.json or not err.is_terminal) as progress:
            for c in configured:
                def on_outcome(run, candidate, outcome) -> None:
                    progress.update(run)
                    matches.extend((candidate.location, m) for m in outcome.matches)
                with job_lock(st.settings.db_path, f"crawl:{c.name}"):  # the daemon's lock too
                    these = Sweep(st.registry, c.crawler, owned, st.thresholds, _actor(),
                                  concurrency=c.settings.concurrency, on_outcome=on_outcome,
                                  channels=st.routes, shard=part, stop=stop).run(c.scopes)
                    if not stop.is_set():  # a stopped sweep says nothing about its source
                        conditions.record(st.registry, conditions.observe_sweep(c.name, these),
                                          st.routes, fire_after=st.settings.alerts.fire_after_runs,
                                          actor=_actor())
                    runs += these
    finally:
        for c in configured:
            c.crawler.close()
    delivered = _deliver_after_sweep(st)
    if st.json:
        render.print_json(out, {**render.sweep_json(runs, matches), "alerts": delivered})
    else:
        render.print_sweep(out, runs, matches)
        if delivered:
            out.print(f"alerts: delivered {delivered['delivered']}, retrying {delivered['retrying']}, "
                      f"failed {delivered['failed']}, no notifier {delivered['no_notifier']}, "
                      f"held back {delivered['inhibited']}, reminders queued "
                      f"{delivered['repeats_queued']}")
    if stop.is_set():
        err.print("stopped by signal: in-flight candidates were finished and recorded")


def _deliver_after_sweep(st: State) -> dict | None:
    """Drain the outbox once a run-once is done: a CronJob has no daemon to do it, so this is
    also where its reminders are queued. Skipped (the rows stay pending) when a daemon holds the
    delivery lock; a channel without its secret is reported, its rows kept. None if there was
    nothing to do."""
    from monitor.alert.deliver import drain
    from monitor.locks import JobBusy, job_lock
    from monitor.registry.core import utc_now

    try:
        with job_lock(st.settings.db_path, "deliver"):
            report, problems = drain(st.registry, st.settings.alerts, os.environ, utc_now)
    except JobBusy:
        return None
    for message in problems:
        err.print(f"warning: alerts not sent: {message}", markup=False, highlight=False)
    counts = {k: v for k, v in report.__dict__.items() if k != "errors"}
    return counts if any(counts.values()) or problems else None


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT set the event: work in flight finishes and is recorded, nothing new starts."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@app.command()
def snapshot(ctx: typer.Context, dest: Path = typer.Argument(..., help="Where to write the copy.")) -> None:
    """A consistent copy of the registry (for the pods of a sharded sweep), safe while it is in use."""
    st = _state(ctx)
    if not dest.parent.is_dir():
        raise InputError(f"{dest.parent}: no such directory")
    st.registry.snapshot(dest)
    out.print(f"registry copied to {dest}")


@app.command("import-shards")
def import_shards(ctx: typer.Context,
                  paths: list[Path] = typer.Argument(..., help="Registry files the shard pods left behind.")) -> None:
    """Fold the registries of a sharded sweep's pods into this one (candidates, cursors, events)."""
    from monitor.merge import import_shard

    st = _state(ctx)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: no such shard registry")
    report = []
    for path in paths:
        done = import_shard(st.registry, path, actor=_actor())
        report.append({"shard": str(path), **render.to_jsonable(done)})
        if not st.json:
            out.print(f"{path}: {done.candidates} candidates, {done.cursors} cursors, "
                      f"{done.events_new} new events, {done.events_seen_again} seen again")
    if st.json:
        render.print_json(out, report)


@app.command()
def daemon(ctx: typer.Context) -> None:
    """Run every enabled crawler on its schedule, and the retention job, until SIGTERM/SIGINT."""
    from monitor import enabled, metrics, schedule

    st = _state(ctx)
    for c in enabled.build(st.settings, os.environ):  # every crawler table valid before starting
        c.crawler.close()
    _ = st.registry  # create or migrate it now: jobs open connections of their own
    gauges = metrics.Metrics(st.settings.db_path)
    runner = schedule.Daemon(st.settings, schedule.build_jobs(st.settings, os.environ, gauges), gauges)
    stop = _stop_on_signals()
    server = metrics.serve(st.settings.daemon.listen, gauges, runner.health)
    runner.start()
    err.print(f"daemon running: {len(runner.jobs)} jobs; health and metrics on "
              f"http://{st.settings.daemon.listen}/healthz and /metrics")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        clean = runner.stop()
        server.shutdown()
    if not clean:
        err.print(f"error: jobs still running after {st.settings.daemon.stop_timeout_s} s; exiting anyway")
        # A job blocked inside a request cannot see the stop event, and a normal exit would wait
        # for it (the interpreter joins worker threads). Every registry write is a transaction:
        # one cut short is rolled back, and its candidate is triaged again next sweep.
        logging.shutdown()
        os._exit(EXIT_INTERNAL)


@app.command()
def health(ctx: typer.Context) -> None:
    """Exit 0 if the daemon's /healthz (on its configured listen address) answers 200."""
    import httpx2

    st = _state(ctx)
    host, _, port = st.settings.daemon.listen.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    url = f"http://{host}:{port}/healthz"
    try:
        response = httpx2.get(url, timeout=5.0)
    except httpx2.HTTPError as e:
        err.print(f"unhealthy: {url}: {type(e).__name__}")
        raise typer.Exit(EXIT_MATCH) from None
    if response.status_code != 200:
        err.print(f"unhealthy: {url}: HTTP {response.status_code}")
        raise typer.Exit(EXIT_MATCH)
    out.print(response.text if st.json else "healthy")
