"""What the local Hub serves as a file's content: bytes, or bytes generated on demand.

A crawl benchmark needs thousands of repos whose weights add up to hundreds of GB, and hostile
tests need a 2 GB "config.json"; neither may be held in memory or written to disk. So the Hub
stores a `Blob` — a size, a SHA-256 and `read(start, end)` — and the CDN asks it only for the
range a client requested, in chunks (`iter_range`).

- `BytesBlob`: real bytes; its sha256 is the real digest. `FileBlob`: the same, from a file.
- `SyntheticSafetensors`: a valid safetensors file for a given tensor layout whose data area is
  generated deterministically from a seed, for any byte range.
- `SizedBlob`: `prefix` then `fill` repeated up to `size` bytes (hostile and size tests).

Lazy blobs' `sha256` is a SYNTHETIC id, not the digest of their bytes: computing the real one
would mean generating every byte. The monitor never verifies a source's published sha256, it
only compares it with its registry's, so a unique, stable id behaves exactly like one.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

STREAM_CHUNK = 1 << 20  # bytes the CDN writes at a time: a GET of a huge blob never builds it whole
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@runtime_checkable
class Blob(Protocol):
    """A file's content: `size` bytes, identified by `sha256`, readable by range."""

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end), clipped to the blob."""
        ...


def iter_range(blob: Blob, start: int, end: int, chunk: int = STREAM_CHUNK) -> Iterator[bytes]:
    """Bytes [start, end) of `blob` in pieces of at most `chunk` bytes."""
    for at in range(start, end, chunk):
        yield blob.read(at, min(at + chunk, end))


def git_blob_id(blob: Blob) -> str:
    """The git oid of the blob's bytes; for lazy blobs a synthetic one derived from `sha256`."""
    if isinstance(blob, BytesBlob):
        return hashlib.sha1(b"blob %d\0" % blob.size + blob.data).hexdigest()
    return hashlib.sha1(f"synthetic blob {blob.sha256}".encode()).hexdigest()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """One `bytes=a-b`, `a-` or `-n` range (RFC 9110 §14.1.2) as [start, end).

    None: no usable range (serve the whole body); "unsatisfiable": answer 416.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end + 1


@dataclass(frozen=True)
class BytesBlob:
    """Real bytes, with their real digest."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def read(self, start: int, end: int) -> bytes:
        return self.data[start:end]


