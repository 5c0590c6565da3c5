"""From a path the user gave to the weight files it holds, each counted once, and their readers.

A Hugging Face repository usually ships the same weights twice (``model.safetensors`` and
``pytorch_model.bin``), sometimes three times (Mistral's ``consolidated.safetensors`` next to the
sharded ``model-0000x-of-0000y.safetensors``), next to pickles that are not weights at all
(``training_args.bin``, ``optimizer.pt``). Counting every file would double count tensors and
trip over those pickles, so within one folder we pick a single format:

1. the shards named by ``*.safetensors.index.json`` (every listed shard must exist);
2. else every ``*.safetensors``;
3. else the shards named by ``pytorch_model.bin.index.json``, else every torch file
   (``.bin .pt .pth``) except the known non-weight ones;
4. else every ``*.gguf`` (each is a different quantization of the model, so all count).

Subfolders are searched only when a folder has no weights of its own (diffusers pipelines keep
``unet/``, ``vae/``... under a top level with none), hidden folders never. Order is by name.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from monitor.errors import NoWeightsError, WeightFormatError
from monitor.formats.base import WeightReader

EXTENSIONS = {".safetensors": "safetensors", ".gguf": "gguf",
              ".bin": "torch", ".pt": "torch", ".pth": "torch"}

# Pickles that trainers (HF Trainer, Lightning) leave next to the weights; never model weights.
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt",
               "scheduler.bin", "scaler.pt", "rng_state*.pth")


def detect_format(path: Path) -> str:
    """"safetensors", "torch" or "gguf" for a file, by extension; by content for other names.

    A ``.bin`` holding GGUF (some repos name them so) is sniffed as GGUF.
    """
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt in ("safetensors", "gguf"):
        return fmt
    sniffed = _sniff(path)
    if sniffed is not None:
        return sniffed
    if fmt is not None:
        return fmt  # let the torch reader say what is wrong with it
    raise NoWeightsError(path, "not a weight file (unknown extension, and the content is not "
                               "safetensors, a torch checkpoint or GGUF)")


def _sniff(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError:
        return None
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch zip, or a legacy pickle
        return "torch"
    return None


def find_weight_files(path: Path) -> list[Path]:
    """The weight files at `path` (a file, a snapshot or a sharded model folder), each once."""
    path = Path(path)
    if path.is_file():
        detect_format(path)  # raises NoWeightsError for a file that is not weights
        return [path]
    if not path.is_dir():
        raise NoWeightsError(path, "no such file or directory")
    files = _search(path, set())
    if not files:
        raise NoWeightsError(path)
    return files


def _search(folder: Path, seen: set[Path]) -> list[Path]:
    real = folder.resolve()
    if real in seen:  # a symlink loop
        return []
    seen.add(real)
    here = _weights_in(folder)
    if here:
        return here
    found: list[Path] = []
    for sub in _listing(folder):
        if sub.is_dir() and not sub.name.startswith("."):
            found += _search(sub, seen)
    return found


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise NoWeightsError(folder, f"cannot list the folder: {e.strerror or e}") from None


def _weights_in(folder: Path) -> list[Path]:
    """One format's weight files directly inside `folder`, by the precedence in the docstring."""
    files = [p for p in _listing(folder) if p.is_file() and not p.name.startswith(".")]
    indexes = [p for p in files if p.name.endswith(".safetensors.index.json")]
    if indexes:
        return _shards(indexes)
    by_ext = {fmt: [p for p in files if EXTENSIONS.get(p.suffix.lower()) == fmt]
              for fmt in ("safetensors", "torch", "gguf")}
    if by_ext["safetensors"]:
        return by_ext["safetensors"]
    indexes = [p for p in files if p.name.endswith(".bin.index.json")]
    if indexes:
        return _shards(indexes)
    torch_files = [p for p in by_ext["torch"]
                   if not any(PurePosixPath(p.name).match(pat) for pat in NOT_WEIGHTS)]
    return torch_files or by_ext["gguf"]


def _shards(indexes: list[Path]) -> list[Path]:
    """The files the indexes' weight_map points to; every one must exist inside the folder."""
    shards: set[Path] = set()
    for index in indexes:
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise WeightFormatError(index, f"not a shard index ({type(e).__name__}: {e})") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise WeightFormatError(index, "weight_map is not a non-empty object")
        for name in weight_map.values():
            if (not isinstance(name, str) or not name or "/" in name or "\\" in name
                    or name in (".", "..")):
                raise WeightFormatError(index, f"weight_map names {name!r}, not a file name")
            shard = index.parent / name
            if not shard.is_file():
                raise WeightFormatError(index, f"weight_map names shard {name!r}, which is "
                                        f"missing from {index.parent}")
            shards.add(shard)
    return sorted(shards)


def open_reader(path: Path) -> WeightReader:
    """A reader for one weight file, chosen by `detect_format`."""
    fmt = detect_format(path)
    if fmt == "safetensors":
        from monitor.formats.safetensors import SafetensorsReader
        return SafetensorsReader.open(path)
    if fmt == "gguf":
        from monitor.formats.gguf_file import GGUFReader
        return GGUFReader(path)
    from monitor.formats.torch_bin import TorchReader  # imports torch: only when needed
    return TorchReader(path)


def open_weights(path: Path) -> list[WeightReader]:
    """Readers for every weight file at `path`; the caller closes them."""
    readers: list[WeightReader] = []
    try:
        for file in find_weight_files(Path(path)):
            readers.append(open_reader(file))
    except BaseException:
        for reader in readers:
            reader.close()
        raise
    return readers
