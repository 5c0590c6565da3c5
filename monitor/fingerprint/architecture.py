"""Architecture signature: which tensors a model has, by normalised name, shape and dtype.

It is the cheap prefilter between a safetensors header (a few KB) and reading any weights: a
suspect whose tensor shapes share nothing with a registered model cannot be a copy of it. Names
are normalised by dropping the dotted prefix every tensor shares ("model.", "bert.", "module."),
so a prefix rename keeps the signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from monitor.records import FingerprintBlob, TensorInfo

ALGORITHM = "architecture"
VERSION = 1


def common_prefix(names: Sequence[str]) -> str:
    """The dotted wrapper prefix shared by every name ("" if none or a single tensor).

    It stops before a component that holds numbered layers ("layers" in "model.layers.0.w"):
    that is structure, and a suspect with one extra top-level tensor would otherwise disagree.
    """
    if len(names) < 2:
        return ""
    split = [n.split(".") for n in names]
    prefix: list[str] = []
    for i, parts in enumerate(zip(*(s[:-1] for s in split))):
        holds_layers = any(len(s) > i + 1 and s[i + 1].isdigit() for s in split)
        if holds_layers or any(p != parts[0] for p in parts):
            break
        prefix.append(parts[0])
    return ".".join(prefix) + "." if prefix else ""


def normalise_names(names: Sequence[str]) -> dict[str, str]:
    """Map each original name to its name without the shared prefix."""
    prefix = common_prefix(names)
    return {n: n[len(prefix):] for n in names}


@dataclass(frozen=True)
class ArchitectureSignature:
    """Normalised (name, shape, dtype) of every tensor plus two digests for fast equality.

    `shape_digest` ignores dtypes so an fp16 copy of an fp32 model still has the same shapes.
    """

    entries: tuple[tuple[str, tuple[int, ...], str], ...]
    digest: str
    shape_digest: str

    def to_blob(self) -> FingerprintBlob:
        data = json.dumps([[n, list(s), d] for n, s, d in self.entries]).encode()
        return FingerprintBlob(ALGORITHM, VERSION, data)

    @classmethod
    def from_blob(cls, blob: FingerprintBlob) -> ArchitectureSignature:
        entries = [(n, tuple(s), d) for n, s, d in json.loads(blob.data)]
        return _build(entries)


def signature(tensors: Sequence[TensorInfo]) -> ArchitectureSignature:
    """The signature of one model (all its files' tensors together)."""
    names = normalise_names([t.name for t in tensors])
    return _build([(names[t.name], tuple(t.shape), t.dtype) for t in tensors])


def _build(entries: list[tuple[str, tuple[int, ...], str]]) -> ArchitectureSignature:
    entries = sorted(entries)
    full = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
    shapes = hashlib.sha256(json.dumps([(n, s) for n, s, _ in entries]).encode()).hexdigest()
    return ArchitectureSignature(tuple(entries), full, shapes)
