"""Exact evidence: SHA-256 of each weight file and of each tensor's canonical values.

The file digest is what a Hugging Face LFS pointer (and a GitHub release asset digest) already
publishes, so a crawler can match an exact copy without reading a weight byte. The tensor digest
hashes dtype, shape and the little-endian C-order values, never the name, file or offset, so a
renamed, resharded or .bin<->.safetensors converted copy still matches tensor by tensor.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from monitor.formats.base import WeightReader
from monitor.records import INTEGER_DTYPES, TensorDigest, TensorInfo, WeightFile

_FILE_CHUNK = 8 << 20


def file_sha256(path: str | Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Streamed SHA-256 of a whole file (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_FILE_CHUNK):
            h.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return h.hexdigest()


def weight_file(reader: WeightReader, on_bytes: Callable[[int], None] | None = None) -> WeightFile:
    """The file-level record for a reader's file."""
    return WeightFile(path=reader.path, size=os.path.getsize(reader.path),
                      sha256=file_sha256(reader.path, on_bytes), format=reader.format)


def tensor_digest(reader: WeightReader, info: TensorInfo) -> TensorDigest:
    """Digest of one tensor, streamed chunk by chunk, and whether it can be evidence at all.

    Some tensors are identical in independently trained models: LayerNorm ones and zero biases
    at initialisation, causal masks, position-id buffers. They are marked `constant` (no
    identity: integer/bool storage, or fewer than 16 distinct values in the first 4,096) so the
    matcher never counts them as evidence of copying.
    """
    h = hashlib.sha256(f"{info.dtype}|{','.join(map(str, info.shape))}|".encode())
    sample = b""
    for chunk in reader.chunks(info):
        h.update(chunk)
        if not sample:
            sample = chunk[:_SAMPLE_ELEMENTS * 8]
    return TensorDigest(name=info.name, dtype=info.dtype, shape=info.shape, file=info.file,
                        begin=info.begin, end=info.end, digest=h.hexdigest(),
                        constant=_uninformative(info, sample))


_SAMPLE_ELEMENTS = 4096
_MIN_DISTINCT = 16


def _uninformative(info: TensorInfo, sample: bytes) -> bool:
    if info.dtype in INTEGER_DTYPES or info.numel == 0:
        return True
    width, rem = divmod(info.nbytes, info.numel)
    if rem or width not in (1, 2, 4, 8):
        return False  # block-quantized (GGUF Q*): learned values, never a mask
    usable = len(sample) - len(sample) % width
    values = np.frombuffer(sample[:usable], dtype=f"<u{width}")[:_SAMPLE_ELEMENTS]
    return len(np.unique(values)) < min(_MIN_DISTINCT, info.numel)
