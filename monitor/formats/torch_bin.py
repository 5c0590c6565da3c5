"""PyTorch checkpoints (.bin/.pt/.pth), loaded only through torch's weights-only unpickler.

A torch checkpoint is a pickle, and unpickling runs whatever code the pickle names, so we never
unpickle it ourselves: ``torch.load(weights_only=True)`` is the only loader, and its refusals are
translated here into one-line `WeightFormatError`s. When torch refuses, `pickletools.genops`
(which walks opcodes without executing any) names the import that made it refuse, so the user
sees "refused: the pickle wants to run code (it imports posix.system)" rather than torch's
paragraph.

Zip checkpoints (torch >= 1.6) are memory-mapped only to learn each tensor's layout; where the
byte range of a tensor in the file is known (below), its values are read with pread, because
pages touched through the mapping would count in our RSS until the whole model sat there. Only
tensors without a known range are sliced from the mapping. Legacy (pre-zip) checkpoints cannot be
mmapped and are loaded into memory; they are rare and small.

``TensorInfo.begin/end``: for a contiguous tensor in a zip checkpoint they are the absolute byte
range of its values inside the file (the zip stores tensors uncompressed), taken from the record
offsets torch reports when loading onto the meta device. Where that is unavailable (legacy
files, non-contiguous views) they are ``0, nbytes``; a real zip offset is never 0, so
``begin == 0`` means "offset unknown". Tied weights share storage and report the same range.

Canonical bytes come from the in-memory tensor, which torch.load has already put in host byte
order; like the rest of the daemon this assumes a little-endian host.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from monitor.errors import WeightFormatError
from monitor.formats.base import CHUNK_BYTES, LocalFile, WeightReader, check_element_range, one_line
from monitor.formats.safetensors import decode_le
from monitor.records import TensorInfo

ZIP_MAGIC = b"PK\x03\x04"

# torch dtype -> canonical (safetensors) name; tensors of other dtypes are skipped, see `skipped`.
DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint64: "U64", torch.uint32: "U32", torch.uint16: "U16", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}

# Keys under which training checkpoints nest the state dict ({"state_dict": ..., "epoch": 3}).
_NESTING_KEYS = ("state_dict", "model")
_MAX_SCANNED_OPS = 5_000_000


@contextmanager
def _quiet() -> Iterator[None]:
    # torch warns about pickle protocols and TypedStorage; the error (if any) says what matters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _allowed_globals() -> set[str]:
    """What torch's weights-only unpickler accepts; private API, so fall back to torch.*."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        return set(_get_allowed_globals())
    except Exception:  # pragma: no cover - depends on the torch version
        return set()


def _globals_in(stream: IO[bytes], pickles: int) -> list[str]:
    """Names imported by the first `pickles` pickles in `stream`, found without executing them.

    Follows just enough of the stack to name STACK_GLOBAL's operands: the last two values pushed
    (None when not a string) and the memo, since protocol 4 reuses a module name via BINGET.
    """
    found: list[str] = []
    recent: list[str | None] = [None, None]
    memo: dict[int, str | None] = {}
    ops = 0
    try:
        for _ in range(pickles):
            for opcode, arg, _pos in pickletools.genops(stream):
                ops += 1
                if ops > _MAX_SCANNED_OPS:
                    return found
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and recent[0] is not None and recent[1] is not None:
                    found.append(f"{recent[0]}.{recent[1]}")
                if name == "MEMOIZE":
                    memo[len(memo)] = recent[1]
                elif name in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(arg, int):
                    memo[arg] = recent[1]
                elif name in ("GET", "BINGET", "LONG_BINGET") and isinstance(arg, int):
                    recent = [recent[1], memo.get(arg)]
                elif opcode.stack_after:
                    recent = [recent[1], arg if isinstance(arg, str) else None]
    except Exception:  # garbage after the pickles (legacy tensor data) or a broken pickle
        pass
    return found


def _unsafe_globals(path: str, is_zip: bool) -> list[str]:
    allowed = _allowed_globals()
    try:
        if is_zip:
            with zipfile.ZipFile(path) as archive:
                pkl = min((n for n in archive.namelist() if n.endswith("data.pkl")), key=len)
                with archive.open(pkl) as stream:
                    names = _globals_in(stream, 1)
        else:  # legacy layout: magic, protocol, sys info, the object, storage keys
            with open(path, "rb") as stream:
                names = _globals_in(stream, 5)
    except (OSError, ValueError, zipfile.BadZipFile):
        return []
    if allowed:
        unsafe = [n for n in names if n not in allowed]
    else:
        unsafe = [n for n in names if not n.startswith(("torch.", "collections.OrderedDict"))]
    return list(dict.fromkeys(unsafe))


def _refusal(path: str, message: str, is_zip: bool) -> str:
    """One line for torch's UnpicklingError: which import it refused, else torch's own reason."""
    named = re.search(r"GLOBAL ([\w.]+)", message)
    unsafe = [named.group(1)] if named else _unsafe_globals(path, is_zip)
    if unsafe:
        return f"refused: the pickle wants to run code (it imports {', '.join(unsafe[:3])})"
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    reasons = [ln.strip() for ln in message.splitlines()
               if ln.strip() and not ln.strip().startswith(boilerplate)]
    return f"refused by torch's weights-only loader ({one_line(reasons[0] if reasons else message)})"


