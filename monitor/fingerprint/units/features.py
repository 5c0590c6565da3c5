"""Anchored unit features: what each hidden unit computes, in coordinates no thief controls.

A unit's weight row w lives in the model's hidden basis, which a thief may permute or rotate
(with the norm's γ folded into the weights first). Project it onto an anchor frame instead:
Z = the token-embedding rows for fixed token ids, normalised as the unit's norm would, then
symmetrically orthonormalised (Z = U Vᵀ for X = U S Vᵀ, which keeps each row tied to its token and
turns with the basis: X R → Z R). The feature (w ⊙ γ) Zᵀ is then unchanged by any orthogonal
change of the hidden basis, by folding γ into w, and by scaling the unit (we keep directions);
permuting units only reorders rows, which matching undoes. For a classifier the anchor is the
input itself (pixels are a fixed basis): the feature is the row.

The suspect side reads only: the anchor rows (one contiguous range), each unit matrix's norm,
and its first m rows (one contiguous range each), m chosen to stay within 1% of the model's
bytes and 16 MiB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from monitor.fingerprint.units.layout import Layout, UnitMatrix
from monitor.records import TensorInfo

ANCHORS = 64  # token rows in the frame: feature dimension
# First anchor token id, by vocabulary size: ids from 1000 on are ordinary, well-trained tokens
# in BPE and WordPiece vocabularies alike (BERT's 1-998 are [unused] rows that training never
# touches and magnitude pruning wipes out). Appended tokens never move it.
ANCHOR_STARTS = ((1000, 1000), (100, 100), (0, 0))  # (minimum vocab beyond the window, start)
MAX_UNITS, MIN_UNITS = 48, 8  # suspect rows read per unit matrix
BYTE_SHARE, BYTE_CAP = 0.01, 16 << 20

_ROW_BLOCK_ELEMENTS = 1 << 22

Values = Callable[[TensorInfo, int, int], np.ndarray]  # (tensor, start, count) -> float32


@dataclass(frozen=True)
class ReadSpec:
    """Elements [start, start+count) of one tensor, in C order: one contiguous byte range."""

    tensor: TensorInfo
    start: int
    count: int

    @property
    def byte_range(self) -> tuple[int, int]:
        """Absolute [begin, end) in the file; rows of block-quantized types stay whole blocks."""
        per_element = self.tensor.nbytes / max(self.tensor.numel, 1)
        return (self.tensor.begin + int(self.start * per_element),
                self.tensor.begin + int(round((self.start + self.count) * per_element)))


def anchor_window(embedding: TensorInfo) -> tuple[int, int]:
    vocab, hidden = embedding.shape
    count = min(ANCHORS, hidden, vocab)
    start = next(start for minimum, start in ANCHOR_STARTS if vocab >= minimum + count)
    return start, count


def suspect_rows(layout: Layout, total_bytes: int) -> int:
    """Rows to read from each unit matrix so the whole read stays within budget."""
    budget = min(BYTE_SHARE * total_bytes, BYTE_CAP) - sum(s.count * _width(s) for s in _fixed(layout))
    per_row = sum(u.tensor.nbytes / u.units for u in layout.units)
    rows = int(budget // per_row) if per_row else 0
    return max(MIN_UNITS, min(MAX_UNITS, rows))


def plan(layout: Layout, rows: int | None) -> list[ReadSpec]:
    """Everything a fingerprint reads; rows=None reads every unit (our own models)."""
    specs = list(_fixed(layout))
    for u in layout.units:
        n = u.units if rows is None else min(rows, u.units)
        specs.append(ReadSpec(u.tensor, 0, n * u.width))
    return specs


def _fixed(layout: Layout) -> list[ReadSpec]:
    specs = []
    if layout.embedding is not None:
        start, count = anchor_window(layout.embedding)
        hidden = layout.embedding.shape[1]
        specs.append(ReadSpec(layout.embedding, start * hidden, count * hidden))
    norms = {t.name: t for u in layout.units for t in (u.norm, u.norm_bias) if t is not None}
    specs += [ReadSpec(t, 0, t.numel) for t in norms.values()]
    return specs


def _width(spec: ReadSpec) -> float:
    return spec.tensor.nbytes / max(spec.tensor.numel, 1)


def anchor_frame(rows: np.ndarray, layer_norm: bool) -> np.ndarray:
    """Normalise anchor rows as the unit's norm does, then orthonormalise them symmetrically."""
    x = rows.astype(np.float64)
    if layer_norm:
        x = x - x.mean(axis=1, keepdims=True)
    x = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-12)
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt


def unit_features(u: UnitMatrix, rows: np.ndarray, values: Values,
                  frames: dict[bool, np.ndarray] | None) -> np.ndarray:
    """Unit-norm feature rows (units × k) for the given weight rows of one unit matrix."""
    w = rows.astype(np.float64)
    if frames is None:
        feats = w
    else:
        if u.norm is not None:
            w = w * values(u.norm, 0, u.norm.numel).astype(np.float64)
        feats = w @ frames[u.norm_bias is not None].T
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return np.divide(feats, norms, out=np.zeros_like(feats), where=norms > 0).astype(np.float32)


def compute(layout: Layout, values: Values, rows: int | None) -> list[np.ndarray]:
    """Features of every unit matrix in `layout` (all units, or the first `rows`)."""
    frames = None
    if layout.embedding is not None:
        start, count = anchor_window(layout.embedding)
        hidden = layout.embedding.shape[1]
        anchors = values(layout.embedding, start * hidden, count * hidden).reshape(count, hidden)
        frames = {ln: anchor_frame(anchors, ln) for ln in (False, True)}
    result = []
    for u in layout.units:
        n = u.units if rows is None else min(rows, u.units)
        step = max(1, _ROW_BLOCK_ELEMENTS // u.width)  # bounded memory on multi-GB matrices
        result.append(np.concatenate([
            unit_features(u, values(u.tensor, r * u.width, min(step, n - r) * u.width)
                          .reshape(-1, u.width), values, frames)
            for r in range(0, n, step)]))
    return result


def total_bytes(tensors: Sequence[TensorInfo]) -> int:
    return sum(t.nbytes for t in tensors)
