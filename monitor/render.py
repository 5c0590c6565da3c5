"""Rendering records for people (rich tables) and machines (JSON). Only the CLI calls this."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table

from monitor.records import EventRecord, Match, ModelRecord


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
