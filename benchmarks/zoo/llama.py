"""A tiny LLaMA-style causal LM whose state dict uses Hugging Face LLaMA tensor names.

The robustness benchmark needs real trained language models it can steal, fine-tune, merge
and camouflage in seconds on a CPU, while looking to the fingerprinter exactly like a
`LlamaForCausalLM` checkpoint (same names, same roles, same shapes up to size).

Architecture: pre-RMSNorm blocks, multi-head causal attention without biases, SwiGLU MLP
(`down(silu(gate x) * up x)`, as in LLaMA), untied `lm_head`. One deliberate difference:
LEARNED absolute position embeddings (`model.embed_positions.weight`, added to the token
embeddings) replace RoPE. With RoPE only rotations that commute with the rotary blocks preserve
outputs; with absolute positions ANY per-head orthogonal rotation R of the query and key
projections (W_q -> R W_q, W_k -> R W_k, per head) leaves q·k, hence the model, unchanged —
which is the camouflage attack the benchmark wants to be able to apply exactly.

Two ways to run it, which must agree (tests/bench/test_zoo.py checks):
- `forward(sd, cfg, ids)`: functional, over a plain state dict; the layer count comes from the
  dict so a pruned model (fewer layers) still runs. Camouflage tests use it.
- `TinyLlama`: an nn.Module with nn.Linear / nn.Embedding submodules at the HF module paths, so
  peft LoRA can target `q_proj`, `v_proj`, `up_proj`, `down_proj` by name and training uses
  ordinary autograd/optimizers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LMConfig", "TinyLlama", "forward", "init_state_dict", "expected_shapes"]


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the tiny LM; defaults train in well under a minute on 2 CPU cores."""

    vocab: int = 2048
    """Number of token ids (embedding and lm_head rows)."""
    d: int = 128
    """Hidden size (HF `hidden_size`)."""
    n_heads: int = 4
    """Attention heads; `d` must be divisible by it."""
    ffn: int = 512
    """SwiGLU inner size (HF `intermediate_size`)."""
    n_layers: int = 4
    """Decoder blocks."""
    max_len: int = 64
    """Rows of the learned position table: the longest sequence the model can run."""
    eps: float = 1e-5
    """RMSNorm epsilon (HF `rms_norm_eps`)."""

    @property
    def head_dim(self) -> int:
        """Per-head width; the unit a per-head Q/K rotation acts on."""
        if self.d % self.n_heads:
            raise ValueError(f"d={self.d} not divisible by n_heads={self.n_heads}")
        return self.d // self.n_heads


