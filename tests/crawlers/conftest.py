"""Crawler fixtures: loopback-only networking, a local Hub, a registry owning one tiny LM."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save

from benchmarks.zoo.llama import LMConfig, init_state_dict
from monitor import derive, pipeline
from monitor.registry import Registry
from monitor.sandbox.hub import HubServer

@pytest.fixture(autouse=True)
def _loopback(loopback_only) -> None:
    """Every crawler test: only 127.0.0.1, huggingface_hub online and without telemetry."""


@pytest.fixture(scope="session")
def lm_sd():
    return init_state_dict(LMConfig(), 3)


@pytest.fixture()
def hub():
    with HubServer(page_size=4) as server:
        yield server


@pytest.fixture()
def registry(tmp_path: Path, lm_sd):
    path = derive.save_safetensors(lm_sd, tmp_path / "own" / "model.safetensors")
    with Registry.open(tmp_path / "registry.db") as reg:
        pipeline.register(reg, path.parent, name="lm", owner="us", actor="test")
        yield reg


def st_bytes(sd) -> bytes:
    """A state dict as safetensors bytes, as a Hub repo would hold it."""
    return save({k: v.contiguous() for k, v in sd.items()})
