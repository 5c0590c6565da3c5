"""Robust similarity sketch, first version: input-anchored row Grams.

For each weight matrix W (out x in; conv kernels flattened to out x rest) we read only its first
R rows, one contiguous byte range, and keep the cosine Gram matrix of those rows. The Gram
G = Wn Wnᵀ is unchanged by any orthogonal change (permutation, rotation) of the input basis, and
changes little under dtype casts, int8/4-bit quantization, pruning and fine-tuning, while the
Grams of two independently initialised models are unrelated noise. For an embedding table the
rows are token ids, so its Gram is token-anchored and survives any rotation of the hidden basis.

Two sketches are compared tensor by tensor with the Pearson (centred) correlation of their Gram
entries; centring matters because raw cosines of mostly-positive vectors look alike everywhere.
Permuting output rows defeats this version; the robust-fingerprint issue replaces it with
assignment-aligned statistics that carry calibrated p-values.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from monitor.fingerprint.architecture import normalise_names
from monitor.formats.base import WeightReader
from monitor.records import FingerprintBlob, TensorInfo

ALGORITHM = "row-gram"
VERSION = 1
ROWS = 32  # rows read per matrix: 496 Gram entries, enough to tell r=0.9 from noise (sd ~0.045)
MIN_COLS = 8
_NOT_WEIGHTS = {"I64", "I32", "I16", "I8", "U8", "BOOL"}


@dataclass(frozen=True)
class ReadSpec:
    """Elements [start, start+count) of one tensor: the only values this sketch reads."""

    tensor: TensorInfo
    start: int
    count: int


def plan(tensors: Iterable[TensorInfo]) -> list[ReadSpec]:
    """The values the sketch needs for a header: a row prefix of every float weight matrix.

    Crawlers fetch exactly these ranges; nothing else of a suspect's weights is read.
    """
    specs = []
    for t in tensors:
        if len(t.shape) < 2 or t.dtype in _NOT_WEIGHTS:
            continue
        rows, cols = t.shape[0], t.numel // max(t.shape[0], 1)
        if rows < 4 or cols < MIN_COLS:
            continue
        specs.append(ReadSpec(t, 0, min(rows, ROWS) * cols))
    return specs


def row_gram(block: np.ndarray) -> np.ndarray:
    """Upper off-diagonal of the cosine Gram of the rows of `block` (float32)."""
    x = block.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    g = x @ x.T
    iu = np.triu_indices(g.shape[0], k=1)
    return g[iu].astype(np.float32)


@dataclass(frozen=True)
class TensorSketch:
    """One matrix's Gram entries under its normalised name."""

    name: str
    shape: tuple[int, ...]
    gram: np.ndarray


@dataclass(frozen=True)
class Sketch:
    """All matrices of a model; `to_blob` stores it without pickle (npz, allow_pickle=False)."""

    entries: tuple[TensorSketch, ...]

    def to_blob(self) -> FingerprintBlob:
        buf = io.BytesIO()
        meta = [[e.name, list(e.shape)] for e in self.entries]
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                            **{f"g{i}": e.gram for i, e in enumerate(self.entries)})
        return FingerprintBlob(ALGORITHM, VERSION, buf.getvalue())

    @classmethod
    def from_blob(cls, blob: FingerprintBlob) -> Sketch:
        with np.load(io.BytesIO(blob.data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            return cls(tuple(TensorSketch(n, tuple(s), z[f"g{i}"]) for i, (n, s) in enumerate(meta)))


def compute(readers: Sequence[WeightReader]) -> Sketch:
    """Sketch of a model spread over one or more files (shards)."""
    infos = [(r, t) for r in readers for t in r.tensors()]
    names = normalise_names([t.name for _, t in infos])
    by_tensor = {id(t): r for r, t in infos}
    entries = []
    for spec in plan([t for _, t in infos]):
        t = spec.tensor
        values = by_tensor[id(t)].values(t, spec.start, spec.count)
        cols = t.numel // t.shape[0]
        entries.append(TensorSketch(names[t.name], t.shape, row_gram(values.reshape(-1, cols))))
    return Sketch(tuple(entries))


@dataclass(frozen=True)
class Agreement:
    """How one suspect matrix compares with the registered matrix it was paired with."""

    model_tensor: str
    suspect_tensor: str
    correlation: float


def compare(model: Sketch, suspect: Sketch) -> list[Agreement]:
    """Pair matrices by normalised name, then leftovers by shape in file order; correlate Grams."""
    pairs: list[tuple[TensorSketch, TensorSketch]] = []
    by_name = {e.name: e for e in suspect.entries}
    used: set[str] = set()
    leftovers = []
    for m in model.entries:
        s = by_name.get(m.name)
        if s is not None and s.gram.shape == m.gram.shape:
            pairs.append((m, s))
            used.add(s.name)
        else:
            leftovers.append(m)
    free: dict[tuple, list[TensorSketch]] = defaultdict(list)
    for s in suspect.entries:
        if s.name not in used:
            free[(s.shape, s.gram.shape)].append(s)
    for m in leftovers:
        queue = free.get((m.shape, m.gram.shape))
        if queue:
            pairs.append((m, queue.pop(0)))
    return [Agreement(m.name, s.name, _pearson(m.gram, s.gram)) for m, s in pairs]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denom = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / denom) if denom > 0 else 0.0