def expected_shapes(cfg: LMConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict name and its shape, in HF LLaMA naming — the contract the zoo promises."""
    d, f, v = cfg.d, cfg.ffn, cfg.vocab
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (v, d),
        "model.embed_positions.weight": (cfg.max_len, d),
    }
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (d,)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (d, d)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        shapes[p + "mlp.gate_proj.weight"] = (f, d)
        shapes[p + "mlp.up_proj.weight"] = (f, d)
        shapes[p + "mlp.down_proj.weight"] = (d, f)
    shapes["model.norm.weight"] = (d,)
    shapes["lm_head.weight"] = (v, d)
    return shapes


def init_state_dict(cfg: LMConfig, seed: int) -> dict[str, torch.Tensor]:
    """A fresh, seeded initialisation: N(0, 0.02) for matrices (GPT-2/LLaMA's
    `initializer_range`), ones for RMSNorm gains. Independent seeds give the benchmark its
    unrelated "negative" models."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, shape in expected_shapes(cfg).items():
        if len(shape) == 1:
            sd[name] = torch.ones(shape)
        else:
            sd[name] = torch.randn(shape, generator=gen) * 0.02
    return sd


def _rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """LLaMA RMSNorm: x * rsqrt(mean(x^2) + eps) * gain (no mean subtraction, no bias)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain


def _attention(
    x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor,
    n_heads: int,
) -> torch.Tensor:
    """Causal multi-head self-attention with weights in nn.Linear layout (out, in)."""
    b, t, d = x.shape
    hd = d // n_heads

    def heads(w: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w).view(b, t, n_heads, hd).transpose(1, 2)

    y = F.scaled_dot_product_attention(heads(wq), heads(wk), heads(wv), is_causal=True)
    return F.linear(y.transpose(1, 2).reshape(b, t, d), wo)


def _n_layers(sd: dict[str, torch.Tensor]) -> int:
    """Count decoder blocks present in the dict (so pruned models run); indices must be 0..n-1."""
    idx = {int(m.group(1)) for k in sd if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    if idx != set(range(len(idx))):
        raise ValueError(f"layer indices not contiguous from 0: {sorted(idx)}")
    return len(idx)


def forward(sd: dict[str, torch.Tensor], cfg: LMConfig, ids: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) for token ids (B, T), computed straight from a state dict.

    Only `cfg.n_heads` and `cfg.eps` are read from the config; every size comes from the
    tensors, so widened/pruned/camouflaged dicts run without a matching config."""
    t = ids.shape[1]
    x = F.embedding(ids, sd["model.embed_tokens.weight"]) + sd["model.embed_positions.weight"][:t]
    for i in range(_n_layers(sd)):
        p = f"model.layers.{i}."
        h = _rms_norm(x, sd[p + "input_layernorm.weight"], cfg.eps)
        x = x + _attention(
            h, sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"],
            sd[p + "self_attn.v_proj.weight"], sd[p + "self_attn.o_proj.weight"], cfg.n_heads,
        )
        h = _rms_norm(x, sd[p + "post_attention_layernorm.weight"], cfg.eps)
        gate = F.silu(F.linear(h, sd[p + "mlp.gate_proj.weight"]))
        x = x + F.linear(gate * F.linear(h, sd[p + "mlp.up_proj.weight"]),
                         sd[p + "mlp.down_proj.weight"])
    x = _rms_norm(x, sd["model.norm.weight"], cfg.eps)
    return F.linear(x, sd["lm_head.weight"])


# --- Module form: same math, HF module paths, so peft and optimizers see ordinary Linears. ---


class _RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rms_norm(x, self.weight, self.eps)


class _Attention(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q_proj = nn.Linear(cfg.d, cfg.d, bias=False)
        self.k_proj = nn.Linear(cfg.d, cfg.d, bias=False)
        self.v_proj = nn.Linear(cfg.d, cfg.d, bias=False)
        self.o_proj = nn.Linear(cfg.d, cfg.d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Call the Linear modules (not their .weight) so peft's LoRA wrappers take effect.
        b, t, d = x.shape
        hd = d // self.n_heads

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.n_heads, hd).transpose(1, 2)

        y = F.scaled_dot_product_attention(
            heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)), is_causal=True
        )
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class _MLP(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d, cfg.ffn, bias=False)
        self.up_proj = nn.Linear(cfg.d, cfg.ffn, bias=False)
        self.down_proj = nn.Linear(cfg.ffn, cfg.d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.input_layernorm = _RMSNorm(cfg.d, cfg.eps)
        self.self_attn = _Attention(cfg)
        self.post_attention_layernorm = _RMSNorm(cfg.d, cfg.eps)
        self.mlp = _MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class _Decoder(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.d)
        self.embed_positions = nn.Embedding(cfg.max_len, cfg.d)
        self.layers = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.norm = _RMSNorm(cfg.d, cfg.eps)


class TinyLlama(nn.Module):
    """Module form of `forward`; `state_dict()` keys are exactly `expected_shapes(cfg)`.

    Built with the seeded `init_state_dict(cfg, seed)` weights, or pass `sd` to load a
    trained dict (strict: names and shapes must match)."""

    def __init__(self, cfg: LMConfig, seed: int = 0,
                 sd: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = _Decoder(cfg)
        self.lm_head = nn.Linear(cfg.d, cfg.vocab, bias=False)
        self.load_state_dict(sd if sd is not None else init_state_dict(cfg, seed), strict=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V); equals `forward(self.state_dict(), self.cfg, ids)`."""
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device)
        x = self.model.embed_tokens(ids) + self.model.embed_positions(pos)
        for layer in self.model.layers:
            x = layer(x)
        return self.lm_head(self.model.norm(x))

    def plain_state_dict(self) -> dict[str, torch.Tensor]:
        """Detached, contiguous copies — safe to save with safetensors or hand to `forward`."""
        return {k: v.detach().clone().contiguous() for k, v in self.state_dict().items()}
