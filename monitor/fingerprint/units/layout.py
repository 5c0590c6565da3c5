"""Which tensors play which role: the anchor rows and the unit matrices of a model.

The robust fingerprint needs, per model, (a) an anchor: a set of vectors tied to the outside
world rather than to the model's arbitrary hidden basis — token-embedding rows for fixed token
ids, or the fixed input features of a classifier — and (b) unit matrices: weights whose rows
are hidden units (MLP up-projections, a classifier's first layer), each with the norm that
precedes it. Roles come from tensor names, for the naming schemes in use: Hugging Face LLaMA
family, GGUF (llama.cpp), BERT; a model with no token embedding falls back to its
input-anchored first layers (a classifier's pixels or features are a fixed basis).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from monitor.records import FLOAT_DTYPES, INTEGER_DTYPES, TensorInfo

EMBEDDING = re.compile(r"(^|\.)(embed_tokens|word_embeddings|tok_embeddings|wte|token_embd)\.weight$")
# (unit-matrix pattern, the norm that feeds it: a template on the layer index)
_UNIT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(^|\.)layers\.(\d+)\.mlp\.up_proj\.weight$"), "layers.{i}.post_attention_layernorm"),
    (re.compile(r"(^|\.)blk\.(\d+)\.ffn_up\.weight$"), "blk.{i}.ffn_norm"),
    (re.compile(r"(^|\.)layer\.(\d+)\.intermediate\.dense\.weight$"),
     "layer.{i}.attention.output.LayerNorm"),
    (re.compile(r"(^|\.)layers\.(\d+)\.feed_forward\.w3\.weight$"), "layers.{i}.ffn_norm"),
)


@dataclass(frozen=True)
class UnitMatrix:
    """A weight matrix whose rows are hidden units, in a basis the anchor can express."""

    tensor: TensorInfo
    layer: int  # position among the model's unit matrices (block index for transformers)
    norm: TensorInfo | None  # γ of the norm that feeds it (None: no norm)
    norm_bias: TensorInfo | None  # β: present means LayerNorm (centre), absent RMSNorm

    @property
    def units(self) -> int:
        return self.tensor.shape[0]

    @property
    def width(self) -> int:
        return self.tensor.numel // self.tensor.shape[0]


@dataclass(frozen=True)
class Layout:
    """The roles found in one model; `embedding` None means input-anchored unit matrices."""

    embedding: TensorInfo | None
    units: tuple[UnitMatrix, ...]

    @property
    def anchored_by(self) -> str:
        return "tokens" if self.embedding is not None else "inputs"


def find_layout(tensors: Sequence[TensorInfo]) -> Layout | None:
    """The layout of a model, or None when it has no role we know how to fingerprint."""
    by_name = {t.name: t for t in tensors}
    embedding = next((t for t in tensors if EMBEDDING.search(t.name) and len(t.shape) == 2
                      and t.dtype not in INTEGER_DTYPES), None)
    if embedding is not None:
        units = _transformer_units(tensors, by_name, embedding)
        return Layout(embedding, tuple(units)) if units else None
    units = _input_anchored(tensors)
    return Layout(None, tuple(units)) if units else None


def _transformer_units(tensors: Sequence[TensorInfo], by_name: dict[str, TensorInfo],
                       embedding: TensorInfo) -> list[UnitMatrix]:
    hidden = embedding.shape[1]
    found = []
    for t in tensors:
        for pattern, norm_template in _UNIT_RULES:
            m = pattern.search(t.name)
            if m is None or len(t.shape) != 2 or t.shape[1] != hidden:
                continue
            index = int(m.group(2))
            prefix = t.name[:m.start()] + (m.group(1) or "")
            norm_name = prefix + norm_template.format(i=index)
            found.append((index, UnitMatrix(t, index, by_name.get(norm_name + ".weight"),
                                            by_name.get(norm_name + ".bias"))))
            break
    found.sort(key=lambda pair: pair[0])
    return [UnitMatrix(u.tensor, position, u.norm, u.norm_bias)
            for position, (_, u) in enumerate(found)]


def _input_anchored(tensors: Sequence[TensorInfo]) -> list[UnitMatrix]:
    """Float matrices whose input width no other matrix produces: they read the raw input.

    For an MLP 64→256→256→10 that is the first layer (64 columns, and no matrix outputs 64):
    its columns are pixels, a basis no thief can permute without changing the input format.
    """
    mats = [t for t in tensors if len(t.shape) >= 2 and t.dtype in FLOAT_DTYPES and t.shape[0] >= 8]
    produced = {t.shape[0] for t in mats}
    first = [t for t in mats if (t.numel // t.shape[0]) not in produced]
    return [UnitMatrix(t, i, None, None) for i, t in enumerate(first)]
