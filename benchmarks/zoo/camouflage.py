"""Weight-space camouflage: rewrite a stolen model's tensors so they look new, outputs unchanged.

A thief who knows fingerprinting compares weights elementwise can exploit the symmetries of a
transformer: hidden units, heads and the residual basis can be permuted (Git Re-Basin, Ainsworth
et al. 2023), the residual stream rotated once RMSNorm gains are folded away (SliceGPT,
Ashkboos et al. 2024, §3), per-head Q/K rotated (q·k is invariant), and SwiGLU units rescaled.
Each function here returns a NEW state dict computing the same function — except
`append_vocab` (same logits on the old vocabulary) and `keep_layers` (a deliberately damaged
copy). The robustness benchmark applies them to see which fingerprints survive.

Three families, by state-dict naming:
- LLaMA (benchmarks.zoo.llama, HF names): pre-RMSNorm, SwiGLU, learned positions, no biases.
- BERT (all-MiniLM-L6-v2): post-LayerNorm; LayerNorm commutes with permutations but not with
  general rotations (its mean subtraction singles out the all-ones direction), so only
  permutations are offered.
- The zoo classifier (`net.0` 64→256, `net.2` 256→256, `net.4` 256→10, ReLU between).

Arithmetic is done in float64 and cast back, so a rewrite adds no more than one rounding.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from benchmarks.zoo.llama import LMConfig

StateDict = dict[str, torch.Tensor]

__all__ = [
    "permute_residual", "permute_mlp", "permute_heads", "rotate_residual", "rotate_qk",
    "scale_mlp", "append_vocab", "keep_layers",
    "bert_permute_residual", "bert_permute_mlp", "bert_permute_heads", "mlp_permute_hidden",
]

# --- shared machinery --------------------------------------------------------------------------


def _copy(sd: StateDict) -> StateDict:
    return {k: v.clone() for k, v in sd.items()}


def _permutation(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=gen)


def _orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal matrix (float64): QR of a Gaussian, signs fixed by diag(R)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _edit(sd: StateDict, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Apply `fn` to sd[name] in float64 and store it back in the original dtype."""
    sd[name] = fn(sd[name].double()).to(sd[name].dtype).contiguous()


def _permute_units(sd: StateDict, rows: list[str], cols: list[str], idx: torch.Tensor) -> None:
    """Reorder a set of units: dim 0 of `rows` tensors (their producers, incl. 1-D biases and
    gains) and the last dim of `cols` tensors (their consumers), with the same index."""
    for name in rows:
        sd[name] = sd[name].index_select(0, idx).contiguous()
    for name in cols:
        sd[name] = sd[name].index_select(-1, idx).contiguous()


def _layers(sd: StateDict, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in sd if (m := re.match(pattern, k))})


# (regex over names, "rows" | "cols" | None): how the residual basis enters a tensor.
Rules = list[tuple[str, str | None]]
# (block index, generator) → (producer names, consumer names, new unit order).
Plan = Callable[[int, torch.Generator], tuple[list[str], list[str], torch.Tensor]]


def _permute_blocks(sd: StateDict, block: str, seed: int, plan: Plan) -> StateDict:
    """For each block index matched by `block`, `plan(i, gen)` names the producers, consumers
    and unit order; one seeded generator serves all blocks, so each gets its own order."""
    out, gen = _copy(sd), torch.Generator().manual_seed(seed)
    for i in _layers(sd, block):
        _permute_units(out, *plan(i, gen))
    return out


def _permute_residual(sd: StateDict, rules: Rules, seed: int) -> StateDict:
    """One permutation of the residual (hidden) dimension over every tensor `rules` covers."""
    out = _copy(sd)
    rows, cols = _residual_roles(sd, rules)
    d = sd[cols[0]].shape[-1]
    _permute_units(out, rows, cols, _permutation(d, torch.Generator().manual_seed(seed)))
    return out


def _residual_roles(sd: StateDict, rules: Rules) -> tuple[list[str], list[str]]:
    """Split names into residual producers ("rows") and consumers ("cols") by the first
    matching regex; a float tensor no rule covers is an error, not a silent leak of the basis."""
    rows, cols = [], []
    for name, v in sd.items():
        role = next((r for pat, r in rules if re.fullmatch(pat, name)), "unknown")
        if role == "unknown" and v.is_floating_point():
            raise ValueError(f"{name!r}: no rule says how the residual basis enters it")
        if role == "rows":
            rows.append(name)
        elif role == "cols":
            cols.append(name)
    return rows, cols


# --- LLaMA-style (benchmarks.zoo.llama names) ---------------------------------------------------