def _load(path: str, is_zip: bool, device: str) -> Any:
    try:
        with _quiet():
            return torch.load(path, map_location=device, weights_only=True,
                              mmap=is_zip and device == "cpu")
    except pickle.UnpicklingError as e:
        raise WeightFormatError(path, _refusal(path, str(e), is_zip)) from None
    except Exception as e:  # corrupt files surface as RuntimeError, KeyError, EOFError, ...
        raise WeightFormatError(path, "not a readable torch checkpoint "
                                f"({type(e).__name__}: {one_line(str(e))})") from None


def _state_dict(obj: object, path: str) -> Mapping[Any, Any]:
    """The mapping of tensors, looking under "state_dict"/"model" when the top has none."""
    if not isinstance(obj, Mapping):
        raise WeightFormatError(path, f"holds a {type(obj).__name__}, not a state dict")
    state: Mapping[Any, Any] = obj
    for _ in range(3):  # {"model": {"state_dict": ...}} is the deepest nesting seen in the wild
        if any(isinstance(v, torch.Tensor) for v in state.values()):
            break
        inner = next((state[k] for k in _NESTING_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    return state


def _checkpoint_offsets(path: str, names: list[str]) -> dict[str, int]:
    """name -> absolute offset of its storage in the zip, from a meta-device load (no data read)."""
    try:
        meta = _state_dict(_load(path, True, "meta"), path)
    except WeightFormatError:
        return {}
    offsets = {}
    for name in names:
        t = meta.get(name)
        if not isinstance(t, torch.Tensor):
            continue
        offset = getattr(t.untyped_storage(), "_checkpoint_offset", None)
        if isinstance(offset, int) and offset > 0:
            offsets[name] = offset + int(t.storage_offset()) * t.element_size()
    return offsets


def _flat_slice(t: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Elements [start, start+count) of `t` in C order, contiguous, without copying all of `t`."""
    if t.is_contiguous():
        return t.reshape(-1)[start:start + count]
    row = t[0].numel() if t.dim() and t.shape[0] else 1
    first, last = start // row, -(-(start + count) // row)
    rows = t[first:last].contiguous().reshape(-1)  # copies only the rows it needs
    return rows[start - first * row:start - first * row + count]


class TorchReader(WeightReader):
    """A torch state dict; tensors in the dict's order, non-tensor entries ignored."""

    format = "torch"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._source: LocalFile | None = None
        try:
            with open(path, "rb") as f:
                is_zip = f.read(4) == ZIP_MAGIC
            size = Path(path).stat().st_size
        except OSError as e:
            raise WeightFormatError(path, f"cannot open: {e.strerror}") from None
        state = _state_dict(_load(self.path, is_zip, "cpu"), self.path)
        self._tensors: dict[str, torch.Tensor] = {}
        self.skipped: list[str] = []  # tensor names whose dtype/layout has no canonical form
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            if isinstance(key, str) and value.layout == torch.strided and value.dtype in DTYPE_NAMES:
                self._tensors[key] = value.detach()  # a saved nn.Parameter requires grad
            else:
                self.skipped.append(str(key))
        offsets = _checkpoint_offsets(self.path, list(self._tensors)) if is_zip else {}
        self._infos = [self._info(name, t, offsets.get(name), size)
                       for name, t in self._tensors.items()]

    def _info(self, name: str, t: torch.Tensor, offset: int | None, size: int) -> TensorInfo:
        nbytes = t.numel() * t.element_size()
        begin = offset if offset is not None and t.is_contiguous() and offset + nbytes <= size else 0
        return TensorInfo(name=name, dtype=DTYPE_NAMES[t.dtype], shape=tuple(t.shape),
                          file=self.path, begin=begin, end=begin + nbytes)

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def _file(self) -> LocalFile:
        if self._source is None:
            self._source = LocalFile(self.path)
        return self._source

    def chunks(self, info: TensorInfo, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        if info.begin:  # known range in the file: pread it, so mmap'd pages never pile up in RSS
            for offset in range(info.begin, info.end, chunk_bytes):
                yield self._file().read(offset, min(chunk_bytes, info.end - offset))
            return
        t = self._tensor(info)
        per_chunk = max(1, chunk_bytes // t.element_size())
        for start in range(0, t.numel(), per_chunk):
            piece = _flat_slice(t, start, min(per_chunk, t.numel() - start))
            yield piece.view(torch.uint8).numpy().tobytes()

    def values(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        check_element_range(info, start, count)
        if info.begin and info.numel:
            width = info.nbytes // info.numel
            raw = self._file().read(info.begin + start * width, count * width)
        else:
            raw = _flat_slice(self._tensor(info), start, count).view(torch.uint8).numpy().tobytes()
        return decode_le(raw, info.dtype)

    def close(self) -> None:
        self._tensors.clear()  # drops the last references to the mmap
        if self._source is not None:
            self._source.close()
            self._source = None

    def _tensor(self, info: TensorInfo) -> torch.Tensor:
        if info.file != self.path or info.name not in self._tensors:
            raise ValueError(f"tensor {info.name} is not in {self.path}")
        return self._tensors[info.name]
