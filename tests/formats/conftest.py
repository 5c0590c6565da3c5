"""Fixtures for the format readers: tiny real models and an in-memory byte source."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from monitor.errors import WeightFormatError
from monitor.formats.base import ByteSource


class MemorySource(ByteSource):
    """Bytes in memory; records every read so tests can check what a reader fetched."""

    def __init__(self, data: bytes, name: str = "mem://model.safetensors") -> None:
        self.data, self.name, self.size = data, name, len(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        if offset < 0 or length < 0 or offset + length > self.size:
            raise WeightFormatError(self.name, f"truncated: wanted bytes {offset}.."
                                    f"{offset + length} of a {self.size}-byte file")
        return self.data[offset:offset + length]


def safetensors_bytes(header: object, data: bytes = b"", *, raw_header: bytes | None = None) -> bytes:
    """A safetensors file with any header, valid or not."""
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + data


def raw_bytes(t: torch.Tensor) -> bytes:
    """Canonical bytes of a tensor: little-endian C order of its own dtype."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def all_dtype_tensors() -> dict[str, torch.Tensor]:
    """One small tensor per canonical dtype, with values that exercise sign, NaN-free range."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, 7, generator=g) * 4
    return {
        "f64": base.double(), "f32": base, "f16": base.half(), "bf16": base.bfloat16(),
        "i64": (base * 1000).long(), "i32": (base * 1000).int(), "i16": (base * 100).short(),
        "i8": base.clamp(-100, 100).to(torch.int8), "u8": base.abs().to(torch.uint8),
        "bool": base > 0, "f8_e4m3": base.to(torch.float8_e4m3fn),
        "f8_e5m2": base.to(torch.float8_e5m2), "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


@pytest.fixture
def dtype_tensors() -> dict[str, torch.Tensor]:
    return all_dtype_tensors()


@pytest.fixture
def st_path(tmp_path: Path, dtype_tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file
    path = tmp_path / "model.safetensors"
    save_file(dtype_tensors, str(path), metadata={"format": "pt"})
    return path
