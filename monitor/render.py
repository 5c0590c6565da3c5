"""Rendering records for people (rich tables) and machines (JSON). Only the CLI calls this."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table

from monitor.records import (AlertAction, ConditionRecord, EventRecord, Match, ModelRecord,
                             OutboxRow, OutboxStatus)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums and numpy scalars to plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def print_json(console: Console, obj: Any) -> None:
    console.print_json(json.dumps(to_jsonable(obj)))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def models_table(models: list[ModelRecord]) -> Table:
    t = Table("id", "name", "owner", "files", "tensors", "size", "registered", title="Registered models")
    for m in models:
        t.add_row(str(m.id), m.name, m.owner or "", str(m.n_files), str(m.n_tensors),
                  _mb(m.total_bytes), m.registered_at)
    return t


def match_json(m: Match, event: EventRecord | None) -> dict[str, Any]:
    """The documented scan JSON item: model, verdict, score, p_value, evidence (+ extras)."""
    return {"model": m.model_name, "model_id": m.model_id, "verdict": m.verdict.value,
            "score": m.score, "confidence": m.confidence, "p_value": m.p_value,
            "evidence": to_jsonable(m.evidence), "event_id": event.id if event else None}


def matches_table(target: str, matches: list[Match]) -> Table:
    t = Table("model", "verdict", "score", "confidence", "p-value", "evidence", title=f"Scan of {target}")
    for m in matches:
        t.add_row(m.model_name, m.verdict.value, f"{m.score:.3f}", m.confidence,
                  p_value_text(m), evidence_summary(m.evidence))
    return t


def p_value_text(m: Match) -> str:
    """A p-value for people: below float range it shows the bound from its log10."""
    if m.p_value is None:
        return "n/a"
    return f"{m.p_value:.1e}" if m.p_value > 0 else "<1e-300"


def evidence_summary(evidence: dict[str, Any]) -> str:
    """One line saying which fingerprint families agreed and how much."""
    parts = []
    if "files" in evidence:
        parts.append(f"files identical {evidence['files']['files_matched']}")
    tensors = evidence.get("tensors")
    if tensors and tensors.get("tensors"):
        parts.append(f"tensors identical {tensors['matched']}")
    units = evidence.get("units")
    if units:
        parts.append(f"units: layers matched {units['layers_matched']}")
    return "; ".join(parts)


def events_table(events: list[EventRecord]) -> Table:
    t = Table("id", "model", "verdict", "score", "status", "location", "created", title="Detection events")
    for e in events:
        t.add_row(str(e.id), e.model_name, e.verdict.value, f"{e.score:.3f}", e.status.value,
                  e.location, e.created_at)
    return t


# -- alerts and conditions ---------------------------------------------------------------------

def outbox_action(row: OutboxRow) -> str:
    """The action's name (trigger, resolve, ...), or "repeat N" for the N-th reminder."""
    return f"repeat {row.seq}" if row.action is AlertAction.REPEAT else row.action.value


def outbox_subject(row: OutboxRow) -> str:
    """What the row is about: "event 12", or a condition's "kind: subject" as it was queued."""
    if row.event_id is not None:
        return f"event {row.event_id}"
    return f"{row.payload.get('kind', 'condition')}: {row.payload.get('subject', row.condition_id)}"


def outbox_json(row: OutboxRow) -> dict[str, Any]:
    """The row's fields, plus `subject` as the table shows it and `kind`, its route key (the
    event's verdict or the condition's kind)."""
    kind = row.payload.get("verdict") if row.event_id is not None else row.payload.get("kind")
    return {**to_jsonable(row), "subject": outbox_subject(row), "kind": kind}


