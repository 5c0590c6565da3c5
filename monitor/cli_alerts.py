"""`monitor alerts ...`: the alert outbox and its notifiers, from the command line."""

from __future__ import annotations

import os
from enum import Enum
from typing import Optional

import typer

from monitor import render
from monitor.cli import EXIT_INPUT, InputError, app, err, out, _actor, _state

# -- monitor alerts: the outbox and its notifiers ------------------------------------------------

alerts_app = typer.Typer(no_args_is_help=True, help="Alert outbox: list, retry, test, deliver.")
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(ctx: typer.Context,
                status: Optional[str] = typer.Option(None, "--status", help="pending, delivered, failed or suppressed."),
                limit: Optional[int] = typer.Option(50, "--limit", min=1, help="Newest N.")) -> None:
    """Outbox rows, newest first: one notification (trigger, repeat N, resolve) about one event or
    condition for one channel, and where its delivery stands."""
    from monitor.records import OutboxStatus

    st = _state(ctx)
    _check_choice("--status", status, OutboxStatus)
    rows = st.registry.list_outbox(status=status, limit=limit)
    if st.json:
        render.print_json(out, [render.outbox_json(r) for r in rows])
    else:
        out.print(render.outbox_table(rows))


@alerts_app.command("conditions")
def alerts_conditions(ctx: typer.Context,
                      state: Optional[str] = typer.Option(None, "--state", help="pending, firing or resolved."),
                      limit: Optional[int] = typer.Option(50, "--limit", min=1, help="Newest N.")) -> None:
    """The monitor's own conditions (a source it cannot reach, a scope that keeps failing), newest
    first; a firing one whose alerts are held back while its parent fires says so."""
    from monitor.records import ConditionState

    st = _state(ctx)
    _check_choice("--state", state, ConditionState)
    rows = st.registry.list_conditions(state=state)[:limit]
    held = [(c, st.registry.inhibited_by(c.id) if c.state is ConditionState.FIRING else None)
            for c in rows]
    if st.json:
        render.print_json(out, [{**render.to_jsonable(c),
                                 "inhibited_by": parent.id if parent else None}
                                for c, parent in held])
    else:
        out.print(render.conditions_table(held))


def _check_choice(option: str, value: str | None, choices: type[Enum]) -> None:
    allowed = [c.value for c in choices]
    if value is not None and value not in allowed:
        raise InputError(f"{option} {value!r}: must be one of {', '.join(allowed)}")


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

    from monitor.alert.base import Action, DetectionAlert
    from monitor.alert.build import notifier
    from monitor.registry.core import iso, utc_now

    st = _state(ctx)
    sender = notifier(channel, st.settings.alerts, os.environ)
    alert = DetectionAlert(outbox_id=0, channel=channel, fingerprint=f"test-{_actor()}",
                           action=Action.TRIGGER, repeat=0, event_id=0, model="test-model",
                           location="hf://example/test-alert", verdict="exact", score=1.0,
                           confidence="high", p_value=None, status="new",
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
