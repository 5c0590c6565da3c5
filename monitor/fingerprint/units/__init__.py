"""The robust weight fingerprint: anchored hidden units, matched, with a calibrated p-value.

Registration stores the anchored features of every hidden unit of every unit matrix (MLP
up-projections of a transformer, the first layer of a classifier). A suspect is read sparingly
(see `features`): its first m units per matrix. Each suspect unit is matched to its best
registered unit of each layer; the layer's p-value comes from the median unit, the model's from
Fisher's method over layers (`stats`). Which suspect layer matched which of ours is reported, so
a model that keeps some of our layers, in any order, shows which.

What survives by construction: permuted or rotated hidden bases (γ folded or not), permuted or
rescaled MLP units, renamed/resharded tensors, reversed GGUF dims; what survives by degree:
casts, quantization, pruning, fine-tuning, LoRA merges (features move little). Attention heads
are not used: per-head Q/K rotations and head permutations leave MLP units untouched.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitor.fingerprint.architecture import normalise_names
from monitor.fingerprint.units import features, stats
from monitor.fingerprint.units.layout import find_layout
from monitor.formats.base import WeightReader
from monitor.records import FingerprintBlob, TensorInfo

ALGORITHM = "anchored-units"
VERSION = 1
LAYER_MATCH_LOG10 = -6.0  # a layer "matches" below this p (reported per layer)


@dataclass(frozen=True)
class UnitsFingerprint:
    """Unit features per unit matrix, and how they were anchored."""

    anchored_by: str  # "tokens" | "inputs"
    names: tuple[str, ...]  # normalised tensor name per unit matrix
    layers: tuple[np.ndarray, ...]  # (units × k) float32 unit vectors, one per unit matrix
    bytes_read: int  # weight bytes this fingerprint needed

    def to_blob(self) -> FingerprintBlob:
        buf = io.BytesIO()
        meta = {"anchored_by": self.anchored_by, "names": list(self.names), "bytes_read": self.bytes_read}
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                            **{f"u{i}": f.astype(np.float16) for i, f in enumerate(self.layers)})
        return FingerprintBlob(ALGORITHM, VERSION, buf.getvalue())

    @classmethod
    def from_blob(cls, blob: FingerprintBlob) -> UnitsFingerprint:
        with np.load(io.BytesIO(blob.data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            layers = tuple(z[f"u{i}"].astype(np.float32) for i in range(len(meta["names"])))
        return cls(meta["anchored_by"], tuple(meta["names"]), layers, meta["bytes_read"])


def plan(tensors: Sequence[TensorInfo]) -> list[features.ReadSpec]:
    """The exact element ranges a suspect fingerprint reads for this header (empty: no layout)."""
    layout = find_layout(tensors)
    if layout is None:
        return []
    return features.plan(layout, features.suspect_rows(layout, features.total_bytes(tensors)))


def compatibility(tensors: Sequence[TensorInfo]) -> tuple[str, int, int] | None:
    """From tensor shapes alone: (anchoring, feature dimension, unit width), or None.

    Two models can only be compared when the first two agree (`compare` returns None
    otherwise); the unit width (the hidden size for transformers) survives every transform we
    claim to catch — permutations, rotations, casts, quantization, pruning, fine-tuning — so a
    candidate whose width differs from every registered model's is not worth a byte range.
    """
    layout = find_layout(tensors)
    if layout is None:
        return None
    width = layout.units[0].width
    k = features.anchor_window(layout.embedding)[1] if layout.embedding is not None else width
    return layout.anchored_by, k, width


def compute(readers: Sequence[WeightReader], *, owned: bool) -> UnitsFingerprint | None:
    """Fingerprint a model: every unit when `owned`, else only what `plan` lists."""
    infos = [t for r in readers for t in r.tensors()]
    layout = find_layout(infos)
    if layout is None:
        return None
    reader_of = {(t.file, t.name): r for r in readers for t in r.tensors()}
    read = 0

    def values(t: TensorInfo, start: int, count: int) -> np.ndarray:
        nonlocal read
        read += int(count * t.nbytes / max(t.numel, 1))
        return reader_of[(t.file, t.name)].values(t, start, count)

    rows = None if owned else features.suspect_rows(layout, features.total_bytes(infos))
    feats = features.compute(layout, values, rows)
    names = normalise_names([t.name for t in infos])
    return UnitsFingerprint(layout.anchored_by, tuple(names[u.tensor.name] for u in layout.units),
                            tuple(feats), read)


@dataclass(frozen=True)
class LayerMatch:
    """One suspect unit matrix and the registered one its units matched best."""

    suspect_layer: str
    model_layer: str
    log10_p: float
    median_cos: float
    units: int


@dataclass(frozen=True)
class UnitsResult:
    """The combined p-value (log10) and the per-layer evidence behind it."""

    log10_p: float
    layers: tuple[LayerMatch, ...]
    k_eff: float

    @property
    def p_value(self) -> float:
        return 10.0 ** self.log10_p if self.log10_p > -320 else 0.0

    @property
    def matched_layers(self) -> list[LayerMatch]:
        return [m for m in self.layers if m.log10_p < LAYER_MATCH_LOG10]


def compare(owned: UnitsFingerprint, suspect: UnitsFingerprint) -> UnitsResult | None:
    """Match each suspect unit matrix against ours; None when they cannot be compared."""
    if owned.anchored_by != suspect.anchored_by or not owned.layers or not suspect.layers:
        return None
    if owned.layers[0].shape[1] != suspect.layers[0].shape[1]:
        return None  # different anchor dimension: different architecture
    # Effective dimension from our own units (thousands of them; a suspect's few dozen would
    # underestimate it): how spread a chance match's direction really is.
    k_eff = max(2.0, stats.effective_dim(np.concatenate(owned.layers)))
    matches = [_best_layer(i, s, owned, suspect.names[i], k_eff) for i, s in enumerate(suspect.layers)]
    combined = stats.fisher_log10_p([m.log10_p for m in matches])
    return UnitsResult(combined, tuple(matches), k_eff)


def _best_layer(index: int, s: np.ndarray, owned: UnitsFingerprint, name: str,
                k_eff: float) -> LayerMatch:
    """The same-index layer first (the usual case); every layer when that one does not match."""
    order = [index] if index < len(owned.layers) else []
    candidates = [_layer_p(s, owned.layers[j], k_eff) + (j,) for j in order]
    if not candidates or candidates[0][0] >= LAYER_MATCH_LOG10:
        candidates += [_layer_p(s, o, k_eff) + (j,) for j, o in enumerate(owned.layers) if j != index]
    log10_p, median_cos, j = min(candidates)
    return LayerMatch(name, owned.names[j], stats.bonferroni(log10_p, len(owned.layers)),
                      median_cos, len(s))


def _layer_p(s: np.ndarray, o: np.ndarray, k_eff: float) -> tuple[float, float]:
    best = np.abs(s.astype(np.float32) @ o.T).max(axis=1)
    unit_ps = np.array([stats.unit_log10_p(float(c), k_eff, len(o)) for c in best])
    return stats.median_log10_p(unit_ps), float(np.median(best))

