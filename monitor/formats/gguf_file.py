"""GGUF files (llama.cpp), read through the `gguf` package's memory-mapped reader.

GGUF is the format stolen LLMs are most often re-published in, usually quantized. We report each
tensor as its file stores it: dtype is the GGML type name (F32, F16, BF16, Q8_0, Q4_K, ...),
begin/end are absolute offsets of its stored (possibly quantized) bytes, and `chunks` streams
those raw bytes. Only `values` dequantizes, and only the blocks that cover the elements asked for.

Shapes are given in torch order: GGUF lists dimensions fastest-first (``ne[0]`` is the row
length), the reverse of torch/numpy, and GGUF's data is laid out so that the reversed shape is
plain C order; a flat element index therefore means the same thing here as in the other readers.

`gguf.GGUFReader` raises ValueError, IndexError, KeyError and friends on a corrupt or hostile
file; all of them are translated to `WeightFormatError` in `__init__`, the one boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from monitor.errors import WeightFormatError
from monitor.formats.base import CHUNK_BYTES, WeightReader, check_element_range, first_overlap, one_line
from monitor.formats.safetensors import STORAGE_DTYPES, decode_le
from monitor.records import TensorInfo

GGUF_MAGIC = b"GGUF"


class GGUFReader(WeightReader):
    """A GGUF file; tensors in file order with their stored GGML types."""

    format = "gguf"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._gguf = gguf.GGUFReader(path, "r")
            infos = [self._info(t) for t in self._gguf.tensors]
        except OSError as e:
            raise WeightFormatError(path, f"cannot open: {e.strerror or e}") from None
        except Exception as e:  # gguf's parser has no error type of its own
            raise WeightFormatError(path, "not a readable GGUF file "
                                    f"({type(e).__name__}: {one_line(str(e))})") from None
        if self._gguf.byte_order != "I":
            # Quantized blocks hold multi-byte scales that gguf only decodes in host order.
            raise WeightFormatError(path, "big-endian GGUF files are not supported")
        infos.sort(key=lambda t: (t.begin, t.end, t.name))
        self._check_bounds(infos)
        self._infos = infos
        self._by_name = {t.name: t for t in infos}

    def _info(self, t: gguf.ReaderTensor) -> TensorInfo:
        begin = int(t.data_offset)
        return TensorInfo(name=t.name, dtype=t.tensor_type.name,
                          shape=tuple(int(d) for d in reversed(t.shape.tolist())),
                          file=self.path, begin=begin, end=begin + int(t.n_bytes))

    def _check_bounds(self, infos: list[TensorInfo]) -> None:
        size = len(self._gguf.data)
        for info in infos:
            if info.end > size:
                raise WeightFormatError(self.path, f"tensor {info.name!r} ends at byte {info.end},"
                                        f" past the end of the {size}-byte file")
        overlap = first_overlap(infos)
        if overlap:
            raise WeightFormatError(self.path, f"tensors {overlap[0].name!r} and "
                                    f"{overlap[1].name!r} overlap")

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def chunks(self, info: TensorInfo, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        self._check(info)
        data = self._gguf.data
        for offset in range(info.begin, info.end, chunk_bytes):
            yield data[offset:min(offset + chunk_bytes, info.end)].tobytes()

    def values(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        self._check(info)
        check_element_range(info, start, count)
        qtype = GGMLQuantizationType[info.dtype]
        block, block_bytes = GGML_QUANT_SIZES[qtype]
        # Blocks run along rows and rows are whole blocks, so flat element i is in block i // block.
        first, last = start // block, -(-(start + count) // block)
        raw = self._gguf.data[info.begin + first * block_bytes:info.begin + last * block_bytes]
        if info.dtype in STORAGE_DTYPES:  # F64 F32 F16 BF16 I64 I32 I16 I8: same bytes as ours
            decoded = decode_le(raw.tobytes(), info.dtype)
        else:
            try:
                decoded = gguf.quants.dequantize(np.asarray(raw), qtype).reshape(-1)
            except NotImplementedError:
                raise WeightFormatError(self.path, f"tensor {info.name!r}: the gguf package "
                                        f"cannot dequantize {info.dtype}") from None
        skip = start - first * block
        return np.asarray(decoded[skip:skip + count], dtype=np.float32)

    def close(self) -> None:
        # np.memmap has no close(); dropping our references lets the mapping go.
        self._by_name = {}
        self.__dict__.pop("_gguf", None)

    def _check(self, info: TensorInfo) -> None:
        if info.file != self.path or self._by_name.get(info.name) != info:
            raise ValueError(f"tensor {info.name} is not in {self.path}")
