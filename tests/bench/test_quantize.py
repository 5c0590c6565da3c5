"""Quantizers and GGUF export: lossy by the right amount, on the right tensors, in real formats.

Error bounds are relative Frobenius errors on the zoo LM's N(0, 0.02) matrices (measured:
torch.ao int8 ≈ 0.007, int4 asym ≈ 0.08 / 0.09 / 0.10 at group 32 / 64 / 128, GGUF Q8_0 ≈
0.005, Q4_0 ≈ 0.085); the bounds leave ~1.5x headroom and also demand a floor, so an
accidental no-op fails too.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from benchmarks.zoo import gguf_export as ge
from benchmarks.zoo import quantize as qz
from benchmarks.zoo.llama import LMConfig, init_state_dict
from monitor.formats.gguf_file import GGUFReader

StateDict = dict[str, torch.Tensor]
CFG = LMConfig()


@pytest.fixture(scope="module")
def sd() -> StateDict:
    weights = init_state_dict(CFG, 3)
    gen = torch.Generator().manual_seed(3)
    return {k: (1 + 0.3 * torch.randn(v.shape, generator=gen)) if v.dim() == 1 else v
            for k, v in weights.items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _vectors_untouched(out: StateDict, sd: StateDict) -> None:
    assert out.keys() == sd.keys()
    for k, v in sd.items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype
        if v.dim() < 2:
            assert torch.equal(out[k], v), k


# --- torch.ao int8 ------------------------------------------------------------------------------


def test_int8_torch_ao_error_is_small_and_per_channel(sd) -> None:
    out = qz.int8_torch_ao(sd)
    _vectors_untouched(out, sd)
    for k in qz.matrix_names(sd):
        assert 1e-3 < _rel(out[k], sd[k]) < 0.012, k
        # Per output channel: each row has its own step ≈ max|row| / 127.5, error ≤ step / 2.
        amax = sd[k].abs().amax(dim=1, keepdim=True)
        assert ((out[k] - sd[k]).abs() <= amax / 250).all(), k
        assert all(len(torch.unique(row)) <= 256 for row in out[k][:8])


def test_int8_torch_ao_only_named_tensors(sd) -> None:
    name = "model.layers.0.mlp.up_proj.weight"
    out = qz.int8_torch_ao(sd, names=[name])
    assert {k for k in sd if not torch.equal(out[k], sd[k])} == {name}


def test_int8_torch_ao_keeps_half_precision(sd) -> None:
    half = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    out = qz.int8_torch_ao(half)
    assert all(v.dtype == torch.bfloat16 for v in out.values())


# --- int4 groups --------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_group_error_and_codebook(sd, group: int) -> None:
    out = qz.int4_group(sd, group)
    _vectors_untouched(out, sd)
    name = "model.layers.1.mlp.down_proj.weight"
    w, q = sd[name], out[name]
    assert 0.05 < _rel(q, w) < 0.15
    groups_w, groups_q = w.reshape(w.shape[0], -1, group), q.reshape(q.shape[0], -1, group)
    pairs = zip(groups_w[:4].reshape(-1, group), groups_q[:4].reshape(-1, group), strict=True)
    for gw, gq in pairs:
        assert len(torch.unique(gq)) <= 16
        step = (gw.max() - gw.min()) / 15
        assert (gq - gw).abs().max() <= step * 0.5 + 1e-6  # asymmetric: min and max reachable


def test_int4_error_grows_with_group_size(sd) -> None:
    some = {k: sd[k] for k in qz.matrix_names(sd)[2:8]}
    errs = [np.mean([_rel(v, some[k]) for k, v in qz.int4_group(some, g).items()])
            for g in (32, 64, 128)]
    assert errs[0] < errs[1] < errs[2]


def test_int4_symmetric_and_ragged_rows() -> None:
    w = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))  # 100 = 64 + 36
    sym = qz.int4_group({"w": w}, 64, symmetric=True)["w"]
    asym = qz.int4_group({"w": w}, 64)["w"]
    for q in (sym, asym):
        for part in (q[:, :64], q[:, 64:]):
            assert all(len(torch.unique(row)) <= 16 for row in part)
        assert 0.03 < _rel(q, w) < 0.2
    # Symmetric codes are k * scale with k in -8..7: the row's scale divides every value.
    scale = w[:, :64].abs().amax(dim=1, keepdim=True) / 7
    codes = sym[:, :64] / scale
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 8
    with pytest.raises(ValueError):
        qz.int4_group({"w": w}, 16)


# --- magnitude pruning --------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0.3, 0.5, 0.9])
def test_prune_magnitude_zeroes_the_smallest_share(sd, amount: float) -> None:
    out = qz.prune_magnitude(sd, amount)
    _vectors_untouched(out, sd)
    for k in qz.matrix_names(sd):
        w, p = sd[k], out[k]
        zeros = p == 0
        assert zeros.sum().item() == round(amount * w.numel()), k
        assert torch.equal(p[~zeros], w[~zeros])  # survivors untouched
        assert w[zeros].abs().max() <= w[~zeros].abs().min()


# --- GGUF export --------------------------------------------------------------------------------

# (max relative error, min relative error) per stored type, for matrices.
GGUF_BOUNDS = {"F32": (0.0, 0.0), "F16": (1e-3, 1e-5), "Q8_0": (0.01, 1e-3), "Q4_0": (0.13, 0.03)}


@pytest.fixture(scope="module")
def gguf_files(sd, tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("gguf")
    return {q: ge.to_gguf(sd, CFG, folder / f"zoo-{q}.gguf", q) for q in ge.QTYPES}


def _read_with_monitor(path) -> dict[str, torch.Tensor]:
    """Every tensor through the project's own reader, under its HF name, Q/K un-permuted."""
    with GGUFReader(path) as reader:
        infos = reader.tensors()
        to_hf = ge.from_gguf_names(i.name for i in infos)
        result = {}
        for info in infos:
            values = reader.values(info, 0, int(np.prod(info.shape))).reshape(info.shape)
            if to_hf[info.name].endswith(("q_proj.weight", "k_proj.weight")):
                values = ge.unpermute_qk(values, CFG.n_heads)
            result[to_hf[info.name]] = torch.from_numpy(np.ascontiguousarray(values))
        return result


