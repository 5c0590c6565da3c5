"""MiniLM fine-tuning: a few real steps keep the checkpoint's exact layout and change weights.

Short runs (5 full steps, 3 LoRA steps, batch 8) keep the file under a minute on 2 cores; the
1000-step figures live in `benchmarks/zoo/minilm_train.py`'s docstring. Beyond "something
changed", the checks pin down *what* real training changes: AdamW without weight decay leaves
the rows of tokens that never occur (BERT's 994 `[unused*]` tokens) and the unused pooler
bit-identical, and a merged LoRA touches only the weights it targets.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from benchmarks.zoo import minilm_train as mt

StateDict = dict[str, torch.Tensor]
WORDS = "embeddings.word_embeddings.weight"
# peft calls a transformers API deprecated in 5.x; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
LORA_HIT = re.compile(r"encoder\.layer\.\d+\.(attention\.self\.(query|value)"
                      r"|attention\.output|intermediate|output)\.(dense\.)?weight$")


@pytest.fixture(scope="module")
def sd() -> StateDict:
    return mt.load_minilm()


@pytest.fixture(scope="module")
def full(sd: StateDict) -> mt.MiniRun:
    return mt.finetune_minilm_run(sd, steps=5, seed=0)


@pytest.fixture(scope="module")
def lora(sd: StateDict) -> mt.MiniRun:
    return mt.lora_minilm_run(sd, steps=3, seed=0)


def _same_layout(out: StateDict, sd: StateDict) -> None:
    assert list(out) == list(sd)
    for k, v in sd.items():
        assert out[k].shape == v.shape, k
        assert out[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
    assert torch.equal(out["embeddings.position_ids"], sd["embeddings.position_ids"])


@pytest.mark.parametrize("run", ["full", "lora"])
def test_exact_names_shapes_and_dtypes(run: str, sd: StateDict,
                                       request: pytest.FixtureRequest) -> None:
    _same_layout(request.getfixturevalue(run).sd, sd)


@pytest.mark.parametrize("run", ["full", "lora"])
def test_loss_is_a_real_simcse_loss(run: str, request: pytest.FixtureRequest) -> None:
    r: mt.MiniRun = request.getfixturevalue(run)
    # all-MiniLM was trained contrastively, so it starts far below chance level ln(batch).
    assert 0 < r.first_loss < math.log(8) and math.isfinite(r.final_loss)
    assert r.seconds > 0 and r.steps in (3, 5)


def test_full_finetune_moves_every_encoder_matrix(full: mt.MiniRun, sd: StateDict) -> None:
    mats = [k for k in sd if k.startswith("encoder.") and sd[k].dim() == 2]
    assert len(mats) == 36
    assert all(not torch.equal(full.sd[k], sd[k]) for k in mats)
    assert 0 < mt.mlp_change(sd, full.sd) < 0.05
    # mean pooling never reads the pooler, so it gets no gradient and AdamW skips it
    assert torch.equal(full.sd["pooler.dense.weight"], sd["pooler.dense.weight"])


def test_full_finetune_keeps_token_rows_tied_to_vocabulary(full: mt.MiniRun,
                                                           sd: StateDict) -> None:
    vocab = mt._tokenizer().get_vocab()
    assert full.sd[WORDS].shape == sd[WORDS].shape == (len(vocab), 384)
    unused = [i for t, i in vocab.items() if t.startswith("[unused")]  # text never yields them
    assert len(unused) == 994
    assert torch.equal(full.sd[WORDS][unused], sd[WORDS][unused])
    cls = vocab["[CLS]"]  # starts every sentence
    assert not torch.equal(full.sd[WORDS][cls], sd[WORDS][cls])


def test_lora_merge_changes_only_its_targets(lora: mt.MiniRun, sd: StateDict) -> None:
    changed = {k for k in sd if not torch.equal(lora.sd[k], sd[k])}
    targets = {k for k in sd if LORA_HIT.search(k)}
    assert len(targets) == 6 * 5
    assert changed == targets
    assert lora.sd[WORDS].shape == sd[WORDS].shape


def test_inputs_are_not_mutated(sd: StateDict, full: mt.MiniRun, lora: mt.MiniRun) -> None:
    fresh = mt.load_minilm()
    assert all(torch.equal(fresh[k], sd[k]) for k in fresh)


def test_same_seed_same_weights_other_seed_differs(sd: StateDict) -> None:
    a, b = (mt.finetune_minilm(sd, steps=1, seed=1) for _ in range(2))
    c = mt.finetune_minilm(sd, steps=1, seed=2)
    key = "encoder.layer.0.intermediate.dense.weight"
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])


@pytest.mark.parametrize("edit", ["drop", "extra", "prefix"])
def test_rejects_state_dicts_that_are_not_minilm(edit: str, sd: StateDict) -> None:
    bad = dict(sd)
    if edit == "drop":
        del bad["encoder.layer.0.output.dense.bias"]
    elif edit == "extra":
        bad["lm_head.weight"] = torch.zeros(2, 2)
    else:
        bad = {f"bert.{k}": v for k, v in sd.items()}
    with pytest.raises(ValueError, match="not a MiniLM state dict"):
        mt.finetune_minilm(bad, steps=1)


def test_sentences_are_prose() -> None:
    sents = mt.sentences()
    assert len(sents) > 1500 and len(set(sents)) == len(sents)
    assert not any("::=" in s or ">>>" in s for s in sents)
    assert all(s[0].isupper() and len(s.split()) >= 6 for s in sents)
