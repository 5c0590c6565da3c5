"""Fingerprint properties that matching relies on."""

from __future__ import annotations

import torch

from monitor import derive
from monitor.fingerprint.architecture import common_prefix, signature
from monitor.pipeline import fingerprint_path
from monitor.records import TensorInfo


def test_tensor_digests_ignore_names_shards_and_format(owned_model, owned_sd, tmp_path):
    base = fingerprint_path(owned_model)
    sharded = fingerprint_path(derive.save_sharded(derive.rename(owned_sd, "x."), tmp_path / "s", 2))
    binary = fingerprint_path(derive.save_bin(owned_sd, tmp_path / "b" / "pytorch_model.bin"))
    digests = {t.digest for t in base.tensors}
    assert digests == {t.digest for t in sharded.tensors} == {t.digest for t in binary.tensors}
    assert base.files[0].sha256 != sharded.files[0].sha256


def test_tensor_digest_changes_with_one_value(owned_model, owned_sd, tmp_path):
    changed = dict(owned_sd)
    name = "model.layers.1.mlp.up_proj.weight"
    changed[name] = owned_sd[name].clone()
    changed[name][3, 5] += 1e-3
    a = {t.name: t.digest for t in fingerprint_path(owned_model).tensors}
    b = {t.name: t.digest for t in fingerprint_path(
        derive.save_safetensors(changed, tmp_path / "c" / "m.safetensors")).tensors}
    assert [k for k in a if a[k] != b[k]] == [name]


def test_init_like_tensors_are_marked_uninformative(owned_model):
    flags = {t.name: t.constant for t in fingerprint_path(owned_model).tensors}
    assert flags["model.layers.0.input_layernorm.weight"] and flags["model.position_ids"]
    assert not flags["model.layers.0.self_attn.q_proj.weight"]


def test_architecture_signature_survives_prefix_rename_and_dtype_for_shapes():
    a = [TensorInfo("model.layers.0.w", "F32", (4, 8), "f", 0, 128),
         TensorInfo("model.layers.1.w", "F32", (8, 4), "f", 128, 256)]
    b = [TensorInfo("layers.0.w", "F16", (4, 8), "g", 0, 64), TensorInfo("layers.1.w", "F16", (8, 4), "g", 64, 128)]
    assert common_prefix([t.name for t in a]) == "model."
    sa, sb = signature(a), signature(b)
    assert sa.shape_digest == sb.shape_digest and sa.digest != sb.digest


def test_fingerprint_reads_bfloat16(tmp_path, owned_sd):
    p = derive.save_safetensors(derive.cast(owned_sd, torch.bfloat16), tmp_path / "bf" / "m.safetensors")
    fp = fingerprint_path(p)
    assert {t.dtype for t in fp.tensors} >= {"BF16", "I64"}


def test_unsigned_integer_storage_is_never_evidence(tmp_path):
    ids = torch.arange(5000, dtype=torch.int64).to(torch.uint32).reshape(50, 100)
    path = derive.save_safetensors({"token_ids": ids, "w": torch.randn(50, 100)}, tmp_path / "m.safetensors")
    flags = {t.name: t.constant for t in fingerprint_path(path).tensors}
    assert flags == {"token_ids": True, "w": False}