_L = r"model\.layers\.\d+\."
_LLAMA_RESIDUAL: Rules = [
    (r"model\.embed_(tokens|positions)\.weight|lm_head\.weight", "cols"),
    (_L + r"(self_attn\.[qkv]_proj|mlp\.(gate|up)_proj)\.weight", "cols"),
    (_L + r"(self_attn\.o_proj|mlp\.down_proj)\.weight", "rows"),
    (r"(" + _L + r"(input|post_attention)_layernorm|model\.norm)\.weight", "rows"),
]
_BLOCK = r"model\.layers\.(\d+)\."


def permute_residual(sd: StateDict, seed: int) -> StateDict:
    """One permutation of the hidden dimension, applied to everything that reads or writes the
    residual stream (RMSNorm is permutation-equivariant, its gains permute along)."""
    return _permute_residual(sd, _LLAMA_RESIDUAL, seed)


def permute_mlp(sd: StateDict, seed: int) -> StateDict:
    """Per block, reorder the SwiGLU hidden units: rows of gate/up, columns of down."""
    def plan(i: int, gen: torch.Generator) -> tuple[list[str], list[str], torch.Tensor]:
        p = f"model.layers.{i}.mlp."
        return ([p + "gate_proj.weight", p + "up_proj.weight"], [p + "down_proj.weight"],
                _permutation(sd[p + "up_proj.weight"].shape[0], gen))

    return _permute_blocks(sd, _BLOCK, seed, plan)


