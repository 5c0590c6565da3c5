"""Registries in real SQLite files under tmp_path, a clock the tests move by hand, and models."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from monitor.records import FingerprintBlob, NewEvent, TensorDigest, Verdict, WeightFile
from monitor.registry import Registry

START = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
TABLES = ("models", "model_files", "tensors", "fingerprints", "crawl_state", "candidates",
          "events", "outbox", "audit_log")


class ManualClock:
    """Returns the same instant until a test advances it."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "registry.db"


@pytest.fixture
def registry(db_path: Path, clock: ManualClock):
    with Registry.open(db_path, clock=clock) as reg:
        yield reg


def _row_counts(path: Path) -> dict[str, int]:
    """Rows per table, read through a connection of its own (not the registry's)."""
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def _model_parts(tag: str = "a", n_tensors: int = 3, constant_last: bool = True):
    """Two files, `n_tensors` tensors spread over them (the last constant), two fingerprints."""
    files = [WeightFile(f"{tag}/model-0000{i}.safetensors", 1000 + i, f"{tag}sha{i}".ljust(64, "0"),
                        "safetensors") for i in range(2)]
    tensors = [TensorDigest(name=f"layers.{i}.weight", dtype="F32", shape=(4, i + 1),
                            file=files[i % 2].path, begin=8 + 16 * i, end=24 + 16 * i,
                            digest=f"{tag}-digest-{i}",
                            constant=constant_last and i == n_tensors - 1)
               for i in range(n_tensors)]
    fingerprints = [FingerprintBlob("sketch", 1, b"\x00\x01" + tag.encode()),
                    FingerprintBlob("sketch", 2, bytes(range(256)))]
    return files, tensors, fingerprints


def _add_model(registry: Registry, name: str, tag: str | None = None, **kwargs):
    files, tensors, fingerprints = _model_parts(tag or name, **kwargs)
    return registry.add_model(name=name, owner="ml-team", source=f"/models/{name}", files=files,
                              tensors=tensors, fingerprints=fingerprints, actor="alice")


def _new_event(model, location: str = "hf://thief/copy@abc", score: float = 0.9,
               verdict: Verdict = Verdict.REPACKAGED) -> NewEvent:
    return NewEvent(model_id=model.id, model_name=model.name, location=location, verdict=verdict,
                    score=score, confidence="high", p_value=None,
                    evidence={"matched_tensors": 3, "score": score})


# Helpers handed out as fixtures, so test modules never import this file.

@pytest.fixture
def counts(db_path: Path):
    return lambda: _row_counts(db_path)


@pytest.fixture
def model_parts():
    return _model_parts


@pytest.fixture
def make_model(registry: Registry):
    return lambda name, **kwargs: _add_model(registry, name, **kwargs)


@pytest.fixture
def new_event():
    return _new_event
