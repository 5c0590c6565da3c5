"""Matching: turn a suspect's fingerprint and one registered model's into a verdict with evidence.

Pure: takes fingerprints, returns `Match` records. Evidence is judged strongest first and the
first family that decides wins:

1. exact       a weight file with the same SHA-256 as one of the model's files;
2. repackaged  (nearly) every informative tensor of the model found with identical values,
               whatever its name, shard or file format;
3. derivative  the anchored hidden units match with p below `p_value_threshold` (see
               fingerprint.units: a calibrated p-value against independently trained models),
               or a share of the model's tensors reappears with identical values.

Constant and integer tensors (LayerNorm ones, zero biases, masks, position ids) never count:
independently trained models share them. Every verdict carries the units p-value when the
architecture allows one; the per-layer evidence says which of our layers the suspect carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from monitor.fingerprint import ModelFingerprint
from monitor.fingerprint.units import UnitsResult, compare
from monitor.records import Match, ModelRecord, Verdict

_MIN_EVIDENCE_ELEMENTS = 256  # an identical tensor smaller than this is too weak alone


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds (documented in config/monitor.example.toml under [match])."""

    repackaged_coverage: float = 0.95
    p_value_threshold: float = 1e-6


def judge(model: ModelRecord, owned: ModelFingerprint, suspect: ModelFingerprint,
          thresholds: Thresholds = Thresholds()) -> Match | None:
    """The strongest verdict the evidence supports, or None when nothing ties them."""
    robust = compare(owned.units, suspect.units) if owned.units and suspect.units else None
    evidence: dict = {"units": _units_evidence(robust)} if robust else {}
    p_value = robust.p_value if robust else None
    exact = _exact(owned, suspect)
    if exact:
        return _match(model, Verdict.EXACT, exact["byte_share"], "high", p_value,
                      ["files"] + _agreed(robust, thresholds), {"files": exact, **evidence})
    identical = _identical_tensors(owned, suspect)
    if identical["coverage"] >= thresholds.repackaged_coverage:
        return _match(model, Verdict.REPACKAGED, identical["coverage"], "high", p_value,
                      ["tensors"] + _agreed(robust, thresholds), {"tensors": identical, **evidence})
    families = (["tensors"] if identical["tensors"] else []) + _agreed(robust, thresholds)
    if not families:
        return None
    score = max(identical["coverage"], _layer_share(robust) if "units" in families else 0.0)
    confidence = "high" if identical["tensors"] or (robust and robust.log10_p < -12) else "medium"
    return _match(model, Verdict.DERIVATIVE, score, confidence, p_value, families,
                  {"tensors": identical, **evidence})


def _agreed(robust: UnitsResult | None, thresholds: Thresholds) -> list[str]:
    if robust is None or robust.log10_p >= math.log10(thresholds.p_value_threshold):
        return []
    return ["units"]


def _layer_share(robust: UnitsResult | None) -> float:
    return len(robust.matched_layers) / len(robust.layers) if robust and robust.layers else 0.0


def _units_evidence(robust: UnitsResult) -> dict:
    return {"log10_p": round(robust.log10_p, 2), "k_eff": round(robust.k_eff, 1),
            "layers_matched": f"{len(robust.matched_layers)}/{len(robust.layers)}",
            "layers": [{"suspect": m.suspect_layer, "model": m.model_layer,
                        "log10_p": round(m.log10_p, 2), "median_cos": round(m.median_cos, 4),
                        "units": m.units} for m in robust.layers]}


def _match(model: ModelRecord, verdict: Verdict, score: float, confidence: str,
           p_value: float | None, families: list[str], evidence: dict) -> Match:
    """`families` names the fingerprint kinds that agreed, for the reader of the evidence."""
    return Match(model.id, model.name, verdict, round(float(score), 4), confidence, p_value,
                 {"families": families, **evidence})


def _exact(owned: ModelFingerprint, suspect: ModelFingerprint) -> dict | None:
    by_sha = {f.sha256: f for f in owned.files}
    hits = [(s, by_sha[s.sha256]) for s in suspect.files if s.sha256 in by_sha]
    if not hits:
        return None
    total = sum(f.size for f in owned.files) or 1
    return {"files": [{"suspect": s.path, "model_file": m.path, "sha256": s.sha256, "size": s.size}
                      for s, m in hits],
            "files_matched": f"{len({m.sha256 for _, m in hits})}/{len(owned.files)}",
            "byte_share": sum({m.sha256: m.size for _, m in hits}.values()) / total}


def _identical_tensors(owned: ModelFingerprint, suspect: ModelFingerprint) -> dict:
    """Which of the model's tensors appear with identical values, weighted by bytes."""
    evidence = [t for t in owned.tensors
                if not t.constant and _numel(t.shape) >= _MIN_EVIDENCE_ELEMENTS]
    suspect_by_digest = {t.digest: t.name for t in suspect.tensors}
    total = sum(t.end - t.begin for t in evidence) or 1
    hits = [(t, suspect_by_digest[t.digest]) for t in evidence if t.digest in suspect_by_digest]
    return {"coverage": sum(t.end - t.begin for t, _ in hits) / total,
            "matched": f"{len(hits)}/{len(evidence)}",
            "tensors": [{"model_tensor": t.name, "suspect_tensor": s} for t, s in hits]}


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
