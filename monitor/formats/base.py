"""The seam every weight format implements: a file read tensor by tensor over a byte source.

Readers never hold a whole model, and never a whole large tensor: `chunks` streams a tensor's
canonical bytes for digesting, `values` decodes only a slice of elements for fingerprints. A reader
sits on a `ByteSource` so the same code reads a local file (pread) or, later, a remote file by
HTTP range requests.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Self

import numpy as np

from monitor.errors import WeightFormatError
from monitor.records import TensorInfo

CHUNK_BYTES = 4 << 20


class ByteSource(ABC):
    """Random access to the bytes of one file, local or remote."""

    name: str  # path or URL, used in error messages
    size: int

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`, or WeightFormatError naming the file (truncated)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the underlying handle."""


class LocalFile(ByteSource):
    """A local file read with os.pread: no seek state, no whole-file mmap in our address space."""

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise WeightFormatError(path, f"cannot open: {e.strerror}") from None
        self.size = os.fstat(self._fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise WeightFormatError(self.name, f"truncated: wanted bytes {offset}..{offset + length}"
                                    f" of a {self.size}-byte file")
        buf = os.pread(self._fd, length, offset)
        if len(buf) != length:
            raise WeightFormatError(self.name, "file shrank while being read")
        return buf

    def close(self) -> None:
        os.close(self._fd)


class WeightReader(ABC):
    """One weight file, read tensor by tensor. Construction validates the header/index."""

    format: str  # "safetensors" | "torch" | "gguf"
    path: str

    @abstractmethod
    def tensors(self) -> list[TensorInfo]:
        """Every tensor the file declares, in file order, validated (in bounds, no overlaps)."""

    @abstractmethod
    def chunks(self, info: TensorInfo, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The tensor's canonical bytes (little-endian, C order, as stored dtype), in pieces."""

    @abstractmethod
    def values(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        """Elements [start, start+count) in C order as float32 (dequantized if stored quantized)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_element_range(info: TensorInfo, start: int, count: int) -> None:
    """IndexError when [start, start+count) is not inside the tensor: a caller's bug, not the file's."""
    if start < 0 or count < 0 or start + count > info.numel:
        raise IndexError(f"elements {start}..{start + count} of {info.name} ({info.numel} elements)")


def first_overlap(tensors: Sequence[TensorInfo]) -> tuple[TensorInfo, TensorInfo] | None:
    """Two tensors whose stored bytes overlap, if any; `tensors` sorted by begin. Empty ones never do."""
    last: TensorInfo | None = None
    for info in tensors:
        if info.nbytes == 0:
            continue
        if last is not None and info.begin < last.end:
            return last, info
        if last is None or info.end > last.end:
            last = info
    return None


def one_line(text: str, limit: int = 200) -> str:
    """An upstream error message as one short line, for the problem part of WeightFormatError."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
