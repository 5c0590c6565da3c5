"""Export the zoo LM to GGUF the way llama.cpp's `convert_hf_to_gguf.py` does for LLaMA.

GGUF is how stolen LLMs are most often re-published, and the conversion changes more than the
container: tensors are renamed (`model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`),
matrices may be quantized, and — the trap for a fingerprinter — the rows of Q and K are
permuted per head. HF checkpoints use the "rotate-half" RoPE layout; llama.cpp's kernel wants
interleaved pairs, so the converter applies `LlamaModel.permute` (convert_hf_to_gguf.py):

    w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

to `q_proj` with (n_head, n_head) and `k_proj` with (n_head, n_head_kv). Our zoo LM has no RoPE
(learned positions), but a thief's converter does not know that and applies it anyway, so we do.

Tensor types follow `ModelBase.prepare_tensors`: 1-D tensors, `*_norm.weight` and the position
table stay F32; other matrices take the requested type; a row length that the block size (32)
does not divide falls back to F16 (the converter's `QuantError` branch). Q4_0 is applied to
every matrix alike, as `llama-quantize --pure` would (the default Q4_0 mix keeps output.weight
at Q6_K, which the `gguf` package cannot quantize).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import gguf
import numpy as np
import torch

from benchmarks.zoo.llama import LMConfig

StateDict = dict[str, torch.Tensor]

__all__ = ["QTYPES", "to_gguf", "from_gguf", "from_gguf_names", "to_gguf_name",
           "permute_qk", "unpermute_qk"]

T = gguf.MODEL_TENSOR
# HF suffix (after `model.layers.{i}.`) → GGUF tensor kind, per gguf's LLaMA tensor map.
_BLOCK = {
    "input_layernorm.weight": T.ATTN_NORM,
    "self_attn.q_proj.weight": T.ATTN_Q,
    "self_attn.k_proj.weight": T.ATTN_K,
    "self_attn.v_proj.weight": T.ATTN_V,
    "self_attn.o_proj.weight": T.ATTN_OUT,
    "post_attention_layernorm.weight": T.FFN_NORM,
    "mlp.gate_proj.weight": T.FFN_GATE,
    "mlp.up_proj.weight": T.FFN_UP,
    "mlp.down_proj.weight": T.FFN_DOWN,
}
_GLOBAL = {
    "model.embed_tokens.weight": T.TOKEN_EMBD,
    "model.embed_positions.weight": T.POS_EMBD,  # not in LLaMA; GPT-2's name for the same table
    "model.norm.weight": T.OUTPUT_NORM,
    "lm_head.weight": T.OUTPUT,
}
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")

QTYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "F32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "Q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}


def to_gguf_name(hf: str) -> str:
    """The GGUF tensor name llama.cpp's converter gives an HF LLaMA tensor."""
    if hf in _GLOBAL:
        return gguf.TENSOR_NAMES[_GLOBAL[hf]] + ".weight"
    m = _LAYER.fullmatch(hf)
    if m is None or m.group(2) not in _BLOCK:
        raise KeyError(f"no GGUF name for {hf!r}")
    return gguf.TENSOR_NAMES[_BLOCK[m.group(2)]].format(bid=int(m.group(1))) + ".weight"


def from_gguf_names(names: Iterable[str]) -> dict[str, str]:
    """GGUF name → HF name, for every name given (KeyError on one we never write)."""
    back = {gguf.TENSOR_NAMES[kind] + ".weight": hf for hf, kind in _GLOBAL.items()}
    block = {gguf.TENSOR_NAMES[kind].replace("blk.{bid}.", "") + ".weight": hf
             for hf, kind in _BLOCK.items()}
    result = {}
    for name in names:
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
        if m is not None and m.group(2) in block:
            result[name] = f"model.layers.{m.group(1)}.{block[m.group(2)]}"
        elif name in back:
            result[name] = back[name]
        else:
            raise KeyError(f"no HF name for GGUF tensor {name!r}")
    return result


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's `LlamaModel.permute` (n_head_kv == n_head: no GQA in the zoo)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of `permute_qk`: interleaved pairs back to HF's rotate-half row order."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _stored_type(gguf_name: str, data: np.ndarray,
                 want: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """`prepare_tensors`' rule: vectors, norms and position tables are always F32."""
    if (data.ndim <= 1 or gguf_name.endswith("_norm.weight")
            or gguf_name.startswith("position_embd")):
        return gguf.GGMLQuantizationType.F32
    return want


def to_gguf(sd: StateDict, cfg: LMConfig, path: str | Path, qtype: str) -> Path:
    """Write `sd` as a llama-architecture GGUF file of type `qtype` (F32, F16, Q8_0, Q4_0).

    Layer count and sizes come from the tensors (so pruned/widened dicts export too); only the
    head count and epsilon come from `cfg`.
    """
    if qtype not in QTYPES:
        raise ValueError(f"qtype must be one of {sorted(QTYPES)}, got {qtype!r}")
    want, ftype = QTYPES[qtype]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_layers = len({m.group(1) for k in sd if (m := _LAYER.fullmatch(k))})
    vocab, d = sd["model.embed_tokens.weight"].shape
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name("provenance-monitor zoo LM")
    writer.add_vocab_size(int(vocab))
    writer.add_context_length(int(sd["model.embed_positions.weight"].shape[0]))
    writer.add_embedding_length(int(d))
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(sd["model.layers.0.mlp.up_proj.weight"].shape[0]))
    writer.add_rope_dimension_count(int(d) // cfg.n_heads)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_heads)
    writer.add_layer_norm_rms_eps(cfg.eps)
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for hf, tensor in sd.items():
        name = to_gguf_name(hf)
        data = tensor.detach().float().numpy()
        if hf.endswith(("q_proj.weight", "k_proj.weight")):
            data = permute_qk(data, cfg.n_heads)
        stored = _stored_type(name, data, want)
        try:
            raw = gguf.quants.quantize(np.ascontiguousarray(data), stored)
        except gguf.QuantError:
            stored = gguf.GGMLQuantizationType.F16
            raw = gguf.quants.quantize(data, stored)
        writer.add_tensor(name, raw, raw_dtype=stored)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def from_gguf(path: str | Path, n_heads: int) -> StateDict:
    """Read a file written by `to_gguf` back into HF names: dequantized, Q/K un-permuted.

    The inverse a defender (or our tests) applies to compare a GGUF with its source.
    """
    reader = gguf.GGUFReader(path, "r")
    names = from_gguf_names(t.name for t in reader.tensors)
    sd: StateDict = {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        hf = names[t.name]
        if hf.endswith(("q_proj.weight", "k_proj.weight")):
            values = unpermute_qk(values, n_heads)
        sd[hf] = torch.from_numpy(np.array(values, dtype=np.float32))
    return sd
