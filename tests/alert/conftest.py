"""A registry with a hand-moved clock and a model, events routed to channels, and the local
Slack and PagerDuty capture servers (PagerDuty over TLS with a throwaway certificate)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from monitor.records import FingerprintBlob, NewEvent, Verdict, WeightFile
from monitor.registry import Registry
from monitor.sandbox.pagerduty import PagerDutyServer, self_signed
from monitor.sandbox.slack import SlackServer


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def registry(db_path: Path, clock: Clock):
    with Registry.open(db_path, clock=clock) as reg:
        yield reg


def add_model(registry: Registry, name: str = "our-model"):
    return registry.add_model(
        name=name, owner="ml@example.com", source=f"/models/{name}",
        files=[WeightFile("model.safetensors", 10, "a" * 64, "safetensors")], tensors=[],
        fingerprints=[FingerprintBlob("sketch", 1, b"x")], actor="test")


def record(registry: Registry, model, location: str, *, channels=("slack",),
           verdict: Verdict = Verdict.EXACT):
    event, _ = registry.record_event(
        NewEvent(model.id, model.name, location, verdict, 1.0, "high", 3e-12, {"files": 1}),
        actor="test", channels=channels)
    return event


@pytest.fixture
def model(registry: Registry):
    return add_model(registry)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def slack_server():
    with SlackServer(token="xoxb-test") as server:
        yield server


@pytest.fixture
def pd_server(certificate):
    with PagerDutyServer(*certificate, routing_key="R" * 32) as server:
        yield server
