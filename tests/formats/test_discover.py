"""find_weight_files/open_weights: each tensor counted once across HF repo layouts."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from monitor.errors import NoWeightsError, WeightFormatError
from monitor.formats import detect_format, find_weight_files, open_weights
from monitor.formats.gguf_file import GGUFReader
from monitor.formats.safetensors import SafetensorsReader
from monitor.formats.torch_bin import TorchReader


def st(path: Path, **tensors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors or {"w": torch.ones(2)}, str(path))
    return path


def pt(path: Path, **tensors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors or {"w": torch.ones(2)}, path)
    return path


def gg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("w", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def index(path: Path, weight_map: dict[str, str]) -> Path:
    path.write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    return path


def names(files: list[Path], root: Path) -> list[str]:
    return [str(f.relative_to(root)) for f in files]


def test_single_files_by_extension(tmp_path: Path) -> None:
    for path, fmt in [(st(tmp_path / "a.safetensors"), "safetensors"), (pt(tmp_path / "b.bin"), "torch"),
                      (pt(tmp_path / "c.pt"), "torch"), (pt(tmp_path / "d.pth"), "torch"),
                      (gg(tmp_path / "e.gguf"), "gguf")]:
        assert find_weight_files(path) == [path]
        assert detect_format(path) == fmt


def test_unknown_extension_is_sniffed(tmp_path: Path) -> None:
    st(tmp_path / "x.safetensors").rename(tmp_path / "weights.dat")
    pt(tmp_path / "y.pt").rename(tmp_path / "model.ckpt")
    gg(tmp_path / "z.gguf").rename(tmp_path / "llama.bin")
    assert detect_format(tmp_path / "weights.dat") == "safetensors"
    assert detect_format(tmp_path / "model.ckpt") == "torch"
    assert detect_format(tmp_path / "llama.bin") == "gguf"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NoWeightsError, match=r"notes\.txt: not a weight file"):
        find_weight_files(tmp_path / "notes.txt")


def test_sharded_folder_uses_the_index(tmp_path: Path) -> None:
    a = st(tmp_path / "model-00001-of-00002.safetensors", a=torch.ones(2))
    b = st(tmp_path / "model-00002-of-00002.safetensors", b=torch.zeros(3))
    st(tmp_path / "consolidated.safetensors", a=torch.ones(2), b=torch.zeros(3))  # same weights again
    index(tmp_path / "model.safetensors.index.json", {"a": a.name, "b": b.name})
    assert find_weight_files(tmp_path) == [a, b]


def test_missing_shard_is_named(tmp_path: Path) -> None:
    a = st(tmp_path / "model-00001-of-00002.safetensors")
    index(tmp_path / "model.safetensors.index.json",
          {"a": a.name, "b": "model-00002-of-00002.safetensors"})
    missing = (r"model\.safetensors\.index\.json: weight_map names "
               r"shard 'model-00002-of-00002\.safetensors', which is missing")
    with pytest.raises(WeightFormatError, match=missing):
        find_weight_files(tmp_path)


@pytest.mark.parametrize("content,problem", [
    ("{broken", "not a shard index"), ('{"metadata": {}}', "not a shard index"),
    ('{"weight_map": {}}', "weight_map is not a non-empty object"),
    ('{"weight_map": {"a": "../../etc/passwd"}}', "not a file name"),
])
def test_bad_index(tmp_path: Path, content: str, problem: str) -> None:
    st(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(content)
    with pytest.raises(WeightFormatError, match=problem):
        find_weight_files(tmp_path)


def test_snapshot_with_both_formats_prefers_safetensors(tmp_path: Path) -> None:
    s = st(tmp_path / "model.safetensors")
    pt(tmp_path / "pytorch_model.bin")
    pt(tmp_path / "training_args.bin")
    (tmp_path / "config.json").write_text("{}")
    assert find_weight_files(tmp_path) == [s]


def test_torch_only_folder_skips_trainer_pickles(tmp_path: Path) -> None:
    shards = [pt(tmp_path / f"pytorch_model-0000{i}-of-00002.bin") for i in (2, 1)]
    for junk in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state_0.pth"):
        pt(tmp_path / junk)
    assert find_weight_files(tmp_path) == sorted(shards)


def test_torch_index(tmp_path: Path) -> None:
    one = pt(tmp_path / "pytorch_model-00001-of-00002.bin")
    pt(tmp_path / "pytorch_model-00002-of-00002.bin")
    pt(tmp_path / "stray.bin")
    index(tmp_path / "pytorch_model.bin.index.json", {"a": one.name, "b": one.name})
    assert find_weight_files(tmp_path) == [one]


def test_subfolders_only_when_the_top_level_has_none(tmp_path: Path) -> None:
    unet = st(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    vae = pt(tmp_path / "vae" / "diffusion_pytorch_model.bin")
    deep = gg(tmp_path / "text_encoder" / "q" / "model.gguf")
    st(tmp_path / ".cache" / "hidden.safetensors")
    (tmp_path / "model_index.json").write_text("{}")
    assert names(find_weight_files(tmp_path), tmp_path) == [
        "text_encoder/q/model.gguf", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.bin"]
    top = st(tmp_path / "model.safetensors")
    assert find_weight_files(tmp_path) == [top]
    assert unet.exists() and vae.exists() and deep.exists()


def test_several_gguf_quantizations_all_count(tmp_path: Path) -> None:
    files = [gg(tmp_path / f"model-{q}.gguf") for q in ("Q8_0", "Q4_K_M")]
    assert find_weight_files(tmp_path) == sorted(files)


@pytest.mark.parametrize("setup", ["empty", "only config", "missing", "only hidden"])
def test_no_weights(tmp_path: Path, setup: str) -> None:
    target = tmp_path / "repo"
    if setup != "missing":
        target.mkdir()
    if setup == "only config":
        (target / "config.json").write_text("{}")
    if setup == "only hidden":
        st(target / ".git" / "model.safetensors")
    with pytest.raises(NoWeightsError, match=r"repo: "):
        find_weight_files(target)


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    with pytest.raises(NoWeightsError):
        find_weight_files(tmp_path)


def test_open_weights_gives_one_reader_per_file(tmp_path: Path) -> None:
    st(tmp_path / "st" / "model.safetensors", a=torch.arange(4.0))
    pt(tmp_path / "pt" / "pytorch_model.bin", b=torch.arange(3.0))
    gg(tmp_path / "gg" / "model.gguf")
    readers = open_weights(tmp_path)
    try:
        assert [type(r) for r in readers] == [GGUFReader, TorchReader, SafetensorsReader]
        assert [[t.name for t in r.tensors()] for r in readers] == [["w"], ["b"], ["a"]]
        a = readers[2].tensors()[0]
        np.testing.assert_array_equal(readers[2].values(a, 1, 2), [1.0, 2.0])
    finally:
        for r in readers:
            r.close()


def test_open_weights_fails_on_a_bad_file_and_names_it(tmp_path: Path) -> None:
    st(tmp_path / "model-00001-of-00002.safetensors")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(WeightFormatError, match=r"model-00002-of-00002\.safetensors: header length"):
        open_weights(tmp_path)
