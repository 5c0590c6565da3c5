"""Crawler fixtures: loopback-only networking, a local Hub, a registry owning one tiny LM."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from safetensors.torch import save

from benchmarks.zoo.llama import LMConfig, init_state_dict
from monitor import derive, pipeline
from monitor.registry import Registry
from monitor.sandbox.hub import HubServer

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Online client, no token, no telemetry, and any socket off 127.0.0.1 is an error."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # read once at import
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in _LOOPBACK:
            raise AssertionError(f"test tried to reach {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOOPBACK:
            raise AssertionError(f"test tried to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


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
