"""parse_header: absolute offsets on real files, and a precise one-line error for every lie."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from monitor.errors import WeightFormatError
from monitor.formats.base import LocalFile
from monitor.formats.safetensors import SafetensorsHeader, parse_header

from .conftest import MemorySource, raw_bytes, safetensors_bytes

NAME = "mem://bad.safetensors"


def f32(shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


def test_real_file_offsets_are_absolute(st_path: Path, dtype_tensors: dict[str, torch.Tensor]) -> None:
    data = st_path.read_bytes()
    source = LocalFile(st_path)
    try:
        header = parse_header(source)
    finally:
        source.close()
    assert isinstance(header, SafetensorsHeader)
    assert header.metadata == {"format": "pt"}
    assert header.header_len == struct.unpack("<Q", data[:8])[0]
    assert {t.name for t in header.tensors} == set(dtype_tensors)
    assert [t.begin for t in header.tensors] == sorted(t.begin for t in header.tensors)
    for info in header.tensors:
        original = dtype_tensors[info.name]
        assert info.shape == tuple(original.shape)
        assert info.file == str(st_path)
        assert info.begin >= header.data_start
        assert data[info.begin:info.end] == raw_bytes(original)
    assert {t.name: t.dtype for t in header.tensors}["f8_e4m3"] == "F8_E4M3"


def test_reads_only_the_header() -> None:
    body = safetensors_bytes({"w": f32([2], 0, 8)}, b"\0" * 8)
    source = MemorySource(body)
    parse_header(source)
    n = struct.unpack("<Q", body[:8])[0]
    assert source.reads == [(0, 8), (8, n)]


def test_zero_size_tensors_may_share_an_offset() -> None:
    header = parse_header(MemorySource(safetensors_bytes(
        {"a": f32([0], 4, 4), "b": f32([0, 3], 4, 4), "c": f32([2], 0, 8)}, b"\0" * 8)))
    assert [t.name for t in header.tensors] == ["c", "a", "b"]


def test_null_metadata_and_padding_are_accepted() -> None:
    body = b'{"__metadata__": null, "w": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}}   '
    header = parse_header(MemorySource(safetensors_bytes(None, b"\x07", raw_header=body)))
    assert header.metadata == {}
    assert header.tensors[0].shape == () and header.tensors[0].nbytes == 1


BAD: list[tuple[str, bytes, str]] = [
    ("shorter than 8 bytes", b"\x01\x02\x03", "file is 3 bytes, shorter than the 8-byte header length"),
    ("header 10 GB", struct.pack("<Q", 10_000_000_000) + b"{}",
     "header length 10000000000 exceeds the 100,000,000-byte limit"),
    ("header just over limit", struct.pack("<Q", 100_000_001) + b"{}", "exceeds the 100,000,000-byte limit"),
    ("header past end", struct.pack("<Q", 1000) + b"{}",
     "header length 1000 runs past the end of the 10-byte file"),
    ("not utf-8", safetensors_bytes(None, raw_header=b'{"\xff": 1}'), "header is not valid UTF-8"),
    ("not json", safetensors_bytes(None, raw_header=b"{not json"), "header is not JSON"),
    ("empty header", safetensors_bytes(None, raw_header=b""), "header is not JSON"),
    ("NaN", safetensors_bytes(None, raw_header=b'{"a": NaN}'), "header is not JSON (it contains NaN)"),
    ("deep nesting", safetensors_bytes(None, raw_header=b"[" * 200_000), "header is not JSON"),
    ("huge int", safetensors_bytes(None, raw_header=b'{"a": ' + b"9" * 5000 + b"}"), "header is not JSON"),
    ("list header", safetensors_bytes([1, 2]), "header is a JSON list, not an object"),
    ("entry not object", safetensors_bytes({"w": 3}), "tensor 'w' is a JSON int, not an object"),
    ("missing data_offsets", safetensors_bytes({"w": {"dtype": "F32", "shape": [1]}}),
     "tensor 'w' has no data_offsets"),
    ("unknown dtype", safetensors_bytes({"w": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}},
                                        b"\0" * 4), "tensor 'w' has unknown dtype 'F33'"),
    ("dtype not str", safetensors_bytes({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}}),
     "unknown dtype 7"),
    ("negative dim", safetensors_bytes({"w": f32([-1], 0, 4)}), "not a list of non-negative integers"),
    ("float dim", safetensors_bytes({"w": f32([1.0], 0, 4)}), "not a list of non-negative integers"),  # type: ignore[list-item]
    ("bool dim", safetensors_bytes({"w": f32([True], 0, 4)}), "not a list of non-negative integers"),
    ("shape not list", safetensors_bytes({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}}),
     "has shape 4"),
    ("one offset", safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}),
     "not [begin, end] integers"),
    ("begin after end", safetensors_bytes({"w": f32([1], 8, 4)}, b"\0" * 8), "0 <= begin <= end"),
    ("negative begin", safetensors_bytes({"w": f32([1], -4, 0)}, b"\0" * 8), "0 <= begin <= end"),
    ("string offset", safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}}),
     "not [begin, end] integers"),
    ("size mismatch", safetensors_bytes({"w": f32([2], 0, 4)}, b"\0" * 8),
     "tensor 'w' spans 4 bytes but F32 [2] needs 8"),
    ("astronomic shape", safetensors_bytes({"w": f32([10**30, 10**30], 0, 4)}, b"\0" * 4),
     "needs more than the 4-byte data area"),
    ("past data area", safetensors_bytes({"w": f32([1], 0, 4)}, b"\0" * 2),
     "tensor 'w' ends at data offset 4, past the end of the 2-byte data area"),
    ("overlap", safetensors_bytes({"a": f32([2], 0, 8), "b": f32([1], 4, 8)}, b"\0" * 8),
     "tensors 'a' and 'b' overlap"),
    ("contained overlap", safetensors_bytes({"a": f32([4], 0, 16), "b": f32([1], 12, 16),
                                             "c": f32([1], 4, 8)}, b"\0" * 16), "overlap"),
    ("metadata value not str", safetensors_bytes({"__metadata__": {"k": 1}}),
     "__metadata__ is not an object of string to string"),
    ("metadata not object", safetensors_bytes({"__metadata__": ["k"]}), "__metadata__ is not an object"),
    ("duplicate key", safetensors_bytes(None, b"\0" * 4, raw_header=(
        b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        b' "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')), "header repeats the key 'w'"),
]


@pytest.mark.parametrize("body,problem", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_header(body: bytes, problem: str) -> None:
    with pytest.raises(WeightFormatError) as caught:
        parse_header(MemorySource(body, NAME))
    message = str(caught.value)
    assert message.startswith(f"{NAME}: ")
    assert problem in message
    assert "\n" not in message and len(message) < 300
    assert caught.value.path == NAME


def test_hostile_name_is_cut_short_in_the_message() -> None:
    body = safetensors_bytes({"x" * 10_000 + "\n": 3})
    with pytest.raises(WeightFormatError) as caught:
        parse_header(MemorySource(body, NAME))
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_truncated_file_names_the_file(st_path: Path) -> None:
    data = st_path.read_bytes()
    cut = st_path.with_name("cut.safetensors")
    cut.write_bytes(data[:-10])
    source = LocalFile(cut)
    try:
        with pytest.raises(WeightFormatError, match=r"cut\.safetensors: tensor .* past the end"):
            parse_header(source)
    finally:
        source.close()
