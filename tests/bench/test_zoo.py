"""The model zoo trains real models: fast checks on tiny configs (whole file well under 60 s).

Each test compares against an independent expectation (functional vs module forward, loss
before vs after, weights before vs after), so a broken zoo fails here rather than silently
producing untrained or unchanged "derived" models for the robustness benchmark.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.zoo import classifier as clf
from benchmarks.zoo import text
from benchmarks.zoo.llama import LMConfig, TinyLlama, expected_shapes, forward, init_state_dict
from benchmarks.zoo.train import (cached, finetune_run, lm_loss, lora_run, pretrain_run)

SMALL = LMConfig(vocab=256, d=32, n_heads=2, ffn=64, n_layers=2, max_len=16)


def test_init_state_dict_has_hf_llama_names_and_shapes() -> None:
    cfg = LMConfig()
    sd = init_state_dict(cfg, seed=3)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_shapes(cfg)
    assert "model.layers.3.self_attn.q_proj.weight" in sd and "lm_head.weight" in sd
    assert sd["model.layers.0.self_attn.q_proj.weight"].shape == (128, 128)
    assert sd["model.layers.0.mlp.down_proj.weight"].shape == (128, 512)
    assert sd["model.embed_positions.weight"].shape == (64, 128)
    assert len(sd) == 2 + 9 * 4 + 2
    assert torch.equal(sd["model.norm.weight"], torch.ones(128))
    std = sd["model.layers.1.mlp.up_proj.weight"].std().item()
    assert 0.018 < std < 0.022
    again = init_state_dict(cfg, seed=3)
    other = init_state_dict(cfg, seed=4)
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    assert not torch.equal(sd["lm_head.weight"], other["lm_head.weight"])


def test_module_forward_equals_functional_forward() -> None:
    cfg = LMConfig()
    model = TinyLlama(cfg, seed=1)
    assert list(model.state_dict()) == list(expected_shapes(cfg))
    # Random norm gains so a norm applied in the wrong place would show up.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    ids = torch.randint(0, cfg.vocab, (2, cfg.max_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(ids)
        ref = forward(model.state_dict(), cfg, ids)
    assert out.shape == (2, cfg.max_len, cfg.vocab)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_forward_is_causal_and_runs_with_fewer_layers() -> None:
    sd = init_state_dict(SMALL, seed=0)
    sd = {k: v * 10 if v.dim() == 2 else v for k, v in sd.items()}  # make logits non-trivial
    ids = torch.randint(0, SMALL.vocab, (1, 8))
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % SMALL.vocab
    a, b = forward(sd, SMALL, ids), forward(sd, SMALL, changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    one_layer = {k: v for k, v in sd.items() if not k.startswith("model.layers.1.")}
    assert forward(one_layer, SMALL, ids).shape == (1, 8, SMALL.vocab)
    assert not torch.allclose(forward(one_layer, SMALL, ids), a)
    gap = {k: v for k, v in sd.items() if not k.startswith("model.layers.0.")}
    with pytest.raises(ValueError):
        forward(gap, SMALL, ids)


def test_corpus_is_real_deterministic_and_split_disjointly() -> None:
    train, heldout, itos = text.corpus(SMALL.vocab)
    train2, heldout2, itos2 = text.corpus(SMALL.vocab)
    assert torch.equal(train, train2) and torch.equal(heldout, heldout2) and itos == itos2
    assert itos[:2] == [text.UNK, text.EOS] and len(itos) == SMALL.vocab == len(set(itos))
    assert {"the", "is", "class", "object"} <= set(itos)
    assert len(train) > 50_000 and len(heldout) > 5_000
    assert 0.05 < len(heldout) / (len(train) + len(heldout)) < 0.2
    assert int(train.max()) < SMALL.vocab and int(heldout.min()) >= 0
    train_keys, heldout_keys = text.split_topics()
    assert not set(train_keys) & set(heldout_keys)
    assert max(train_keys) < min(heldout_keys)
    # A larger vocabulary extends the smaller one (frequency order, ties by string).
    assert text.corpus(512)[2][: SMALL.vocab] == itos
    assert text.tokenize('If x_1 > 10: print("hi")\n*****') == [
        "if", "x_1", ">", "10", ":", "print", "(", '"', "hi", '"', ")", "*****"]


def test_short_pretraining_lowers_loss_below_unigram() -> None:
    run = pretrain_run(SMALL, seed=0, steps=300, batch=16, lr=1e-2)
    assert run.first_loss > 5.0  # ~ln(256) for an untrained model
    assert run.final_loss < run.first_loss - 1.5
    train, _, _ = text.corpus(SMALL.vocab)
    counts = torch.bincount(train, minlength=SMALL.vocab).float()
    p = counts[counts > 0] / counts.sum()
    unigram = -(p * p.log()).sum().item()
    assert lm_loss(run.sd, SMALL, train) < unigram - 0.3
    again = pretrain_run(SMALL, seed=0, steps=3, batch=4)
    assert torch.equal(again.sd["lm_head.weight"],
                       pretrain_run(SMALL, seed=0, steps=3, batch=4).sd["lm_head.weight"])


def test_finetune_moves_every_tensor_and_fits_heldout() -> None:
    base = pretrain_run(SMALL, seed=1, steps=30, batch=8, lr=1e-2).sd
    run = finetune_run(base, SMALL, steps=40, lr=3e-3, seed=0)
    assert set(run.sd) == set(base)
    assert all(not torch.equal(run.sd[k], base[k]) for k in base)
    _, heldout, _ = text.corpus(SMALL.vocab)
    assert lm_loss(run.sd, SMALL, heldout) < lm_loss(base, SMALL, heldout)


def test_lora_merge_changes_only_targets_and_keeps_names() -> None:
    base = init_state_dict(SMALL, seed=2)
    run = lora_run(base, SMALL, steps=3, r=4, lr=1e-2, seed=0, batch=4)
    assert list(run.sd) == list(base)
    assert all(run.sd[k].shape == base[k].shape for k in base)
    changed = {k for k in base if not torch.equal(run.sd[k], base[k])}
    targets = {k for k in base
               if any(f".{t}." in k for t in ("q_proj", "v_proj", "up_proj", "down_proj"))}
    assert changed == targets


def test_cached_builds_once_then_loads(tmp_path) -> None:
    calls: list[int] = []

    def make() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"w": torch.arange(6.0).view(2, 3)}

    first = cached("thing", make, directory=tmp_path)
    second = cached("thing", make, directory=tmp_path)
    assert calls == [1]
    assert torch.equal(first["w"], second["w"])
    assert (tmp_path / "thing.safetensors").exists()
    with pytest.raises(ValueError):
        cached("../escape", make, directory=tmp_path)


def test_classifier_trains_above_chance_and_finetune_changes_it() -> None:
    sd = clf.train_classifier(seed=0, epochs=2)
    assert list(sd) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
                        "net.4.weight", "net.4.bias"]
    assert sd["net.2.weight"].shape == (256, 256) and sd["net.4.weight"].shape == (10, 256)
    assert [type(m).__name__ for m in clf.build(0)] == [
        "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert clf.accuracy(sd) > 0.7  # chance is 0.1
    assert clf.accuracy(clf.train_classifier(seed=0, epochs=0)) < 0.3
    tuned = clf.finetune_classifier(sd, steps=20, seed=0)
    assert not torch.equal(tuned["net.0.weight"], sd["net.0.weight"])
    parts = clf.splits()
    n = sum(len(y) for _, y in parts.values())
    assert n == 1797 and len(parts["test"][1]) > 300
