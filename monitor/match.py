"""Matching: turn a suspect's fingerprint and one registered model's into a verdict with evidence.

Pure: takes fingerprints, returns `Match` records. Evidence is judged strongest first and the
first family that decides wins:

1. exact       a weight file with the same SHA-256 as one of the model's files;
2. repackaged  (nearly) every non-constant tensor of the model found with identical values,
               whatever its name, shard or file format;
3. derivative  identical values for part of the model, or most paired matrices keep the
               model's row Grams (see fingerprint.sketch) although the values changed.

Constant tensors (LayerNorm ones, zero biases) never count: independently trained models share
them. The thresholds are settings (config [match]); p-values arrive with the robust-fingerprint
issue, so `p_value` is None here rather than a number we cannot justify.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.fingerprint import ModelFingerprint
from monitor.fingerprint.architecture import shape_overlap
from monitor.fingerprint.sketch import compare
from monitor.records import Match, ModelRecord, Verdict

_MIN_EVIDENCE_ELEMENTS = 256  # an identical tensor smaller than this is too weak alone


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds (documented in config/monitor.example.toml under [match])."""

    repackaged_coverage: float = 0.95
    tensor_agreement: float = 0.5
    derivative_share: float = 0.5
    min_agreeing_tensors: int = 2


def judge(model: ModelRecord, owned: ModelFingerprint, suspect: ModelFingerprint,
          thresholds: Thresholds = Thresholds()) -> Match | None:
    """The strongest verdict the evidence supports, or None when nothing ties them."""
    exact = _exact(owned, suspect)
    if exact:
        return _match(model, Verdict.EXACT, exact["byte_share"], "high", ["files"], exact)
    identical = _identical_tensors(owned, suspect)
    if identical["coverage"] >= thresholds.repackaged_coverage:
        return _match(model, Verdict.REPACKAGED, identical["coverage"], "high", ["tensors"],
                      identical)
    if shape_overlap(owned.architecture, suspect.architecture) == 0 and not identical["tensors"]:
        return None  # architecture prefilter: no shared shapes, nothing to compare
    sketch = _sketch(owned, suspect, thresholds)
    if identical["tensors"]:
        families = ["tensors", "sketch"] if sketch["agreeing"] else ["tensors"]
        return _match(model, Verdict.DERIVATIVE, max(identical["coverage"], sketch["share"]),
                      "high", families, {"identical_tensors": identical, "sketch": sketch})
    if (sketch["agreeing"] >= thresholds.min_agreeing_tensors
            and sketch["share"] >= thresholds.derivative_share):
        confidence = "high" if sketch["share"] >= 0.8 else "medium"
        return _match(model, Verdict.DERIVATIVE, sketch["share"], confidence, ["sketch"],
                      {"sketch": sketch})
    return None


def _match(model: ModelRecord, verdict: Verdict, score: float, confidence: str,
           families: list[str], evidence: dict) -> Match:
    """`families` names the fingerprint kinds that agreed, for the reader of the evidence."""
    return Match(model.id, model.name, verdict, round(float(score), 4), confidence, None,
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


def _sketch(owned: ModelFingerprint, suspect: ModelFingerprint, thresholds: Thresholds) -> dict:
    agreements = compare(owned.sketch, suspect.sketch)
    agreeing = [a for a in agreements if a.correlation >= thresholds.tensor_agreement]
    return {"paired": len(agreements), "agreeing": len(agreeing),
            "share": len(agreeing) / len(agreements) if agreements else 0.0,
            "tensors": [{"model_tensor": a.model_tensor, "suspect_tensor": a.suspect_tensor,
                         "correlation": round(a.correlation, 4)} for a in agreements]}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
