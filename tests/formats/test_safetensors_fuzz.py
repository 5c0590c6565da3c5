"""Property: parse_header on any bytes returns a sound header or raises WeightFormatError."""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import WeightFormatError
from monitor.formats.safetensors import ITEMSIZE, parse_header

from .conftest import MemorySource

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
small_ints = st.integers(-3, 70)
entries = st.fixed_dictionaries(
    {"dtype": st.sampled_from([*ITEMSIZE, "F33", "C64", ""]) | json_scalars,
     "shape": st.lists(small_ints, max_size=3) | json_values,
     "data_offsets": st.lists(small_ints, min_size=2, max_size=2) | st.lists(small_ints, max_size=3)
     | json_values},
    optional={"extra": json_values})
metadata = st.dictionaries(st.text(max_size=5), st.text(max_size=5) | json_scalars, max_size=3)
headers = st.dictionaries(st.text(max_size=6) | st.just("__metadata__"), entries | json_values,
                          max_size=6) | json_values


def assert_sound(body: bytes) -> None:
    """The property itself; any exception other than WeightFormatError fails the test."""
    source = MemorySource(body, "mem://fuzz.safetensors")
    try:
        header = parse_header(source)
    except WeightFormatError as e:
        assert str(e).startswith("mem://fuzz.safetensors: ") and "\n" not in str(e)
        return
    assert 8 + header.header_len <= len(body)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in header.metadata.items())
    previous_end = header.data_start
    for info in header.tensors:
        assert header.data_start <= info.begin <= info.end <= len(body)
        assert info.nbytes == info.numel * ITEMSIZE[info.dtype]
        assert all(isinstance(d, int) and d >= 0 for d in info.shape)
        if info.nbytes:
            assert info.begin >= previous_end, "overlapping tensors"
            previous_end = info.end


def with_length(header: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(body: bytes) -> None:
    assert_sound(body)


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=64))
def test_arbitrary_header_bytes(header: bytes, data: bytes) -> None:
    assert_sound(with_length(header, data))


@FUZZ
@given(headers, st.integers(0, 300), st.integers(-5, 5))
def test_json_headers(header: Any, data_size: int, length_lie: int) -> None:
    text = json.dumps(header).encode()
    body = with_length(text, bytes(data_size))
    assert_sound(body)
    lied = struct.pack("<Q", max(0, len(text) + length_lie)) + body[8:]
    assert_sound(lied)


@st.composite
def packed_files(draw: st.DrawFn) -> bytes:
    """Mostly-valid files: tensors laid out back to back, then a few offsets nudged."""
    header: dict[str, Any] = {}
    offset = 0
    for i in range(draw(st.integers(0, 5))):
        dtype = draw(st.sampled_from(sorted(ITEMSIZE)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = ITEMSIZE[dtype]
        for d in shape:
            size *= d
        begin = max(0, offset + draw(st.sampled_from([0, 0, 0, -1, 1, -4])))
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, begin + size]}
        offset = begin + size
    if draw(st.booleans()):
        header["__metadata__"] = draw(metadata)
    data = bytes(max(0, offset + draw(st.sampled_from([0, 0, -1, 1]))))
    return with_length(json.dumps(header).encode(), data)


@FUZZ
@given(packed_files())
def test_packed_files(body: bytes) -> None:
    assert_sound(body)


def test_packed_files_are_often_valid() -> None:
    """Guards the generator: if it only made broken files the property would prove little."""
    valid = 0

    @settings(max_examples=200, deadline=None, database=None)
    @given(packed_files())
    def count(body: bytes) -> None:
        nonlocal valid
        try:
            parse_header(MemorySource(body))
            valid += 1
        except WeightFormatError:
            pass

    count()
    assert valid > 20
