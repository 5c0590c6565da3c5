"""Make the copies a thief would publish, from a state dict: for the demo, tests and benchmarks.

Each function is a real transformation on real tensors (torch), so what the matcher is shown is
what it will meet: renamed and resharded files, format conversions, dtype casts, quantization,
changed weights, and an independently initialised model of the same architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

StateDict = dict[str, torch.Tensor]


def rename(sd: StateDict, prefix: str) -> StateDict:
    return {prefix + k: v for k, v in sd.items()}


def save_sharded(sd: StateDict, folder: Path, shards: int) -> Path:
    """Write `shards` safetensors files plus model.safetensors.index.json, as transformers does."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(sd)
    per = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        part = names[i * per:(i + 1) * per]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: sd[k].contiguous() for k in part}, str(folder / fname))
        weight_map.update({k: fname for k in part})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return folder


def save_bin(sd: StateDict, path: Path) -> Path:
    """A PyTorch checkpoint (zip + pickle of tensors only: loadable with weights_only=True)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in sd.items()}, path)
    return path


def save_safetensors(sd: StateDict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def cast(sd: StateDict, dtype: torch.dtype) -> StateDict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


def quantize_int8(sd: StateDict) -> StateDict:
    """Symmetric per-output-channel int8 round trip (what int8 weight-only quantizers do)."""
    result = {}
    for k, v in sd.items():
        if v.is_floating_point() and v.dim() >= 2:
            w = v.float()
            scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / 127
            result[k] = (torch.round(w / scale).clamp(-127, 127) * scale).to(v.dtype)
        else:
            result[k] = v
    return result


def perturb(sd: StateDict, relative: float, seed: int = 0) -> StateDict:
    """Add Gaussian noise of `relative` x each tensor's std: a stand-in for fine-tuning drift."""
    g = torch.Generator().manual_seed(seed)
    result = {}
    for k, v in sd.items():
        if v.is_floating_point() and v.numel() > 1:
            noise = torch.randn(v.shape, generator=g) * v.float().std() * relative
            result[k] = (v.float() + noise).to(v.dtype)
        else:
            result[k] = v
    return result


def reinit_like(sd: StateDict, seed: int, std: float = 0.02) -> StateDict:
    """An independently initialised model of the same architecture (BERT-style init).

    Matrices ~ N(0, std), LayerNorm weights 1, biases 0: what training from scratch starts from.
    """
    g = torch.Generator().manual_seed(seed)
    result = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            result[k] = v.clone()
        elif v.dim() >= 2:
            result[k] = (torch.randn(v.shape, generator=g) * std).to(v.dtype)
        elif "LayerNorm.weight" in k or k.endswith("norm.weight"):
            result[k] = torch.ones_like(v)
        else:
            result[k] = torch.zeros_like(v)
    return result
