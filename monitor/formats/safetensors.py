"""Safetensors: our own header parser and a reader over a `ByteSource`.

We parse the header ourselves instead of calling ``safetensors.safe_open`` because the same code
must run on bytes fetched by HTTP range from servers we do not trust: it reads the 8-byte length,
then exactly that many header bytes, and nothing else until a tensor is asked for. Every lie a
header can tell (lengths past the end, sizes that disagree with shape and dtype, tensors that
overlap) becomes a one-line `WeightFormatError` naming the file.

Format (https://github.com/huggingface/safetensors#format): ``u64 little-endian N``, then N bytes
of UTF-8 JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str:
str}}``, then the data area; offsets are relative to the data area, values are little-endian,
C order. This module also owns the canonical dtype table the other readers reuse.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.errors import WeightFormatError
from monitor.formats.base import (
    CHUNK_BYTES,
    ByteSource,
    LocalFile,
    WeightReader,
    check_element_range,
    first_overlap,
)
from monitor.records import TensorInfo

# safetensors' own MAX_HEADER_SIZE (safetensors/src/tensor.rs); a longer header is refused there too.
MAX_HEADER_BYTES = 100_000_000

# Canonical dtype name -> how its little-endian bytes are stored. BF16 and the FP8 types have no
# numpy dtype; they are stored as unsigned ints of the same width and decoded in `decode_le`.
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"), "F8_E4M3": np.dtype("u1"), "F8_E5M2": np.dtype("u1"),
}
ITEMSIZE: dict[str, int] = {name: dt.itemsize for name, dt in STORAGE_DTYPES.items()}


def _e4m3fn_table() -> np.ndarray:
    """float32 value of every F8_E4M3 byte (OCP "E4M3FN": bias 7, no infinities, S.1111.111 = NaN)."""
    table = np.empty(256, dtype=np.float32)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        exp, man = (b >> 3) & 0xF, b & 0x7
        if exp == 0xF and man == 0x7:
            table[b] = np.nan
        elif exp == 0:
            table[b] = sign * (man / 8) * 2.0**-6
        else:
            table[b] = sign * (1 + man / 8) * 2.0 ** (exp - 7)
    return table


_E4M3_TABLE = _e4m3fn_table()


def decode_le(raw: bytes, dtype: str) -> np.ndarray:
    """Little-endian bytes of canonical `dtype` -> a new float32 array (lossy for wide ints)."""
    stored = np.frombuffer(raw, dtype=STORAGE_DTYPES[dtype])
    out: np.ndarray
    if dtype == "BF16":  # bf16 is the high half of a float32
        out = (stored.astype(np.uint32) << 16).view(np.float32)
    elif dtype == "F8_E5M2":  # e5m2 is the high byte of a float16
        out = (stored.astype("<u2") << 8).view("<f2").astype(np.float32)
    elif dtype == "F8_E4M3":
        out = _E4M3_TABLE[stored]
    elif dtype == "BOOL":
        out = (stored != 0).astype(np.float32)
    else:
        out = stored.astype(np.float32)
    return out


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated safetensors header."""

    tensors: list[TensorInfo]  # sorted by position in the file; begin/end are absolute offsets
    metadata: dict[str, str]  # the optional "__metadata__" object
    header_len: int  # N, the JSON length; the data area starts at 8 + N

    @property
    def data_start(self) -> int:
        return 8 + self.header_len


def _q(value: object) -> str:
    """repr() cut to one short line, for hostile names and values in error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _HeaderProblem(Exception):
    """Raised inside the parser; `parse_header` adds the file name."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; a second entry could hide a tensor, so refuse.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _HeaderProblem(f"header repeats the key {_q(key)}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise _HeaderProblem(f"header is not JSON (it contains {name})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stored_size(shape: list[int], itemsize: int, limit: int) -> int:
    """numel * itemsize, stopping once past `limit` so a hostile shape cannot cost big-int time."""
    if 0 in shape:
        return 0
    size = itemsize
    for dim in shape:
        size *= dim
        if size > limit:
            return limit + 1
    return size


def _tensor(name: str, entry: object, data_start: int, data_size: int, file: str) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _HeaderProblem(f"tensor {_q(name)} is a JSON {type(entry).__name__}, not an object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise _HeaderProblem(f"tensor {_q(name)} has no {key}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in STORAGE_DTYPES:
        raise _HeaderProblem(f"tensor {_q(name)} has unknown dtype {_q(dtype)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _HeaderProblem(f"tensor {_q(name)} has shape {_q(shape)}, not a list of "
                             "non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_int, offsets))
            or not 0 <= offsets[0] <= offsets[1]):
        raise _HeaderProblem(f"tensor {_q(name)} has data_offsets {_q(offsets)}, not "
                             "[begin, end] integers with 0 <= begin <= end")
    begin, end = offsets
    if end > data_size:
        raise _HeaderProblem(f"tensor {_q(name)} ends at data offset {end}, past the end of "
                             f"the {data_size}-byte data area")
    need = _stored_size(shape, ITEMSIZE[dtype], data_size)
    if need != end - begin:
        size = f"more than the {data_size}-byte data area" if need > data_size else str(need)
        raise _HeaderProblem(f"tensor {_q(name)} spans {end - begin} bytes but {dtype} "
                             f"{_q(shape)} needs {size}")
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), file=file,
                      begin=data_start + begin, end=data_start + end)


