"""SafetensorsReader: chunks and values reproduce the saved tensors exactly, for every dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from monitor.errors import WeightFormatError
from monitor.formats.safetensors import SafetensorsReader, decode_le

from .conftest import MemorySource, raw_bytes

EXPECTED_DTYPES = {
    "f64": "F64", "f32": "F32", "f16": "F16", "bf16": "BF16", "i64": "I64", "i32": "I32",
    "i16": "I16", "i8": "I8", "u8": "U8", "bool": "BOOL", "f8_e4m3": "F8_E4M3",
    "f8_e5m2": "F8_E5M2", "scalar": "F32", "empty": "F32",
}


def as_float32(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1).to(torch.float32).numpy()


def test_tensors_report_dtype_and_shape(st_path: Path, dtype_tensors: dict[str, torch.Tensor]) -> None:
    with SafetensorsReader.open(st_path) as reader:
        infos = {t.name: t for t in reader.tensors()}
    assert {n: t.dtype for n, t in infos.items()} == EXPECTED_DTYPES
    assert all(infos[n].shape == tuple(t.shape) for n, t in dtype_tensors.items())
    assert infos["scalar"].numel == 1 and infos["empty"].nbytes == 0


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1 << 20])
def test_chunks_are_the_canonical_bytes(st_path: Path, dtype_tensors: dict[str, torch.Tensor],
                                        chunk_bytes: int) -> None:
    with SafetensorsReader.open(st_path) as reader:
        for info in reader.tensors():
            pieces = list(reader.chunks(info, chunk_bytes))
            assert b"".join(pieces) == raw_bytes(dtype_tensors[info.name]), info.name
            assert all(len(p) == chunk_bytes for p in pieces[:-1])


def test_values_match_every_dtype(st_path: Path, dtype_tensors: dict[str, torch.Tensor]) -> None:
    with SafetensorsReader.open(st_path) as reader:
        for info in reader.tensors():
            expected = as_float32(dtype_tensors[info.name])
            got = reader.values(info, 0, info.numel)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected, err_msg=info.name)
            if info.numel > 10:
                np.testing.assert_array_equal(reader.values(info, 3, 7), expected[3:10])
                assert reader.values(info, 5, 0).shape == (0,)


def test_values_reads_only_the_needed_bytes(dtype_tensors: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": dtype_tensors["f32"]}, str(path))
    source = MemorySource(path.read_bytes())
    reader = SafetensorsReader(source)
    (info,) = reader.tensors()
    source.reads.clear()
    np.testing.assert_array_equal(reader.values(info, 10, 5), as_float32(dtype_tensors["f32"])[10:15])
    assert source.reads == [(info.begin + 40, 20)]


def test_values_out_of_range_is_a_caller_bug(st_path: Path) -> None:
    with SafetensorsReader.open(st_path) as reader:
        info = next(t for t in reader.tensors() if t.name == "f32")
        with pytest.raises(IndexError):
            reader.values(info, 100, 6)


@pytest.mark.parametrize("torch_dtype,name", [(torch.float8_e4m3fn, "F8_E4M3"),
                                              (torch.float8_e5m2, "F8_E5M2"),
                                              (torch.bfloat16, "BF16")])
def test_decoding_agrees_with_torch_for_every_bit_pattern(torch_dtype: torch.dtype, name: str) -> None:
    width = torch.tensor([], dtype=torch_dtype).element_size()
    bits = torch.arange(256 ** width, dtype=torch.int32).to(torch.uint8 if width == 1 else torch.int16)
    if width == 2:
        bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    expected = bits.view(torch_dtype).to(torch.float32).numpy()
    got = decode_le(bits.numpy().tobytes(), name)
    np.testing.assert_array_equal(got, expected)  # NaN == NaN here


def test_bad_file_via_open_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x05\x00")
    with pytest.raises(WeightFormatError, match=r"junk\.safetensors: file is 2 bytes"):
        SafetensorsReader.open(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match="cannot open"):
        SafetensorsReader.open(tmp_path / "nope.safetensors")
