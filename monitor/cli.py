"""The `monitor` command. The only place that builds concrete objects, prints, or exits.

Exit codes: 0 ok / no match, 1 match found (scan), 2 bad usage or bad input, 3 internal error.
Errors print one line on stderr; a traceback only with --debug (or MONITOR_DEBUG=1).
"""

from __future__ import annotations

import getpass
import os
import sys
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
def demo(ctx: typer.Context,
         workdir: Optional[Path] = typer.Option(None, "--workdir", help="Keep demo files here (default: a temp dir).")) -> None:
    """Register all-MiniLM-L6-v2, scan its copies, then crawl them on a local Hub; print the verdicts."""
    from monitor import demo as demo_mod

    st = _state(ctx)
    demo_mod.run(st, out, workdir)


# The rest of the commands register themselves on `app` when imported (kept out of this file).
from monitor import cli_alerts, cli_ops  # noqa: E402

_COMMAND_MODULES = (cli_alerts, cli_ops)


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
