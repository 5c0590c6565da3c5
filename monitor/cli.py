"""The `monitor` command. The only place that builds concrete objects, prints, or exits.

Exit codes: 0 ok / no match, 1 match found (scan), 2 bad usage or bad input, 3 internal error.
Errors print one line on stderr; a traceback only with --debug (or MONITOR_DEBUG=1).
"""

from __future__ import annotations

import getpass
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from monitor import __version__, config, logs, render
from monitor.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_MATCH, EXIT_OK, InputError, MonitorError
from monitor.match import Thresholds
from monitor.records import EventStatus
from monitor.registry import Registry

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find stolen copies of the machine-learning models you own.")
models_app = typer.Typer(no_args_is_help=True, help="Registered (owned) models.")
events_app = typer.Typer(no_args_is_help=True, help="Detection events and their triage status.")
app.add_typer(models_app, name="models")
app.add_typer(events_app, name="events")

# Piped output (CI logs, `| less`) gets wide tables rather than Rich's 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)


class State:
    """Global options, and the registry opened on first use."""

    def __init__(self, settings: config.Settings, as_json: bool) -> None:
        self.settings, self.json = settings, as_json
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.open(self.settings.db_path,
                                           busy_timeout_s=self.settings.registry.busy_timeout_s)
        return self._registry

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(**self.settings.match.model_dump())

    @property
    def routes(self):
        """Which alert channels each verdict's event is queued for ([alerts] routes)."""
        from monitor.alert.policy import Routes

        return Routes.from_settings(self.settings.alerts)

    @contextmanager
    def progress(self) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
        """A progress-bar factory (silent under --json or when stderr is not a terminal)."""
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TimeRemainingColumn(), console=err, transient=True,
                      disable=self.json or not err.is_terminal) as bars:
            def factory(desc: str, total: int) -> Callable[[int], None]:
                task = bars.add_task(desc, total=total)

                def advance(n: int) -> None:
                    bars.advance(task, n)
                    if bars.tasks[bars.task_ids.index(task)].finished:
                        bars.remove_task(task)  # one bar at a time, even across many scans
                return advance
            yield factory


def _state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "monitor"


