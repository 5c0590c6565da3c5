"""Properties of the anchored-units fingerprint on a tiny LLaMA-style model.

Exact invariance to the output-preserving camouflage transforms, survival of quantization and
GGUF conversion, per-layer reporting, and a suspect fingerprint that reads nothing but its plan.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from benchmarks.zoo import camouflage as cam
from benchmarks.zoo import quantize as q
from benchmarks.zoo.gguf_export import to_gguf
from benchmarks.zoo.llama import LMConfig, init_state_dict
from monitor import derive
from monitor.fingerprint import units
from monitor.formats.base import LocalFile
from monitor.formats.ranges import PrefetchedSource
from monitor.formats.safetensors import SafetensorsReader
from monitor.pipeline import fingerprint_path

CFG = LMConfig()


def _model(seed: int) -> dict[str, torch.Tensor]:
    """Initialised weights with non-trivial norm gains (trained models have them)."""
    sd = init_state_dict(CFG, seed)
    g = torch.Generator().manual_seed(1000 + seed)
    return {k: (1 + 0.3 * torch.randn(v.shape, generator=g)) if k.endswith("norm.weight") else v
            for k, v in sd.items()}


@pytest.fixture(scope="module")
def owned(tmp_path_factory) -> tuple[dict, units.UnitsFingerprint]:
    sd = _model(0)
    path = derive.save_safetensors(sd, tmp_path_factory.mktemp("own") / "model.safetensors")
    return sd, fingerprint_path(path).units


def _compare(owned_units, sd, folder: Path, writer=None):
    path = (writer or (lambda s, d: derive.save_safetensors(s, d / "model.safetensors")))(sd, folder)
    return units.compare(owned_units, fingerprint_path(path, owned=False).units)


@pytest.mark.parametrize("transform", [
    partial(cam.permute_residual, seed=1), partial(cam.permute_mlp, seed=2),
    partial(cam.permute_heads, cfg=CFG, seed=3), partial(cam.rotate_residual, seed=4),
    partial(cam.rotate_qk, cfg=CFG, seed=5), partial(cam.scale_mlp, c=-0.3),
    lambda sd: cam.permute_mlp(cam.rotate_residual(sd, 6), 7),
], ids=["permute residual", "permute MLP", "permute heads", "rotate residual", "rotate QK",
        "scale MLP", "rotate + permute"])
def test_output_preserving_camouflage_leaves_units_exactly_matched(owned, tmp_path, transform):
    sd, owned_units = owned
    plain = _compare(owned_units, sd, tmp_path / "plain")
    result = _compare(owned_units, transform(sd), tmp_path / "camouflaged")
    assert min(m.median_cos for m in result.layers) > 0.9999
    assert result.log10_p == pytest.approx(plain.log10_p, rel=1e-3)
    assert [m.model_layer for m in result.layers] == [m.model_layer for m in plain.layers]


@pytest.mark.parametrize("transform,writer", [
    (q.int8_torch_ao, None), (partial(q.int4_group, group=128), None),
    (partial(q.prune_magnitude, amount=0.5), None),
    (lambda sd: sd, lambda sd, d: to_gguf(sd, CFG, d / "m.gguf", "Q4_0")),
    (partial(cam.append_vocab, n=64, seed=8), None),
], ids=["int8", "int4 g128", "prune 50%", "GGUF Q4_0", "append vocab"])
def test_lossy_derivatives_stay_far_below_1e_minus_9(owned, tmp_path, transform, writer):
    sd, owned_units = owned
    assert _compare(owned_units, transform(sd), tmp_path, writer).log10_p < -9


def test_kept_layers_are_reported_with_their_origin(owned, tmp_path):
    sd, owned_units = owned
    result = _compare(owned_units, cam.keep_layers(sd, [3, 0, 2]), tmp_path)
    origin = [m.model_layer.split(".")[2] for m in result.layers]
    assert origin == ["3", "0", "2"] and all(m.log10_p < -9 for m in result.layers)


def test_independent_initialisations_are_not_matched(owned, tmp_path):
    _, owned_units = owned
    for seed in (1, 2, 3):
        result = _compare(owned_units, _model(seed), tmp_path / str(seed))
        assert result.p_value > 1e-3 and max(m.median_cos for m in result.layers) < 0.6


def test_suspect_fingerprint_reads_only_its_plan(owned, tmp_path):
    sd, _ = owned
    path = derive.save_safetensors(cam.permute_mlp(sd, 9), tmp_path / "model.safetensors")
    with SafetensorsReader.open(path) as local:
        header_end = local.header.data_start
        specs = units.plan(local.tensors())
        expected = units.compute([local], owned=False)
    ranges = [(0, header_end)] + [s.byte_range for s in specs]
    source = LocalFile(path)
    with SafetensorsReader(PrefetchedSource.fetch(source, ranges)) as remote:
        got = units.compute([remote], owned=False)
        held = remote.source.bytes_held
    source.close()
    assert all((a == b).all() for a, b in zip(expected.layers, got.layers))
    assert held - header_end == got.bytes_read and got.bytes_read <= 0.01 * path.stat().st_size
