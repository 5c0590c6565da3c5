"""GGUFReader: GGML type names, torch-order shapes, raw chunks and block-wise dequantization."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from monitor.errors import WeightFormatError
from monitor.formats.gguf_file import GGUFReader

RNG = np.random.default_rng(0)
ORIGINALS: dict[str, np.ndarray] = {
    "tok_embd.weight": RNG.standard_normal((4, 64)).astype(np.float32),
    "norm.weight": RNG.standard_normal(96).astype(np.float16),
    "blk.0.attn_q.weight": RNG.standard_normal((3, 2, 64)).astype(np.float32),  # stored Q8_0
    "blk.0.ffn.weight": RNG.standard_normal((5, 7)).astype(np.float32),
}


def write_gguf(path: Path) -> dict[str, np.ndarray]:
    """Writes the test model; returns each tensor's stored bytes as gguf laid them out."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    stored = {}
    for name, array in ORIGINALS.items():
        if name == "blk.0.attn_q.weight":
            stored[name] = gguf.quants.quantize(array, Q.Q8_0)
            writer.add_tensor(name, stored[name], raw_dtype=Q.Q8_0)
        else:
            stored[name] = array
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


@pytest.fixture
def gguf_model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "model-Q8_0.gguf"
    return path, write_gguf(path)


def test_tensors_in_torch_order_with_ggml_types(gguf_model: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, stored = gguf_model
    data = path.read_bytes()
    with GGUFReader(path) as reader:
        infos = {t.name: t for t in reader.tensors()}
        assert list(infos) == list(ORIGINALS)  # written, and so stored, in this order
        assert {n: t.dtype for n, t in infos.items()} == {
            "tok_embd.weight": "F32", "norm.weight": "F16", "blk.0.attn_q.weight": "Q8_0",
            "blk.0.ffn.weight": "F32"}
        for name, info in infos.items():
            assert info.shape == ORIGINALS[name].shape
            assert info.file == str(path)
            assert data[info.begin:info.end] == stored[name].tobytes()
        assert infos["blk.0.attn_q.weight"].nbytes == 12 * 34  # 384 values in 32-value blocks of 34 bytes


@pytest.mark.parametrize("chunk_bytes", [5, 100, 1 << 20])
def test_chunks_are_the_stored_bytes(gguf_model: tuple[Path, dict[str, np.ndarray]],
                                     chunk_bytes: int) -> None:
    path, stored = gguf_model
    with GGUFReader(path) as reader:
        for info in reader.tensors():
            assert b"".join(reader.chunks(info, chunk_bytes)) == stored[info.name].tobytes()


def test_values_of_float_tensors_are_exact(gguf_model: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = gguf_model
    with GGUFReader(path) as reader:
        for info in reader.tensors():
            if info.dtype == "Q8_0":
                continue
            flat = ORIGINALS[info.name].reshape(-1).astype(np.float32)
            np.testing.assert_array_equal(reader.values(info, 0, info.numel), flat)
            np.testing.assert_array_equal(reader.values(info, 13, 20), flat[13:33])


@pytest.mark.parametrize("start,count", [(0, 384), (0, 1), (31, 2), (40, 100), (383, 1), (100, 0)])
def test_q8_0_values_dequantize_only_the_covering_blocks(
        gguf_model: tuple[Path, dict[str, np.ndarray]], start: int, count: int) -> None:
    path, stored = gguf_model
    name = "blk.0.attn_q.weight"
    whole = gguf.quants.dequantize(stored[name], Q.Q8_0).reshape(-1)
    with GGUFReader(path) as reader:
        info = next(t for t in reader.tensors() if t.name == name)
        got = reader.values(info, start, count)
    assert got.dtype == np.float32 and got.shape == (count,)
    np.testing.assert_array_equal(got, whole[start:start + count])
    original = ORIGINALS[name].reshape(-1)[start:start + count]
    np.testing.assert_allclose(got, original, atol=0.05)  # Q8_0 is close to the original


def test_values_out_of_range(gguf_model: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = gguf_model
    with GGUFReader(path) as reader:
        info = reader.tensors()[0]
        with pytest.raises(IndexError):
            reader.values(info, info.numel, 1)


@pytest.mark.parametrize("mangle", ["empty", "garbage", "truncated", "bad magic"])
def test_corrupt_gguf_names_the_file(gguf_model: tuple[Path, dict[str, np.ndarray]], mangle: str) -> None:
    path, _ = gguf_model
    data = path.read_bytes()
    mangled = {"empty": b"", "garbage": b"GGUF" + bytes(range(256)) * 4,
               "truncated": data[: len(data) - 100], "bad magic": b"GGUX" + data[4:]}[mangle]
    path.write_bytes(mangled)
    with pytest.raises(WeightFormatError) as caught:
        GGUFReader(path)
    assert str(caught.value).startswith(f"{path}: not a readable GGUF file (")
    assert "\n" not in str(caught.value)


def test_overlapping_tensors_are_refused(gguf_model: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = gguf_model
    patch = gguf.GGUFReader(path, "r+")  # point norm.weight's data at tok_embd.weight's
    patch.tensors[1].field.parts[-1][0] = patch.tensors[0].field.parts[-1][0]
    patch.data.flush()
    del patch
    pair = r"tensors '(norm|tok_embd)\.weight' and '(norm|tok_embd)\.weight' overlap$"
    with pytest.raises(WeightFormatError, match=pair):
        GGUFReader(path)
