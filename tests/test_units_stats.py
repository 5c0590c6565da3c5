"""The anchored-units statistics: calibrated under the null, exact in the tail, cheap to read."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats as sps

from monitor.fingerprint.units import stats
from monitor.fingerprint.units.features import BYTE_CAP, suspect_rows, plan
from monitor.fingerprint.units.layout import find_layout
from monitor.records import TensorInfo


def _random_units(rng, n, k):
    x = rng.standard_normal((n, k))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_unit_p_value_is_calibrated_for_random_directions():
    rng = np.random.default_rng(0)
    k, n = 32, 128
    owned = _random_units(rng, n, k)
    ps = [stats.unit_log10_p(float(np.abs(owned @ s).max()), k, n) for s in _random_units(rng, 2000, k)]
    share = np.mean(np.array(ps) < -2)
    assert share <= 0.015  # P(p < 0.01) <= 0.01 up to Monte Carlo noise (Bonferroni is conservative)


def test_layer_p_value_is_calibrated_under_the_null():
    rng = np.random.default_rng(1)
    k, n, m = 24, 200, 8
    owned = _random_units(rng, n, k)
    layer_ps = []
    for _ in range(2000):
        best = np.abs(_random_units(rng, m, k) @ owned.T).max(axis=1)
        layer_ps.append(stats.median_log10_p(np.array([stats.unit_log10_p(c, k, n) for c in best])))
    assert np.mean(np.array(layer_ps) < -2) <= 0.02
    assert np.mean(np.array(layer_ps) < -1) <= 0.12


def test_a_copied_layer_is_astronomically_unlikely_under_the_null():
    rng = np.random.default_rng(2)
    owned = _random_units(rng, 256, 64)
    copied = owned[:8] + 0.3 * _random_units(rng, 8, 64)  # heavy noise: cos ~ 0.95
    copied /= np.linalg.norm(copied, axis=1, keepdims=True)
    best = np.abs(copied @ owned.T).max(axis=1)
    layer = stats.median_log10_p(np.array([stats.unit_log10_p(c, 64, 256) for c in best]))
    assert layer < -60


@pytest.mark.parametrize("a,b,x", [(3, 4, 1e-5), (31.5, 0.5, 0.2), (4, 5, 0.3), (10, 11, 1e-3)])
def test_log10_betainc_matches_scipy_where_representable(a, b, x):
    assert stats.log10_betainc(a, b, x) == pytest.approx(math.log10(special.betainc(a, b, x)), rel=1e-9)


def test_log10_betainc_continues_monotonically_past_underflow():
    values = [stats.log10_betainc(31.5, 0.5, 10.0 ** -e) for e in (5, 8, 12, 20)]
    assert values == sorted(values, reverse=True) and values[-1] < -600


@pytest.mark.parametrize("ps", [[-1, -2, -3], [-0.1, -0.2], [-5] * 10, [-100, -150]])
def test_fisher_matches_scipy(ps):
    x = -2 * math.log(10) * sum(ps)
    assert stats.fisher_log10_p(ps) == pytest.approx(sps.chi2.logsf(x, 2 * len(ps)) / math.log(10), rel=1e-3)


def test_fisher_deep_tail_is_finite_and_ordered():
    assert stats.fisher_log10_p([-400] * 3) < stats.fisher_log10_p([-300] * 3) < -800


def test_effective_dim_of_isotropic_and_degenerate_features():
    rng = np.random.default_rng(3)
    assert stats.effective_dim(_random_units(rng, 5000, 16)) > 15
    line = np.outer(rng.standard_normal(100), np.ones(16))
    assert stats.effective_dim(line) == pytest.approx(1.0)


def _llama_header(layers=32, d=4096, ffn=11008, vocab=32000, dtype="F16", width=2):
    infos, offset = [], 0

    def add(name, shape):
        nonlocal offset
        size = math.prod(shape) * width
        infos.append(TensorInfo(name, dtype, shape, "model.safetensors", offset, offset + size))
        offset += size

    add("model.embed_tokens.weight", (vocab, d))
    for i in range(layers):
        p = f"model.layers.{i}."
        add(p + "input_layernorm.weight", (d,))
        for n in ("q", "k", "v", "o"):
            add(p + f"self_attn.{n}_proj.weight", (d, d))
        add(p + "post_attention_layernorm.weight", (d,))
        add(p + "mlp.gate_proj.weight", (ffn, d))
        add(p + "mlp.up_proj.weight", (ffn, d))
        add(p + "mlp.down_proj.weight", (d, ffn))
    add("model.norm.weight", (d,))
    add("lm_head.weight", (vocab, d))
    return infos


def test_7b_plan_reads_under_16_mib_and_1_percent():
    header = _llama_header()
    layout = find_layout(header)
    assert len(layout.units) == 32 and all(u.norm is not None for u in layout.units)
    specs = plan(layout, suspect_rows(layout, sum(t.nbytes for t in header)))
    read = sum(end - begin for begin, end in (s.byte_range for s in specs))
    total = sum(t.nbytes for t in header)
    assert read <= BYTE_CAP and read / total <= 0.01
    ranges = [s.byte_range for s in specs]
    assert all(t.begin <= b < e <= t.end for (b, e), t in zip(ranges, (s.tensor for s in specs)))


def test_layouts_of_known_naming_schemes():
    gguf = [TensorInfo("token_embd.weight", "F16", (1000, 64), "f", 0, 128000),
            TensorInfo("blk.0.ffn_norm.weight", "F32", (64,), "f", 128000, 128256),
            TensorInfo("blk.0.ffn_up.weight", "Q8_0", (256, 64), "f", 128256, 145664)]
    layout = find_layout(gguf)
    assert layout.units[0].norm.name == "blk.0.ffn_norm.weight" and layout.anchored_by == "tokens"
    bert = [TensorInfo("encoder.layer.3.intermediate.dense.weight", "F32", (1536, 384), "f", 0, 1),
            TensorInfo("encoder.layer.3.attention.output.LayerNorm.weight", "F32", (384,), "f", 0, 1),
            TensorInfo("encoder.layer.3.attention.output.LayerNorm.bias", "F32", (384,), "f", 0, 1),
            TensorInfo("embeddings.word_embeddings.weight", "F32", (30522, 384), "f", 0, 1)]
    unit = find_layout(bert).units[0]
    assert unit.norm_bias is not None and unit.tensor.name.endswith("intermediate.dense.weight")
    mlp = [TensorInfo("net.0.weight", "F32", (256, 64), "f", 0, 1), TensorInfo("net.2.weight", "F32", (256, 256), "f", 0, 1),
           TensorInfo("net.4.weight", "F32", (10, 256), "f", 0, 1)]
    layout = find_layout(mlp)
    assert layout.anchored_by == "inputs" and [u.tensor.name for u in layout.units] == ["net.0.weight"]