@pytest.mark.parametrize("qtype", list(ge.QTYPES))
def test_gguf_round_trip_through_both_readers(sd, gguf_files, qtype: str) -> None:
    path = gguf_files[qtype]
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    to_hf = ge.from_gguf_names(types)
    assert sorted(to_hf.values()) == sorted(sd)
    for name, kind in types.items():  # prepare_tensors' rule: vectors and positions stay F32
        keep_f32 = sd[to_hf[name]].dim() == 1 or name.startswith("position_embd")
        assert kind == ("F32" if keep_f32 else qtype), name
    hi, lo = GGUF_BOUNDS[qtype]
    ours, theirs = _read_with_monitor(path), ge.from_gguf(path, CFG.n_heads)
    for hf, want in sd.items():
        got = ours[hf]
        assert got.shape == want.shape, hf
        assert torch.equal(got, theirs[hf]), hf  # gguf.quants and our reader agree bit for bit
        if types[ge.to_gguf_name(hf)] == "F32":
            assert torch.equal(got, want), hf
        else:
            assert lo <= _rel(got, want) <= hi, (hf, _rel(got, want))


def test_gguf_q_and_k_rows_are_interleaved_per_head(sd, gguf_files) -> None:
    """Stored row h·hd + 2i + j is HF row h·hd + j·hd/2 + i: rotate-half → interleaved."""
    reader = gguf.GGUFReader(gguf_files["F32"])
    stored = {t.name: np.asarray(t.data) for t in reader.tensors}
    hd = CFG.head_dim
    rows = [h * hd + j * (hd // 2) + i for h in range(CFG.n_heads)
            for i in range(hd // 2) for j in range(2)]
    for kind, hf in (("attn_q", "q_proj"), ("attn_k", "k_proj")):
        src = sd[f"model.layers.2.self_attn.{hf}.weight"].numpy()
        assert np.array_equal(stored[f"blk.2.{kind}.weight"], src[rows])
        assert not np.array_equal(stored[f"blk.2.{kind}.weight"], src)
    v_proj = sd["model.layers.2.self_attn.v_proj.weight"].numpy()
    assert np.array_equal(stored["blk.2.attn_v.weight"], v_proj)  # V is stored as is


def test_gguf_metadata(gguf_files) -> None:
    reader = gguf.GGUFReader(gguf_files["Q8_0"])
    meta = {f.name: f.contents() for f in reader.fields.values()}
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    expected = {"block_count": CFG.n_layers, "embedding_length": CFG.d,
                "feed_forward_length": CFG.ffn, "attention.head_count": CFG.n_heads,
                "context_length": CFG.max_len}
    for key, value in expected.items():
        assert meta[f"llama.{key}"] == value
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(CFG.eps)


def test_gguf_rows_not_divisible_by_32_fall_back_to_f16(tmp_path) -> None:
    cfg = LMConfig(vocab=64, d=64, n_heads=2, ffn=80, n_layers=1, max_len=8)
    path = ge.to_gguf(init_state_dict(cfg, 0), cfg, tmp_path / "odd.gguf", "Q4_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.ffn_down.weight"] == "F16"  # rows of length 80
    assert types["blk.0.ffn_up.weight"] == "Q4_0"   # rows of length 64


def test_gguf_names_map_back_and_reject_strangers() -> None:
    assert ge.to_gguf_name("model.layers.11.mlp.gate_proj.weight") == "blk.11.ffn_gate.weight"
    assert ge.from_gguf_names(["output.weight", "blk.0.attn_output.weight"]) == {
        "output.weight": "lm_head.weight",
        "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight"}
    with pytest.raises(KeyError):
        ge.from_gguf_names(["blk.0.ffn_gate_exps.weight"])
    with pytest.raises(ValueError):
        ge.to_gguf(init_state_dict(CFG, 0), CFG, "unused.gguf", "Q5_K")