def _head_index(n_heads: int, head_dim: int, gen: torch.Generator) -> torch.Tensor:
    """Row index that moves whole heads: head h's rows become block perm[h]'s rows."""
    order = _permutation(n_heads, gen)
    return (order[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def permute_heads(sd: StateDict, cfg: LMConfig, seed: int) -> StateDict:
    """Per block, reorder attention heads: q/k/v row blocks and o column blocks together."""
    def plan(i: int, gen: torch.Generator) -> tuple[list[str], list[str], torch.Tensor]:
        p = f"model.layers.{i}.self_attn."
        return ([p + f"{x}_proj.weight" for x in "qkv"], [p + "o_proj.weight"],
                _head_index(cfg.n_heads, cfg.head_dim, gen))

    return _permute_blocks(sd, _BLOCK, seed, plan)


def rotate_residual(sd: StateDict, seed: int) -> StateDict:
    """Fold every RMSNorm gain into the matrices that read its output, then rotate the residual
    basis by one random orthogonal Q: x → xQ. With unit gains RMSNorm(xQ) = RMSNorm(x)Q, since
    ‖xQ‖ = ‖x‖, so consumers W → WQ and producers W → QᵀW leave the logits unchanged.
    """
    out = _copy(sd)
    folds = {"model.norm.weight": ["lm_head.weight"]}
    for i in _layers(sd, _BLOCK):
        p = f"model.layers.{i}."
        folds[p + "input_layernorm.weight"] = [p + f"self_attn.{x}_proj.weight" for x in "qkv"]
        folds[p + "post_attention_layernorm.weight"] = [p + "mlp.gate_proj.weight",
                                                         p + "mlp.up_proj.weight"]
    for norm, readers in folds.items():
        gain = sd[norm].double()
        for name in readers:
            _edit(out, name, lambda w, g=gain: w * g)
        out[norm] = torch.ones_like(sd[norm])
    q = _orthogonal(sd["model.embed_tokens.weight"].shape[1], torch.Generator().manual_seed(seed))
    rows, cols = _residual_roles(sd, _LLAMA_RESIDUAL)
    for name in cols:
        _edit(out, name, lambda w: w @ q)
    for name in rows:
        if out[name].dim() > 1:  # the gains are all ones now: nothing to rotate
            _edit(out, name, lambda w: q.T @ w)
    return out


def rotate_qk(sd: StateDict, cfg: LMConfig, seed: int) -> StateDict:
    """Per block and head, one random orthogonal R_h on both the query and key rows:
    (R_hᵀq)·(R_hᵀk) = q·k. Exact only because the zoo LM has no RoPE (RoPE commutes with
    rotations only within its 2-D planes)."""
    out, gen = _copy(sd), torch.Generator().manual_seed(seed)
    for i in _layers(sd, _BLOCK):
        r = torch.block_diag(*(_orthogonal(cfg.head_dim, gen) for _ in range(cfg.n_heads)))
        for x in "qk":
            _edit(out, f"model.layers.{i}.self_attn.{x}_proj.weight", lambda w: r.T @ w)
    return out


def scale_mlp(sd: StateDict, c: float) -> StateDict:
    """up rows × c, down columns × 1/c. SwiGLU is linear in the up branch (silu(gate)·up), so
    this is exact for any c ≠ 0 — unlike ReLU/GELU MLPs, where only c > 0 on the input works."""
    if c == 0:
        raise ValueError("c must be non-zero")
    out = _copy(sd)
    for i in _layers(sd, _BLOCK):
        p = f"model.layers.{i}.mlp."
        _edit(out, p + "up_proj.weight", lambda w: w * c)
        _edit(out, p + "down_proj.weight", lambda w: w / c)
    return out


def append_vocab(sd: StateDict, n: int, seed: int) -> StateDict:
    """Add `n` tokens at the end of embed_tokens and lm_head, as `resize_token_embeddings` does
    (transformers' mean_resizing): each new row is the mean row plus noise of 1% of the
    per-column std. Logits of the original tokens are unchanged."""
    out, gen = _copy(sd), torch.Generator().manual_seed(seed)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        w = sd[name].double()
        noise = torch.randn(n, w.shape[1], generator=gen, dtype=torch.float64) * w.std(0) * 0.01
        out[name] = torch.cat([w, w.mean(0) + noise]).to(sd[name].dtype)
    return out


def keep_layers(sd: StateDict, layers: list[int]) -> StateDict:
    """Keep only the listed blocks, renumbered 0..k-1 in the order given (layer dropping)."""
    present = set(_layers(sd, _BLOCK))
    if missing := [i for i in layers if i not in present]:
        raise ValueError(f"layers {missing} not in the state dict (has {sorted(present)})")
    new_index = {old: new for new, old in enumerate(layers)}
    out = {}
    for name, v in sd.items():
        m = re.match(_BLOCK, name)
        if m is None:
            out[name] = v.clone()
        elif int(m.group(1)) in new_index:
            out[f"model.layers.{new_index[int(m.group(1))]}.{name[m.end():]}"] = v.clone()
    return out


# --- BERT (all-MiniLM-L6-v2 names) --------------------------------------------------------------

_E = r"encoder\.layer\.\d+\."
_BERT_RESIDUAL: Rules = [
    (r"embeddings\.(word|position|token_type)_embeddings\.weight", "cols"),
    (_E + r"attention\.self\.(query|key|value)\.weight|" + _E + r"intermediate\.dense\.weight",
     "cols"),
    (r"pooler\.dense\.weight", "cols"),  # the pooler's own output is not in the residual basis
    (r"(embeddings|" + _E + r"(attention\.)?output)\.LayerNorm\.(weight|bias)", "rows"),
    (_E + r"(attention\.)?output\.dense\.(weight|bias)", "rows"),
    (_E + r"(attention\.self\.(query|key|value)|intermediate\.dense)\.bias|pooler\.dense\.bias",
     None),
]
_BERT_BLOCK = r"encoder\.layer\.(\d+)\."


def bert_permute_residual(sd: StateDict, seed: int) -> StateDict:
    """One hidden-dim permutation for the whole encoder. LayerNorm's mean and variance are
    permutation-invariant, so the hidden states come out permuted the same way."""
    return _permute_residual(sd, _BERT_RESIDUAL, seed)


def bert_permute_mlp(sd: StateDict, seed: int) -> StateDict:
    """Per layer, reorder the GELU units: intermediate rows and bias, output.dense columns."""
    def plan(i: int, gen: torch.Generator) -> tuple[list[str], list[str], torch.Tensor]:
        p = f"encoder.layer.{i}."
        return ([p + "intermediate.dense.weight", p + "intermediate.dense.bias"],
                [p + "output.dense.weight"],
                _permutation(sd[p + "intermediate.dense.bias"].shape[0], gen))

    return _permute_blocks(sd, _BERT_BLOCK, seed, plan)


def bert_permute_heads(sd: StateDict, n_heads: int = 12, seed: int = 0) -> StateDict:
    """Per layer, reorder heads: query/key/value row blocks (and biases), attention.output.dense
    column blocks."""
    def plan(i: int, gen: torch.Generator) -> tuple[list[str], list[str], torch.Tensor]:
        p = f"encoder.layer.{i}.attention."
        rows = [p + f"self.{x}.{t}" for x in ("query", "key", "value") for t in ("weight", "bias")]
        head_dim = sd[p + "self.query.bias"].shape[0] // n_heads
        return rows, [p + "output.dense.weight"], _head_index(n_heads, head_dim, gen)

    return _permute_blocks(sd, _BERT_BLOCK, seed, plan)


# --- the zoo classifier (Sequential: net.0 Linear, ReLU, net.2 Linear, ReLU, net.4 Linear) ------


def mlp_permute_hidden(sd: StateDict, seed: int) -> StateDict:
    """Reorder both hidden layers' units (ReLU is elementwise, so it commutes)."""
    out, gen = _copy(sd), torch.Generator().manual_seed(seed)
    for producer, consumer in (("net.0", "net.2"), ("net.2", "net.4")):
        idx = _permutation(sd[f"{producer}.bias"].shape[0], gen)
        _permute_units(out, [f"{producer}.weight", f"{producer}.bias"], [f"{consumer}.weight"], idx)
    return out