def outbox_table(rows: list[OutboxRow]) -> Table:
    t = Table("id", "subject", "channel", "action", "status", "attempts", "next attempt / delivered",
              "last error")
    for r in rows:
        when = r.delivered_at if r.status is OutboxStatus.DELIVERED else r.next_attempt_at
        t.add_row(str(r.id), outbox_subject(r), r.channel, outbox_action(r), r.status.value,
                  str(r.attempts), (when or "")[:19], r.last_error or "")
    return t


def conditions_table(rows: list[tuple[ConditionRecord, ConditionRecord | None]]) -> Table:
    """(condition, the firing parent holding its alerts back or None), newest first."""
    t = Table(title=f"{len(rows)} conditions (newest first)", title_justify="left")
    for column in ("id", "kind", "subject", "state", "failures", "since", "fired", "resolved"):
        t.add_column(column, no_wrap=True)  # keys and times stay whole; the detail wraps
    t.add_column("detail")
    for c, parent in rows:
        state = c.state.value + (f" (held back by {parent.kind}: {parent.subject})" if parent else "")
        t.add_row(str(c.id), c.kind, c.subject, state, str(c.failures), c.started_at[:19],
                  (c.fired_at or "")[:19], (c.resolved_at or "")[:19], c.detail)
    return t


# -- sweeps ------------------------------------------------------------------------------------

_COUNTS = ("seen", "new", "fingerprinted", "matched", "skipped", "failed", "bytes_read")


def sweep_json(runs: list, matches: list[tuple[str, Match]]) -> dict[str, Any]:
    """`monitor run-once --json`: one entry per crawler scope, totals, and every match."""
    return {"runs": [r.as_dict() for r in runs],
            "totals": {k: sum(getattr(r, k) for r in runs) for k in _COUNTS},
            "matches": [{"location": loc, "model": m.model_name, "verdict": m.verdict.value,
                         "score": m.score, "p_value": m.p_value} for loc, m in matches]}


def print_sweep(console: Console, runs: list, matches: list[tuple[str, Match]]) -> None:
    table = Table(title="sweep", title_justify="left")
    for col in ("crawler", "scope", *_COUNTS[:-1], "weight bytes read"):
        table.add_column(col, justify="left" if col in ("crawler", "scope") else "right")
    for r in runs:
        table.add_row(r.crawler, r.scope, *(f"{getattr(r, k):,}" for k in _COUNTS))
    if len(runs) > 1:
        table.add_row("total", "", *(f"{sum(getattr(r, k) for r in runs):,}" for k in _COUNTS),
                      style="bold")
    console.print(table)
    for r in runs:
        for e in r.errors:
            console.print(f"[yellow]listing error[/] {r.crawler}/{r.scope}: {e}", markup=True)
    for location, m in matches:
        p = f", p = {m.p_value:.1e}" if m.p_value is not None else ""
        console.print(f"MATCH {location} is {m.verdict.value} of {m.model_name}{p}")


def candidates_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("last seen", "source", "location", "revision", "status", "verdict", "bytes read",
                  "reason", title=f"{len(rows)} candidates (newest first)", title_justify="left")
    for r in rows:
        table.add_row(r["last_seen"][:19], r["source"], r["location"], r["revision"][:12], r["status"],
                      r["verdict"] or "", f"{r['bytes_read']:,}", r["reason"] or "")
    return table


class SweepProgress:
    """A one-line live count per crawler scope on stderr (off under --json or when piped)."""

    def __init__(self, console: Console, *, disabled: bool) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn

        self._bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console,
                              transient=True, disable=disabled)
        self._tasks: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> SweepProgress:
        self._bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.__exit__(*exc)

    def update(self, run: Any) -> None:
        key = (run.crawler, run.scope)
        if key not in self._tasks:
            self._tasks[key] = self._bars.add_task("")
        self._bars.update(self._tasks[key], description=(
            f"{run.crawler}/{run.scope}: {run.seen:,} seen · {run.new:,} new · "
            f"{run.matched:,} matched · {run.skipped:,} skipped · {run.bytes_read / 1e6:,.1f} MB read"))