@dataclass(frozen=True)
class FileBlob:
    """A file on disk, read by range when asked (`monitor demo` publishes ~0.5 GB this way)."""

    path: str

    @cached_property
    def size(self) -> int:
        return Path(self.path).stat().st_size

    @cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            while chunk := f.read(STREAM_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def read(self, start: int, end: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(max(0, min(end, self.size) - start))


@dataclass(frozen=True)
class SizedBlob:
    """`prefix`, then `fill` repeated, `size` bytes in all: a 2 GB "config.json" costs nothing."""

    size: int
    fill: bytes = b"\0"
    prefix: bytes = b""

    def __post_init__(self) -> None:
        if not self.fill:
            raise ValueError("fill must be at least one byte")

    @cached_property
    def sha256(self) -> str:  # synthetic (module docstring)
        spec = b"sized\0%d\0" % self.size + self.fill + b"\0" + self.prefix
        return hashlib.sha256(spec).hexdigest()

    def read(self, start: int, end: int) -> bytes:
        start, end = max(start, 0), min(end, self.size)
        if end <= start:
            return b""
        head = self.prefix[start:end]
        at = max(start, len(self.prefix))
        if at >= end:
            return head
        phase = (at - len(self.prefix)) % len(self.fill)
        reps = -(-(end - at + phase) // len(self.fill))
        return head + (self.fill * reps)[phase: phase + end - at]


# --- synthetic safetensors -----------------------------------------------------------------------

Layout = Sequence[tuple[str, str, tuple[int, ...]]]  # (name, dtype, shape) in file order
_WIDTH = {"F32": 4, "F16": 2, "BF16": 2}
_CHUNK_ELEMENTS = 1 << 18  # values generated per (seed, tensor, chunk): the unit of laziness


def llama_layout(*, vocab: int, hidden: int, ffn: int, layers: int, dtype: str = "F16",
                 kv_hidden: int | None = None, tied: bool = False) -> list[tuple[str, str, tuple[int, ...]]]:
    """A LLaMA checkpoint's tensors in HF names (`kv_hidden` < hidden for grouped-query attention)."""
    kv = kv_hidden or hidden
    out = [("model.embed_tokens.weight", dtype, (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", dtype, (hidden,)),
                (p + "self_attn.q_proj.weight", dtype, (hidden, hidden)),
                (p + "self_attn.k_proj.weight", dtype, (kv, hidden)),
                (p + "self_attn.v_proj.weight", dtype, (kv, hidden)),
                (p + "self_attn.o_proj.weight", dtype, (hidden, hidden)),
                (p + "post_attention_layernorm.weight", dtype, (hidden,)),
                (p + "mlp.gate_proj.weight", dtype, (ffn, hidden)),
                (p + "mlp.up_proj.weight", dtype, (ffn, hidden)),
                (p + "mlp.down_proj.weight", dtype, (hidden, ffn))]
    out.append(("model.norm.weight", dtype, (hidden,)))
    if not tied:
        out.append(("lm_head.weight", dtype, (vocab, hidden)))
    return out


class SyntheticSafetensors:
    """A safetensors file for `layout` whose values are generated from `seed` on demand.

    Matrices hold N(0, 0.02²) values and 1-D tensors (norm gains) 1 + N(0, 0.02²), in the
    tensor's dtype (F32, F16 or BF16). Each run of `_CHUNK_ELEMENTS` elements of tensor i comes
    from `np.random.default_rng((seed, i, chunk))`, so any range is stable across requests and
    processes, and reading one costs only the chunks it touches. `sha256` is synthetic: the
    sha256 of the layout and seed (module docstring).
    """

    def __init__(self, layout: Layout, seed: int, metadata: dict[str, str] | None = None) -> None:
        for name, dtype, _ in layout:
            if dtype not in _WIDTH:
                raise ValueError(f"{name}: dtype {dtype} not supported (use {', '.join(_WIDTH)})")
        self.layout = [(name, dtype, tuple(shape)) for name, dtype, shape in layout]
        self.seed = seed
        doc: dict = {"__metadata__": {"format": "pt", **(metadata or {})}}
        offset, self._begins = 0, []
        for name, dtype, shape in self.layout:
            self._begins.append(offset)
            nbytes = math.prod(shape) * _WIDTH[dtype]
            doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        text = json.dumps(doc, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data area starts 8-aligned, as safetensors writes it
        self.header = struct.pack("<Q", len(text)) + text
        self.data_size = offset
        self.size = len(self.header) + offset
        self.sha256 = hashlib.sha256(b"synthetic safetensors\0" + self.header + b"\0%d" % seed).hexdigest()

    def read(self, start: int, end: int) -> bytes:
        start, end = max(start, 0), min(end, self.size)
        if end <= start:
            return b""
        out = [self.header[start:end]] if start < len(self.header) else []
        lo, hi = max(start, len(self.header)) - len(self.header), end - len(self.header)
        i = max(bisect.bisect_right(self._begins, lo) - 1, 0)
        while lo < hi and i < len(self.layout):
            name, dtype, shape = self.layout[i]
            t_end = self._begins[i] + math.prod(shape) * _WIDTH[dtype]
            if lo < t_end:
                stop = min(hi, t_end)
                out.append(self._tensor_bytes(i, lo - self._begins[i], stop - self._begins[i]))
                lo = stop
            i += 1
        return b"".join(out)

    def _tensor_bytes(self, i: int, start: int, end: int) -> bytes:
        """Bytes [start, end) of tensor i's data."""
        _, dtype, shape = self.layout[i]
        width = _WIDTH[dtype]
        chunk_bytes = _CHUNK_ELEMENTS * width
        pieces = []
        for c in range(start // chunk_bytes, (end - 1) // chunk_bytes + 1):
            elements = min(_CHUNK_ELEMENTS, math.prod(shape) - c * _CHUNK_ELEMENTS)
            raw = self._values(i, c, elements, dtype, len(shape) == 1)
            base = c * chunk_bytes
            pieces.append(raw[max(start - base, 0): min(end - base, len(raw))])
        return b"".join(pieces)

    def _values(self, i: int, chunk: int, n: int, dtype: str, gain: bool) -> bytes:
        x = np.random.default_rng((self.seed, i, chunk)).standard_normal(n, dtype=np.float32) * 0.02
        if gain:
            x += 1.0
        if dtype == "F32":
            return x.astype("<f4").tobytes()
        if dtype == "F16":
            return x.astype("<f2").tobytes()
        bits = x.view(np.uint32)  # BF16: round to nearest even on the top 16 bits
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
