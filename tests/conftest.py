"""Shared fixtures: tiny real models built with torch, and the installed `monitor` command."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants

from monitor import derive

MONITOR = shutil.which("monitor", path=str(Path(sys.executable).parent)) or "monitor"


class TinyLM(torch.nn.Module):
    """A LLaMA-shaped model with Hugging Face names: embeddings, attention, SwiGLU MLP, norms."""

    def __init__(self, vocab: int = 512, hidden: int = 64, ffn: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(vocab, hidden)
        self.model.layers = torch.nn.ModuleList()
        for _ in range(layers):
            block = torch.nn.Module()
            block.self_attn = torch.nn.ModuleDict({n: torch.nn.Linear(hidden, hidden, bias=False)
                                                   for n in ("q_proj", "k_proj", "v_proj", "o_proj")})
            block.mlp = torch.nn.ModuleDict({"gate_proj": torch.nn.Linear(hidden, ffn, bias=False),
                                             "up_proj": torch.nn.Linear(hidden, ffn, bias=False),
                                             "down_proj": torch.nn.Linear(ffn, hidden, bias=False)})
            block.input_layernorm = torch.nn.LayerNorm(hidden, bias=False)
            block.post_attention_layernorm = torch.nn.LayerNorm(hidden, bias=False)
            self.model.layers.append(block)
        self.model.register_buffer("position_ids", torch.arange(128).unsqueeze(0))
        self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)


def tiny_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Weights of a TinyLM initialised from `seed` (independent seeds = independent models)."""
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in TinyLM().state_dict().items()}


@pytest.fixture(scope="session")
def owned_sd() -> dict[str, torch.Tensor]:
    return tiny_state_dict(0)


@pytest.fixture()
def owned_model(tmp_path: Path, owned_sd) -> Path:
    return derive.save_safetensors(owned_sd, tmp_path / "owned" / "model.safetensors").parent


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


def run_monitor(*args: str | Path, db: Path | None = None, env: dict | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed `monitor` entry point as a user would."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    cmd = [MONITOR, *(["--db", str(db)] if db else []), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture()
def loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Online client, no token, no telemetry, and any socket off 127.0.0.1 is an error."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_ENDPOINT", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
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