def _metadata(value: object) -> dict[str, str]:
    if value is None:  # serde reads a null Option as "no metadata"
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _HeaderProblem("__metadata__ is not an object of string to string")
    return dict(value)


def _parse(source: ByteSource, max_header: int) -> SafetensorsHeader:
    if source.size < 8:
        raise _HeaderProblem(f"file is {source.size} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", source.read(0, 8))
    if header_len > max_header:
        raise _HeaderProblem(f"header length {header_len} exceeds the {max_header:,}-byte limit")
    if 8 + header_len > source.size:
        raise _HeaderProblem(f"header length {header_len} runs past the end of the "
                             f"{source.size}-byte file")
    raw = source.read(8, header_len)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _HeaderProblem(f"header is not valid UTF-8 (bad byte at header offset {e.start})"
                             ) from None
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise _HeaderProblem(f"header is not JSON ({e.msg} at header offset {e.pos})") from None
    except (ValueError, RecursionError) as e:  # >4300-digit ints, absurd nesting
        raise _HeaderProblem(f"header is not JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise _HeaderProblem(f"header is a JSON {type(doc).__name__}, not an object")

    data_start = 8 + header_len
    data_size = source.size - data_start
    metadata: dict[str, str] = {}
    tensors = []
    for name, entry in doc.items():
        if name == "__metadata__":
            metadata = _metadata(entry)
        else:
            tensors.append(_tensor(name, entry, data_start, data_size, source.name))
    tensors.sort(key=lambda t: (t.begin, t.end, t.name))
    overlap = first_overlap(tensors)
    if overlap:
        a, b = overlap
        raise _HeaderProblem(f"tensors {_q(a.name)} and {_q(b.name)} overlap "
                             f"(bytes {a.begin}..{a.end} and {b.begin}..{b.end})")
    return SafetensorsHeader(tensors=tensors, metadata=metadata, header_len=header_len)


def parse_header(source: ByteSource, max_header: int = MAX_HEADER_BYTES) -> SafetensorsHeader:
    """Read and validate the header of the safetensors file behind `source` (no tensor bytes).

    Remote readers pass a lower `max_header`: a server claiming a 90 MB header is lying.
    """
    try:
        return _parse(source, max_header)
    except _HeaderProblem as e:
        raise WeightFormatError(source.name, str(e)) from None


class SafetensorsReader(WeightReader):
    """A safetensors file over a `ByteSource`; owns the source and closes it."""

    format = "safetensors"

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.path = source.name
        self.header = parse_header(source)

    @classmethod
    def open(cls, path: str | Path) -> SafetensorsReader:
        """A reader over a local file; the file is closed again if its header is bad."""
        source = LocalFile(path)
        try:
            return cls(source)
        except BaseException:
            source.close()
            raise

    def tensors(self) -> list[TensorInfo]:
        return list(self.header.tensors)

    def chunks(self, info: TensorInfo, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        # Stored bytes are already canonical: little-endian, C order, in the declared dtype.
        self._check(info)
        for offset in range(info.begin, info.end, chunk_bytes):
            yield self.source.read(offset, min(chunk_bytes, info.end - offset))

    def values(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        self._check(info)
        check_element_range(info, start, count)
        size = ITEMSIZE[info.dtype]
        raw = self.source.read(info.begin + start * size, count * size)
        return decode_le(raw, info.dtype)

    def close(self) -> None:
        self.source.close()

    def _check(self, info: TensorInfo) -> None:
        if info.file != self.path:
            raise ValueError(f"tensor {info.name} belongs to {info.file}, not {self.path}")
