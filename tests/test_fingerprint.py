"""Fingerprint properties that matching relies on."""

from __future__ import annotations

import numpy as np
import torch

from monitor import derive
from monitor.fingerprint.architecture import common_prefix, shape_overlap, signature
from monitor.fingerprint.sketch import ROWS, Sketch, plan, row_gram
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
    changed["blocks.1.up.weight"] = owned_sd["blocks.1.up.weight"].clone()
    changed["blocks.1.up.weight"][3, 5] += 1e-3
    a = {t.name: t.digest for t in fingerprint_path(owned_model).tensors}
    b = {t.name: t.digest for t in fingerprint_path(
        derive.save_safetensors(changed, tmp_path / "c" / "m.safetensors")).tensors}
    assert [k for k in a if a[k] != b[k]] == ["blocks.1.up.weight"]


def test_init_like_tensors_are_marked_uninformative(owned_model):
    flags = {t.name: t.constant for t in fingerprint_path(owned_model).tensors}
    assert flags["blocks.0.norm.weight"] and flags["blocks.0.norm.bias"] and flags["position_ids"]
    assert not flags["blocks.0.q.weight"] and not flags["blocks.0.q.bias"]


def test_architecture_signature_survives_prefix_rename_and_dtype_for_shapes():
    a = [TensorInfo("model.layers.0.w", "F32", (4, 8), "f", 0, 128),
         TensorInfo("model.layers.1.w", "F32", (8, 4), "f", 128, 256)]
    b = [TensorInfo("layers.0.w", "F16", (4, 8), "g", 0, 64), TensorInfo("layers.1.w", "F16", (8, 4), "g", 64, 128)]
    assert common_prefix([t.name for t in a]) == "model."
    sa, sb = signature(a), signature(b)
    assert sa.shape_digest == sb.shape_digest and sa.digest != sb.digest
    assert shape_overlap(sa, sb) == 1.0


def test_row_gram_is_invariant_to_input_rotation():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(32, 64))
    q, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    np.testing.assert_allclose(row_gram(w), row_gram(w @ q), atol=1e-5)
    assert not np.allclose(row_gram(w), row_gram(rng.normal(size=(32, 64))), atol=1e-2)


def test_plan_reads_a_row_prefix_of_matrices_only():
    big = TensorInfo("w", "F32", (1000, 50), "f", 0, 200_000)
    specs = plan([big, TensorInfo("b", "F32", (50,), "f", 0, 200), TensorInfo("ids", "I64", (4, 128), "f", 0, 4096)])
    assert [(s.tensor.name, s.start, s.count) for s in specs] == [("w", 0, ROWS * 50)]


def test_sketch_blob_round_trip(owned_model):
    sk = fingerprint_path(owned_model).sketch
    back = Sketch.from_blob(sk.to_blob())
    assert [e.name for e in back.entries] == [e.name for e in sk.entries]
    assert all(np.array_equal(a.gram, b.gram) for a, b in zip(sk.entries, back.entries))


def test_fingerprint_reads_bfloat16(tmp_path, owned_sd):
    p = derive.save_safetensors(derive.cast(owned_sd, torch.bfloat16), tmp_path / "bf" / "m.safetensors")
    fp = fingerprint_path(p)
    assert {t.dtype for t in fp.tensors} >= {"BF16", "I64"}
