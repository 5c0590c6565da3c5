"""The crawl benchmark's building blocks at tiny scale, and one end-to-end sweep of ~30 repos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load

from benchmarks import crawl
from benchmarks.crawl import Arch, Population, RepoSpec
from monitor.formats.base import ByteSource
from monitor.formats.safetensors import parse_header

TINY = Arch(vocab=2048, hidden=128, ffn=344, layers=2, heads=4)
TINY_OTHERS = (Arch(2048, 96, 256, 2, heads=4), Arch(4096, 192, 512, 3, heads=4))


class _Bytes(ByteSource):
    def __init__(self, data: bytes) -> None:
        self.name, self.size, self._data = "mem", len(data), data

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset: offset + length]


def _tiny(repos: int = 30, derivatives: int = 6, seed: int = 3) -> Population:
    return crawl.population(repos, derivatives, seed, owned=TINY, others=TINY_OTHERS)


def _spec(recipe: str) -> RepoSpec:
    return RepoSpec("x/y", "derivative", 12345, 0, recipe=recipe)


def _mlp(sd: dict, layer: int, x: torch.Tensor) -> torch.Tensor:
    p = f"model.layers.{layer}.mlp."
    gate, up, down = (sd[p + n + "_proj.weight"].float() for n in ("gate", "up", "down"))
    return (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ down.T


def test_population_is_deterministic_and_mixed() -> None:
    pop = _tiny(200, 20)
    assert pop == _tiny(200, 20) and pop != _tiny(200, 20, seed=4)
    kinds = [r.kind for r in pop.repos]
    assert len(kinds) == 200 and kinds.count("derivative") == 20 and len(pop.expected) == 20
    assert {"bin", "gguf", "no-weights", "synthetic"} <= set(kinds)
    archs = [r.arch for r in pop.repos if r.kind == "synthetic"]
    same = [a for a in archs if (a.vocab, a.hidden, a.ffn, a.layers) == (TINY.vocab, TINY.hidden, TINY.ffn, TINY.layers)]
    assert len(same) > len(archs) / 3 and any(a in TINY_OTHERS for a in archs)
    assert sorted(r.recipe for r in pop.repos if r.kind == "derivative") == sorted(crawl.RECIPES)
    assert len({r.repo_id for r in pop.repos}) == 200
    assert {step for steps, _ in crawl.RECIPES.values() for step in steps} <= set(crawl._steps())


def test_synthetic_candidates_parse_and_bin_gguf_are_lazy() -> None:
    pop = _tiny()
    for repo in pop.repos:
        files = crawl.candidate_files(repo) if repo.kind != "derivative" else {}
        for name, content in files.items():
            if name.endswith(".safetensors"):
                header = parse_header(_Bytes(content.read(0, content.size)))
                assert [t.name for t in header.tensors] == [n for n, _, _ in repo.arch.layout()]
            elif name.endswith((".bin", ".gguf")):
                assert not isinstance(content, bytes) and content.size >= 50_000_000


def test_owned_model_is_the_registered_bytes_and_exact_copy_is_identical() -> None:
    pop = _tiny()
    blob = crawl.owned_blob(pop)
    files = crawl.derivative_files(pop, _spec("exact re-upload"))
    assert files["model.safetensors"] == blob.read(0, blob.size)
    sd = crawl.owned_state_dict(pop)
    emb = sd["model.embed_tokens.weight"].float()
    assert emb.shape == (TINY.vocab, TINY.hidden) and abs(float(emb.std()) - 0.02) < 0.002


@pytest.mark.parametrize("recipe", ["permute MLP", "scale MLP ×4"])
def test_mlp_camouflage_changes_weights_but_not_what_the_mlp_computes(recipe: str) -> None:
    pop = _tiny()
    owned = crawl.owned_state_dict(pop)
    copy = load(crawl.derivative_files(pop, _spec(recipe), owned)["model.safetensors"])
    x = torch.randn(5, TINY.hidden) * 20  # large enough that silu is far from linear
    for layer in range(TINY.layers):
        name = f"model.layers.{layer}.mlp.up_proj.weight"
        assert not torch.equal(copy[name], owned[name])
        torch.testing.assert_close(_mlp(copy, layer, x), _mlp(owned, layer, x), rtol=2e-2, atol=2e-3)


def test_shards_bf16_and_noise_are_what_they_claim() -> None:
    pop = _tiny()
    owned = crawl.owned_state_dict(pop)
    sharded = crawl.derivative_files(pop, _spec("renamed + 2 shards"), owned)
    index = json.loads(sharded["model.safetensors.index.json"])
    assert sorted(sharded) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                               "model.safetensors.index.json"]
    assert set(index["weight_map"]) == {"base." + k for k in owned}
    merged = {k: v for name, data in sharded.items() if name.endswith(".safetensors")
              for k, v in load(data).items()}
    assert all(torch.equal(merged["base." + k], v) for k, v in owned.items())

    bf16 = load(crawl.derivative_files(pop, _spec("bf16"), owned)["model.safetensors"])
    assert {v.dtype for v in bf16.values()} == {torch.bfloat16}

    noisy = load(crawl.derivative_files(pop, _spec("noise 5 %"), owned)["model.safetensors"])
    w, n = owned["lm_head.weight"].float(), noisy["lm_head.weight"].float()
    assert 0.03 < float((n - w).std() / w.std()) < 0.07


def test_int8_and_pruning_derivatives() -> None:
    pop = _tiny()
    owned = crawl.owned_state_dict(pop)
    pruned = load(crawl.derivative_files(pop, _spec("prune 50 %"), owned)["model.safetensors"])
    up = pruned["model.layers.0.mlp.up_proj.weight"]
    assert abs(float((up == 0).float().mean()) - 0.5) < 0.01
    q = load(crawl.derivative_files(pop, _spec("int8 round trip"), owned)["model.safetensors"])
    row = q["model.layers.1.mlp.down_proj.weight"][0].float().numpy()
    assert len(np.unique(np.abs(row))) <= 128  # 127 levels and zero per output channel


def test_summary_checks_each_target() -> None:
    pop = _tiny(30, 2)
    expected = sorted(pop.expected)
    doc = {"runs": [], "totals": {"seen": 30, "fingerprinted": 20},
           "matches": [{"location": expected[0], "model": "owned", "verdict": "exact", "p_value": None},
                       {"location": "hf://someone/else", "model": "owned", "verdict": "derivative",
                        "p_value": 1e-30}]}
    first = crawl.Run(0, 60.0, 100_000_000, json.dumps(doc), "", 5_000)
    second = crawl.Run(0, 2.0, 90_000_000, json.dumps({**doc, "matches": []}), "", 0)
    s = crawl.summarise(pop, {"all": 1_000_000, "owned-architecture": 0, "derivatives": 0}, first, second)
    assert s["missed"] == expected[1:] and s["false_matches"] == ["hf://someone/else"]
    assert s["ok"] == {"all found, no false match": False, "read ≤ 1 % of held": True,
                       "≥ 1,000 candidates/min": False, "peak RSS < 300 MB": True,
                       "second sweep reads 0 bytes": True}
    assert "**missed**" in crawl.table(s)
    assert crawl.Run(0, 1.0, 0, "run-once: no crawlers are enabled", "", 0).report is None


def test_end_to_end_sweep_of_thirty_repos(tmp_path: Path) -> None:
    """The whole harness: Hub process, register, two run-once sweeps (< 30 s)."""
    pop = _tiny(30, 6)
    first, second, s = crawl.bench(pop, tmp_path)
    if first.report is None:
        pytest.skip("`monitor --json run-once` does not print the crawl contract yet "
                    f"(exit {first.exit}: {(first.stderr or first.stdout).strip()[:200]})")
    assert first.exit == 0, first.stderr
    assert s["seen"] == 30
    assert s["missed"] == [] and s["false_matches"] == []
    assert s["second_read_bytes"] == 0
    assert s["read_bytes"] > 0  # the derivatives that are not exact copies cost range reads
