"""Robustness benchmark of the weight fingerprint (issue 3): one command, a markdown report.

    .venv/bin/python benchmarks/robustness.py [--quick] > /tmp/robustness.md

For every derived copy (cases.py) and every pair of independently trained models, it writes the
suspect to disk, fingerprints it the way a scan does (reading only what the fingerprint plans),
judges it against the owned model, and reports per transformation: TPR, p-value range, bytes read
as a share of the model, time; over negatives: FPR and the smallest p-value; the margin between
the weakest positive and the strongest negative; and two baselines (SHA-256 of the files, a raw
per-tensor cosine). Trained models are cached under benchmarks/.cache/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import cases as C  # noqa: E402
from benchmarks.baselines import raw_cosine_match  # noqa: E402
from monitor.match import Thresholds, judge  # noqa: E402
from monitor.pipeline import fingerprint_path  # noqa: E402
from monitor.records import ModelRecord  # noqa: E402


@dataclass(frozen=True)
class Outcome:
    case: C.Case
    matched: bool
    verdict: str
    log10_p: float | None
    layers: str
    share_read: float
    seconds: float
    sha_baseline: bool
    cosine_baseline: bool


def owned_models(quick: bool) -> dict[str, C.StateDict]:
    from benchmarks.zoo.classifier import train_classifier
    from benchmarks.zoo.train import cached, train_lm

    seeds = range(4) if quick else C.SEEDS
    owned = {"MiniLM": C.minilm()}
    for s in seeds:
        owned[f"LM seed {s}"] = cached(f"lm-{s}", lambda s=s: train_lm(C.LM_CFG, s))
        owned[f"classifier seed {s}"] = cached(f"clf-{s}", lambda s=s: train_classifier(s))
    return owned


def all_cases(owned: dict[str, C.StateDict], quick: bool) -> list[C.Case]:
    from benchmarks.zoo.classifier import finetune_classifier
    from benchmarks.zoo.train import cached, finetune_lm, lora_merge_lm

    base = owned["LM seed 0"]
    ft = cached("lm-0-ft1000", lambda: finetune_lm(base, C.LM_CFG, steps=1000))
    lora = cached("lm-0-lora", lambda: lora_merge_lm(base, C.LM_CFG))
    clf_ft = cached("clf-0-ft1000", lambda: finetune_classifier(owned["classifier seed 0"], steps=1000))
    mini_ft, mini_lora = (None, None) if quick else _minilm_derivatives(owned["MiniLM"])
    out = (C.lm_cases(owned, ft, lora, singles_on=1 if quick else 3)
           + C.minilm_cases(owned["MiniLM"], mini_ft, mini_lora)
           + C.classifier_cases(owned, clf_ft) + C.negative_cases(owned))
    return out


def _minilm_derivatives(sd: C.StateDict) -> tuple[C.StateDict, C.StateDict]:
    """SimCSE fine-tuning (1000 AdamW steps) and a merged peft LoRA of the real MiniLM."""
    from benchmarks.zoo.minilm_train import finetune_minilm, lora_minilm
    from benchmarks.zoo.train import cached

    return (cached("minilm-ft1000", lambda: finetune_minilm(sd, steps=1000)),
            cached("minilm-lora", lambda: lora_minilm(sd)))


def evaluate(case: C.Case, owned_fp, owned_sd: C.StateDict, workdir: Path) -> Outcome:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    path = case.write(folder)
    start = time.perf_counter()
    suspect = fingerprint_path(path, owned=False)
    model = ModelRecord(1, case.owned, None, case.owned, "", 0, 0, 0)
    m = judge(model, owned_fp, suspect, Thresholds())
    seconds = time.perf_counter() - start
    units = (m.evidence.get("units") if m else None) or {}
    total = sum(t.end - t.begin for t in suspect.tensors) or 1
    read = suspect.units.bytes_read if suspect.units else 0
    log10_p = units.get("log10_p")
    if m is None and suspect.units and owned_fp.units:
        from monitor.fingerprint.units import compare
        r = compare(owned_fp.units, suspect.units)
        log10_p = r.log10_p if r else None
    sha = bool({f.sha256 for f in suspect.files} & {f.sha256 for f in owned_fp.files})
    cosine = raw_cosine_match(owned_sd, path)
    _rmtree(folder)
    return Outcome(case, m is not None, m.verdict.value if m else "none", log10_p,
                   units.get("layers_matched", "-"), read / total, seconds, sha, cosine)


def _rmtree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def report(outcomes: list[Outcome], seconds: float) -> str:
    rows = defaultdict(list)
    for o in outcomes:
        rows[(o.case.family, o.case.transform, o.case.positive)].append(o)
    lines = ["| family | transformation | n | TPR / FPR | verdicts | log10 p (max … min) | layers | "
             "bytes read | time | SHA-256 baseline | raw-cosine baseline |", "|" + "---|" * 11]
    for (family, transform, positive), os_ in sorted(rows.items(), key=lambda kv: (not kv[0][2], kv[0])):
        ps = [o.log10_p for o in os_ if o.log10_p is not None]
        rate = sum(o.matched for o in os_) / len(os_)
        verdicts = ", ".join(f"{v}×{n}" for v, n in sorted(_count(o.verdict for o in os_).items()))
        lines.append(
            f"| {family} | {transform} | {len(os_)} | {'TPR' if positive else 'FPR'} {rate:.0%} | "
            f"{verdicts} | {_fmt(max(ps)) if ps else '-'} … {_fmt(min(ps)) if ps else '-'} | "
            f"{os_[0].layers if positive else '-'} | {100 * max(o.share_read for o in os_):.2f}% | "
            f"{np.median([o.seconds for o in os_]):.2f} s | "
            f"{sum(o.sha_baseline for o in os_) / len(os_):.0%} | {sum(o.cosine_baseline for o in os_) / len(os_):.0%} |")
    pos = [o for o in outcomes if o.case.positive]
    neg = [o for o in outcomes if not o.case.positive]
    weakest = max((o.log10_p for o in pos if o.log10_p is not None), default=None)
    strongest_neg = min((o.log10_p for o in neg if o.log10_p is not None), default=None)
    summary = [
        "", f"Positives: {len(pos)}, TPR {sum(o.matched for o in pos) / max(len(pos), 1):.1%}, "
        f"weakest log10 p {_fmt(weakest)}.",
        f"Negatives: {len(neg)}, false positives {sum(o.matched for o in neg)}, "
        f"smallest negative log10 p {_fmt(strongest_neg)}.",
        f"Margin (log10): {(strongest_neg - weakest) if weakest is not None and strongest_neg is not None else float('nan'):.1f} "
        "between the strongest negative and the weakest positive units p-value.",
        f"Baselines over positives: SHA-256 TPR {sum(o.sha_baseline for o in pos) / max(len(pos), 1):.1%}, "
        f"raw cosine TPR {sum(o.cosine_baseline for o in pos) / max(len(pos), 1):.1%}; over negatives: "
        f"raw cosine FPR {sum(o.cosine_baseline for o in neg) / max(len(neg), 1):.1%}.",
        f"Total wall time {seconds / 60:.1f} min.",
    ]
    return "\n".join(lines + summary)


def _count(items) -> dict:
    out: dict = defaultdict(int)
    for i in items:
        out[i] += 1
    return out


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return "< -300" if v < -300 else f"{v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 seeds, fewer singles: a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    owned = owned_models(args.quick)
    cases = all_cases(owned, args.quick)
    fps = {}
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, sd in owned.items():
            fps[key] = fingerprint_path(C.safetensors_writer(sd)(Path(tempfile.mkdtemp(dir=tmp))))
        for i, case in enumerate(cases):
            outcomes.append(evaluate(case, fps[case.owned], owned[case.owned], Path(tmp)))
            if i % 50 == 0:
                print(f"{i}/{len(cases)} cases", file=sys.stderr)
    print(report(outcomes, time.perf_counter() - started))
    pos_ok = all(o.matched for o in outcomes if o.case.positive)
    neg_ok = not any(o.matched for o in outcomes if not o.case.positive)
    return 0 if pos_ok and neg_ok else 1


if __name__ == "__main__":
    sys.exit(main())
