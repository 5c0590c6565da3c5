"""Weight-only compression a thief applies before re-publishing: the real library code paths.

`monitor.derive.quantize_int8` is our own per-channel int8 round trip; the benchmark also needs
what a thief actually runs, so the matcher meets those tools' exact rounding and clipping:

- `int8_torch_ao` — PyTorch's dynamic int8 quantization (`quantize_dynamic` with the
  per-channel qconfig), dequantized back to float: what `torch.ao` ships in a deployed model.
- `int4_group` — 4-bit group-wise quantization along the input dimension, the storage scheme
  of GPTQ/AWQ checkpoints (group 128 by default there; 32..128 here). Asymmetric by default
  (scale and zero point per group, codes 0..15) as GPTQ/AWQ store it; `symmetric=True` gives
  the llama.cpp Q4_0-like variant (codes -8..7, scale = max|w| / 7 — not Q4_0's exact rounding).
- `prune_magnitude` — `torch.nn.utils.prune.l1_unstructured` per matrix, made permanent.

Every function returns a NEW float state dict with the input's names, shapes and dtypes; 1-D
tensors (norms, biases) and integer buffers pass through untouched, as these tools leave them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import prune

StateDict = dict[str, torch.Tensor]

__all__ = ["int8_torch_ao", "int4_group", "prune_magnitude", "matrix_names"]


def matrix_names(sd: StateDict) -> list[str]:
    """Floating-point tensors with at least two dimensions: what weight-only tools compress."""
    return [k for k, v in sd.items() if v.is_floating_point() and v.dim() >= 2]


def _as_2d(v: torch.Tensor) -> torch.Tensor:
    """(out, in...) → (out, in) float32: convolutions and embeddings quantize per output row."""
    return v.detach().float().reshape(v.shape[0], -1)


def int8_torch_ao(sd: StateDict, names: Iterable[str] | None = None) -> StateDict:
    """Dynamic int8 (per output channel) via `torch.ao.quantization.quantize_dynamic`.

    Each selected matrix becomes the weight of an `nn.Linear` (embeddings too: a row-wise
    int8 table is what a thief quantizing "everything" gets); `quantize_dynamic` packs it with
    `per_channel_dynamic_qconfig`, and we dequantize the packed weight back to float. `names`
    defaults to every ≥2-D float tensor.
    """
    chosen = list(names) if names is not None else matrix_names(sd)
    holder = nn.ModuleList()
    for k in chosen:
        w = _as_2d(sd[k])
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        holder.append(lin)
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao (pytorch/ao#2259), but it
        # is still what the installed torch ships and what older deployment scripts call.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        packed = quantize_dynamic(holder, {nn.Linear: per_channel_dynamic_qconfig},
                                  dtype=torch.qint8)
        floats = [m.weight().dequantize() for m in packed]
    result = dict(sd)
    for k, w in zip(chosen, floats, strict=True):
        result[k] = w.reshape(sd[k].shape).to(sd[k].dtype)
    return result


def _int4_rows(w: torch.Tensor, group: int, symmetric: bool) -> torch.Tensor:
    """Quantize-dequantize a (rows, cols) float32 matrix in groups of `group` columns.

    A trailing partial group (cols not divisible by `group`) is its own smaller group, as
    GPTQ's packers refuse to do but a thief's custom script would.
    """
    rows, cols = w.shape
    pad = (-cols) % group
    padded = torch.nn.functional.pad(w, (0, pad))
    g = padded.reshape(rows, -1, group)
    # Padding zeros must not widen a group's range: mask them out of min/max.
    valid = torch.ones(cols + pad, dtype=torch.bool)
    valid[cols:] = False
    valid = valid.reshape(1, -1, group)
    if symmetric:
        amax = g.abs().masked_fill(~valid, 0).amax(-1, keepdim=True)
        scale = (amax / 7).clamp_min(1e-12)
        q = torch.round(g / scale).clamp(-8, 7)
        deq = q * scale
    else:
        lo = g.masked_fill(~valid, float("inf")).amin(-1, keepdim=True)
        hi = g.masked_fill(~valid, float("-inf")).amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp_min(1e-12)
        zero = torch.round(-lo / scale).clamp(0, 15)
        q = (torch.round(g / scale) + zero).clamp(0, 15)
        deq = (q - zero) * scale
    return deq.reshape(rows, -1)[:, :cols]


def int4_group(sd: StateDict, group: int = 64, symmetric: bool = False) -> StateDict:
    """4-bit group-wise round trip of every ≥2-D float tensor along its input dimension.

    Asymmetric (default): per group scale = (max - min) / 15 and integer zero point, codes
    0..15 — GPTQ/AWQ's `zero_point=True` storage. Symmetric: codes -8..7, scale = max|w| / 7.
    """
    if not 32 <= group <= 128:
        # The range GPTQ, AWQ and llama.cpp (32-element blocks) actually ship.
        raise ValueError(f"group must be in 32..128, got {group}")
    result = dict(sd)
    for k in matrix_names(sd):
        v = sd[k]
        result[k] = _int4_rows(_as_2d(v), group, symmetric).reshape(v.shape).to(v.dtype)
    return result


class _Holder(nn.Module):
    """The one-parameter module `torch.nn.utils.prune` needs to act on a bare tensor."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(w.detach().float().clone(), requires_grad=False)


def prune_magnitude(sd: StateDict, amount: float = 0.5) -> StateDict:
    """Zero the `amount` share of smallest-|w| entries of each ≥2-D float tensor.

    Uses `prune.l1_unstructured` (per tensor, so each matrix loses round(amount * numel)
    entries) and `prune.remove` to bake the mask into the weight, as a thief shipping a
    "sparse" model does.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    result = dict(sd)
    for k in matrix_names(sd):
        holder = _Holder(sd[k])
        prune.l1_unstructured(holder, name="weight", amount=amount)
        prune.remove(holder, "weight")
        result[k] = holder.weight.detach().clone().to(sd[k].dtype)
    return result
