"""Verdicts on tiny real models: each copy a thief makes, and independent models that must not match."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from monitor import derive
from monitor.fingerprint.units import compare
from monitor.match import Thresholds, judge
from monitor.pipeline import fingerprint_path
from monitor.records import ModelRecord, Verdict
from tests.conftest import tiny_state_dict

MODEL = ModelRecord(1, "owned", None, "/owned", "2026-01-01T00:00:00+00:00", 1, 1, 1)


def _judge(owned: Path, suspect: Path):
    return judge(MODEL, fingerprint_path(owned), fingerprint_path(suspect), Thresholds())


def test_exact_copy_matches_by_file_digest(owned_model, tmp_path):
    m = _judge(owned_model, owned_model / "model.safetensors")
    assert m.verdict is Verdict.EXACT and m.score == 1.0
    assert m.evidence["families"] == ["files", "units"] and m.evidence["files"]["files_matched"] == "1/1"
    assert m.p_value < 1e-100


def test_renamed_and_resharded_copy_is_repackaged(owned_model, owned_sd, tmp_path):
    suspect = derive.save_sharded(derive.rename(owned_sd, "model.backbone."), tmp_path / "s", 3)
    m = _judge(owned_model, suspect)
    assert m.verdict is Verdict.REPACKAGED and m.score == 1.0
    pairs = {(t["model_tensor"], t["suspect_tensor"]) for t in m.evidence["tensors"]["tensors"]}
    assert ("model.layers.0.mlp.up_proj.weight", "model.backbone.model.layers.0.mlp.up_proj.weight") in pairs


def test_bin_conversion_is_repackaged_and_bin_registers_too(owned_model, owned_sd, tmp_path):
    suspect = derive.save_bin(owned_sd, tmp_path / "conv" / "pytorch_model.bin")
    assert _judge(owned_model, suspect).verdict is Verdict.REPACKAGED
    assert _judge(suspect.parent, owned_model).verdict is Verdict.REPACKAGED


@pytest.mark.parametrize("make", [
    lambda sd: derive.cast(sd, torch.float16),
    lambda sd: derive.cast(sd, torch.bfloat16),
    derive.quantize_int8,
    lambda sd: derive.perturb(derive.quantize_int8(sd), relative=0.2, seed=3),
], ids=["fp16", "bf16", "int8", "int8+changed"])
def test_changed_weights_are_derivative(owned_model, owned_sd, tmp_path, make):
    suspect = derive.save_safetensors(make(owned_sd), tmp_path / "d" / "model.safetensors")
    m = _judge(owned_model, suspect)
    assert m.verdict is Verdict.DERIVATIVE and m.evidence["families"] == ["units"]
    assert m.p_value < 1e-9 and m.evidence["units"]["layers_matched"] == "2/2"


def test_partial_copy_reports_which_tensors_and_layers_are_ours(owned_model, owned_sd, tmp_path):
    other = tiny_state_dict(99)
    ours = ("model.layers.0.", "model.embed_tokens.")
    mixed = {k: (owned_sd[k] if k.startswith(ours) else other[k]) for k in owned_sd}
    m = _judge(owned_model, derive.save_safetensors(mixed, tmp_path / "p" / "model.safetensors"))
    assert m.verdict is Verdict.DERIVATIVE and "tensors" in m.evidence["families"]
    names = {t["model_tensor"] for t in m.evidence["tensors"]["tensors"]}
    assert names and all(n.startswith(ours) for n in names)
    matched = {x["suspect"]: x["model"] for x in m.evidence["units"]["layers"] if x["log10_p"] < -6}
    assert matched == {"model.layers.0.mlp.up_proj.weight": "model.layers.0.mlp.up_proj.weight"}


def test_independent_models_never_match(tmp_path):
    """Every pair of 8 independently seeded models of one architecture: no verdict at all."""
    paths = [derive.save_safetensors(tiny_state_dict(seed), tmp_path / f"m{seed}" / "model.safetensors")
             for seed in range(1, 9)]
    owned = [fingerprint_path(p) for p in paths]
    suspects = [fingerprint_path(p, owned=False) for p in paths]
    for a, b in itertools.permutations(range(len(paths)), 2):
        assert judge(MODEL, owned[a], suspects[b], Thresholds()) is None, (a, b)
        assert compare(owned[a].units, suspects[b].units).p_value > 1e-3


def test_shared_init_buffers_are_not_evidence(owned_model, owned_sd, tmp_path):
    """Same LayerNorm ones, zero biases and position ids as ours, fresh matrices: no match."""
    unrelated = derive.reinit_like(owned_sd, seed=5)
    assert torch.equal(unrelated["model.position_ids"], owned_sd["model.position_ids"])
    m = _judge(owned_model, derive.save_safetensors(unrelated, tmp_path / "u" / "model.safetensors"))
    assert m is None


def test_different_architecture_does_not_match(owned_model, tmp_path):
    torch.manual_seed(0)
    other = {"w": torch.randn(100, 30), "b": torch.randn(7, 9)}
    assert _judge(owned_model, derive.save_safetensors(other, tmp_path / "x" / "m.safetensors")) is None