def _version(value: bool) -> None:
    if value:
        out.print(f"provenance-monitor {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def root(ctx: typer.Context,
         db: Optional[Path] = typer.Option(None, "--db", help="Registry file (default: XDG data dir; env MONITOR_DB)."),
         config_path: Optional[Path] = typer.Option(None, "--config", help="TOML config file (env MONITOR_CONFIG)."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
         debug: bool = typer.Option(False, "--debug", help="Show tracebacks of internal errors."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    ctx.obj = State(config.load(config_path, db=db), as_json)
    logs.configure(ctx.obj.settings.log)
    ctx.call_on_close(lambda: ctx.obj._registry and ctx.obj._registry.close())


@app.command()
def register(ctx: typer.Context, path: Path = typer.Argument(..., help="Weight file or model folder."),
             name: str = typer.Option(..., "--name", help="Unique name for the model."),
             owner: Optional[str] = typer.Option(None, "--owner", help="Contact e-mail of the owner.")) -> None:
    """Fingerprint a model you own and add it to the registry."""
    from monitor import pipeline

    st = _state(ctx)
    with st.progress() as progress:
        model = pipeline.register(st.registry, path, name=name, owner=owner, actor=_actor(), progress=progress)
    if st.json:
        render.print_json(out, model)
    else:
        out.print(f"registered [bold]{model.name}[/] (id {model.id}): {model.n_files} file(s), "
                  f"{model.n_tensors} tensors, {model.total_bytes / 1e6:,.1f} MB")


@app.command()
def scan(ctx: typer.Context,
         target: str = typer.Argument(..., help="Suspect weight file or folder, an http(s) URL of a .safetensors file, or hf://owner/repo[@revision].")) -> None:
    """Fingerprint a suspect and report every registered model it resembles (exit 1 on a match)."""
    from monitor import pipeline

    st = _state(ctx)
    cost: dict[str, int | str] = {}
    if target.startswith(("hf://", "http://", "https://")):
        result, cost = _scan_remote(st, target)
    else:
        with st.progress() as progress:
            result = pipeline.scan(st.registry, Path(target), thresholds=st.thresholds, actor=_actor(),
                                   record_events=st.settings.scan.record_events, progress=progress,
                                   channels=st.routes)
    events = {e.model_id: e for e in result.events}
    if st.json:
        render.print_json(out, {"target": result.target, **cost, "matches": [
            render.match_json(m, events.get(m.model_id)) for m in result.matches]})
    else:
        if cost:
            out.print(f"read {cost['bytes_read']:,} of {cost['size']:,} bytes "
                      f"({100 * int(cost['bytes_read']) / max(int(cost['size']), 1):.2f} %)")
        if result.matches:
            out.print(render.matches_table(result.target, list(result.matches)))
        else:
            out.print(f"no match: {result.target} resembles no registered model")
    raise typer.Exit(EXIT_MATCH if result.matches else EXIT_OK)


@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """List registered models."""
    st = _state(ctx)
    models = st.registry.list_models()
    render.print_json(out, models) if st.json else out.print(render.models_table(models))


@models_app.command("show")
def models_show(ctx: typer.Context, model: str = typer.Argument(..., help="Name or id.")) -> None:
    """Show a model with its files."""
    st = _state(ctx)
    record = st.registry.get_model(model)
    files = st.registry.model_files(record.id)
    if st.json:
        render.print_json(out, {**render.to_jsonable(record), "files": files})
        return
    out.print(render.models_table([record]))
    for f in files:
        out.print(f"  {f.format:12} {f.size:>14,} B  sha256 {f.sha256}  {f.path}")


@models_app.command("remove")
def models_remove(ctx: typer.Context, model: str = typer.Argument(..., help="Name or id."),
                  yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Remove a model and its fingerprints; its detection events are kept."""
    st = _state(ctx)
    record = st.registry.get_model(model)
    try:
        confirmed = yes or typer.confirm(f"remove model {record.name!r} (id {record.id})?")
    except typer.Abort:  # no terminal to ask on
        confirmed = False
    if not confirmed:
        err.print("not removed (pass --yes to remove without asking)")
        raise typer.Exit(EXIT_INPUT)
    removed = st.registry.remove_model(record.id, actor=_actor())
    render.print_json(out, removed) if st.json else out.print(f"removed {removed.name} (id {removed.id})")


@events_app.command("list")
def events_list(ctx: typer.Context,
                status: Optional[EventStatus] = typer.Option(None, "--status", help="Only this status."),
                model: Optional[str] = typer.Option(None, "--model", help="Only this model's events."),
                limit: Optional[int] = typer.Option(None, "--limit", min=1)) -> None:
    """List detection events, newest first."""
    st = _state(ctx)
    events = st.registry.list_events(status=status, model=model, limit=limit)
    render.print_json(out, events) if st.json else out.print(render.events_table(events))


@events_app.command("show")
def events_show(ctx: typer.Context, event_id: int = typer.Argument(...)) -> None:
    """Show one event with its full evidence."""
    st = _state(ctx)
    event = st.registry.get_event(event_id)
    if st.json:
        render.print_json(out, event)
    else:
        out.print(render.events_table([event]))
        out.print(f"status by {event.status_by or '-'} at {event.status_at or '-'}")
        render.print_json(out, event.evidence)


@events_app.command("set-status")
def events_set_status(ctx: typer.Context, event_id: int = typer.Argument(...),
                      status: EventStatus = typer.Argument(...),
                      note: Optional[str] = typer.Option(None, "--note", help="Why (kept in the audit log).")) -> None:
    """Move an event through triage: new, investigating, confirmed, false_positive, resolved."""
    st = _state(ctx)
    event = st.registry.set_event_status(event_id, status, actor=_actor(), note=note)
    render.print_json(out, event) if st.json else out.print(f"event {event.id}: {event.status.value}")


# -- monitor alerts: the outbox and its notifiers ------------------------------------------------

alerts_app = typer.Typer(no_args_is_help=True, help="Alert outbox: list, retry, test, deliver.")
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(ctx: typer.Context,
                status: Optional[str] = typer.Option(None, "--status", help="pending, delivered or failed."),
                limit: Optional[int] = typer.Option(50, "--limit", min=1, help="Newest N.")) -> None:
    """Outbox rows, newest first: one alert for one channel, and where its delivery stands."""
    from rich.table import Table

    from monitor.records import OutboxStatus

    st = _state(ctx)
    if status is not None and status not in {s.value for s in OutboxStatus}:
        raise InputError(f"--status {status!r}: must be one of pending, delivered, failed")
    rows = st.registry.list_outbox(status=status, limit=limit)
    if st.json:
        render.print_json(out, rows)
        return
    table = Table("id", "event", "channel", "action", "status", "attempts", "next attempt / delivered",
                  "last error")
    for r in rows:
        table.add_row(str(r.id), str(r.event_id), r.channel, r.payload.get("action", "trigger"),
                      r.status.value, str(r.attempts),
                      (r.delivered_at if r.status.value == "delivered" else r.next_attempt_at)[:19],
                      r.last_error or "")
    out.print(table)


@alerts_app.command("retry")
def alerts_retry(ctx: typer.Context, ids: list[int] = typer.Argument(None, help="Outbox row ids."),
                 all_failed: bool = typer.Option(False, "--all-failed", help="Every failed row.")) -> None:
    """Put failed alerts back in the queue, due now (audited)."""
    st = _state(ctx)
    if bool(ids) == all_failed:
        raise InputError("give outbox row ids or --all-failed (not both)")
    retried = st.registry.retry_outbox(None if all_failed else ids, actor=_actor())
    render.print_json(out, {"retried": retried}) if st.json else \
        out.print(f"{len(retried)} alert(s) queued again" + (f": {retried}" if retried else ""))


@alerts_app.command("test")
def alerts_test(ctx: typer.Context,
                channel: str = typer.Option(..., "--channel", help="slack, pagerduty or log.")) -> None:
    """Send a test alert through one channel now (PagerDuty: trigger, then resolve)."""
    import dataclasses

    from monitor.alert.base import Action, Alert
    from monitor.alert.build import notifier
    from monitor.registry.core import iso, utc_now

    st = _state(ctx)
    sender = notifier(channel, st.settings.alerts, os.environ)
    alert = Alert(outbox_id=0, event_id=0, channel=channel, fingerprint=f"test-{_actor()}",
                  action=Action.TRIGGER, model="test-model", location="hf://example/test-alert",
                  verdict="exact", score=1.0, confidence="high", p_value=None, status="new",
                  detected_at=iso(utc_now()))
    try:
        sender.send(alert)
        if channel == "pagerduty":
            sender.send(dataclasses.replace(alert, action=Action.RESOLVE, status="resolved"))
    finally:
        sender.close()
    render.print_json(out, {"channel": channel, "sent": True}) if st.json else \
        out.print(f"test alert sent to {channel}")


@alerts_app.command("deliver")
def alerts_deliver(ctx: typer.Context,
                   channel: Optional[str] = typer.Option(None, "--channel", help="Only this channel.")) -> None:
    """Send every due alert once (what the daemon does on a schedule) and print what happened."""
    from monitor.alert.deliver import drain
    from monitor.locks import job_lock
    from monitor.registry.core import utc_now

    st = _state(ctx)
    with job_lock(st.settings.db_path, "deliver"):  # one deliverer per registry: the daemon's too
        report, problems = drain(st.registry, st.settings.alerts, os.environ, utc_now, channel=channel)
    if st.json:
        render.print_json(out, {**report.__dict__, "config_errors": problems})
    else:
        out.print(f"delivered {report.delivered}, retrying {report.retrying}, failed {report.failed}, "
                  f"deferred {report.deferred}, no notifier {report.no_notifier}")
        for name, message in sorted(report.errors.items()):
            err.print(f"{name}: {message}", markup=False, highlight=False)
    for message in problems:
        err.print(f"error: {message}", markup=False, highlight=False)
    if problems:
        raise typer.Exit(EXIT_INPUT)


@app.command()
def plugins(ctx: typer.Context) -> None:
    """List the installed crawler plugins (entry-point group provenance_monitor.crawlers)."""
    from crawlers import base

    st = _state(ctx)
    found = base.available()
    if st.json:
        render.print_json(out, [{"name": n, "object": v} for n, v in sorted(found.items())])
    elif found:
        for name, value in sorted(found.items()):
            out.print(f"{name:20} {value}")
    else:
        out.print("no crawler plugins installed")


def _scan_remote(st: State, target: str) -> tuple[object, dict[str, int | str]]:
    """hf://owner/repo[@rev] through the hf_hub crawler, a URL through url_list: the same
    cheapest-first triage a sweep does, recorded as a sweep would."""
    from monitor import enabled, pipeline

    if target.startswith("hf://"):
        repo, _, revision = target.removeprefix("hf://").partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise InputError(f"{target}: expected hf://owner/repo or hf://owner/repo@revision")
    crawler = enabled.crawler(st.settings, "hf_hub" if target.startswith("hf://") else "url_list",
                              os.environ)
    try:
        if target.startswith("hf://"):
            candidate = crawler.candidate(repo, revision or None)  # type: ignore[attr-defined]
        else:
            candidate = crawler.refresh(target)
        result, outcome = pipeline.scan_candidate(st.registry, crawler, candidate,
                                                  thresholds=st.thresholds, actor=_actor(),
                                                  record_events=st.settings.scan.record_events,
                                                  channels=st.routes)
    finally:
        crawler.close()
    size = sum(f.size or 0 for f in candidate.files or ())
    return result, {"revision": candidate.revision, "bytes_read": outcome.bytes_read, "size": size}


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
    from monitor import enabled
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
                    runs += Sweep(st.registry, c.crawler, owned, st.thresholds, _actor(),
                                  concurrency=c.settings.concurrency, on_outcome=on_outcome,
                                  channels=st.routes, shard=part, stop=stop).run(c.scopes)
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
                      f"failed {delivered['failed']}, no notifier {delivered['no_notifier']}")
    if stop.is_set():
        err.print("stopped by signal: in-flight candidates were finished and recorded")


def _deliver_after_sweep(st: State) -> dict | None:
    """Drain the outbox once a run-once is done: a CronJob has no daemon to do it. Skipped (the
    rows stay pending) when a daemon holds the delivery lock; a channel without its secret is
    reported, its rows kept."""
    from monitor.alert.deliver import drain
    from monitor.locks import JobBusy, job_lock
    from monitor.registry.core import utc_now

    if not st.registry.pending_outbox():
        return None
    try:
        with job_lock(st.settings.db_path, "deliver"):
            report, problems = drain(st.registry, st.settings.alerts, os.environ, utc_now)
    except JobBusy:
        return None
    for message in problems:
        err.print(f"warning: alerts not sent: {message}", markup=False, highlight=False)
    return {k: v for k, v in report.__dict__.items() if k != "errors"}


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
        raise typer.Exit(EXIT_INTERNAL)


@app.command()
def health(ctx: typer.Context) -> None:
    """Exit 0 if the daemon on [daemon] listen answers /healthz with 200 (Docker HEALTHCHECK)."""
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


@app.command()
def demo(ctx: typer.Context,
         workdir: Optional[Path] = typer.Option(None, "--workdir", help="Keep demo files here (default: a temp dir).")) -> None:
    """Register all-MiniLM-L6-v2, scan copies and an unrelated model, print the verdicts."""
    from monitor import demo as demo_mod

    st = _state(ctx)
    demo_mod.run(st, out, workdir)


def main(argv: list[str] | None = None) -> None:
    """Entry point: map our error tree to exit codes and one-line messages.

    Typer (standalone mode) already exits 2 on usage errors and honours typer.Exit; what
    escapes it is either one of our errors (its exit code) or a bug (exit 3).
    """
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("MONITOR_DEBUG") == "1"
    try:
        app(args=argv, prog_name="monitor")
    except MonitorError as e:
        err.print(f"error: {e}", markup=False, highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into exit 3
        if debug:
            traceback.print_exc()
        err.print(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)",
                  markup=False, highlight=False)
        sys.exit(EXIT_INTERNAL)
