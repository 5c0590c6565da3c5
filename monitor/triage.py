"""Triage one crawled candidate, cheapest evidence first, and say what it cost.

1. the digests the source published → an exact copy is matched with 0 weight bytes;
2. the safetensors headers (one small request per file; a sharded repo's files come from its
   index) → the architecture prefilter: no registered model it can be compared with, stop;
3. only then the byte ranges the robust fingerprint plans, coalesced, matched against the
   comparable models.

Pure of the registry and of threads: it takes the owned-model snapshot and a way to open files,
and returns an `Outcome`; the sweep records it. Every way a hostile or broken source can fail
ends here as an outcome with a one-line reason, never as an exception out of the sweep.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from crawlers.base import Candidate, RemoteFile, SkipCandidate
from monitor import remote
from monitor.errors import FetchError, MonitorError, SourceError, WeightFormatError
from monitor.fingerprint import ModelFingerprint, architecture
from monitor.formats.base import ByteSource
from monitor.match import Thresholds
from monitor.owned import OwnedModels
from monitor.records import Match, WeightFile

log = logging.getLogger(__name__)

OPAQUE = {".bin": "torch", ".pt": "torch", ".pth": "torch", ".ckpt": "torch", ".gguf": "gguf"}
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".7z", ".rar")
INDEX_SUFFIX = ".safetensors.index.json"
MAX_INDEX_BYTES = 8 << 20  # a 1T-parameter model's index is ~2 MB

OpenFile = Callable[[RemoteFile], ByteSource]


@dataclass(frozen=True)
class Outcome:
    """What became of one candidate revision.

    status: "matched" | "no_match" | "skipped" (this revision cannot be read: the reason says
    why; not retried) | "failed" (the source failed: retried next sweep).
    """

    status: str
    reason: str | None = None
    bytes_read: int = 0
    matches: tuple[Match, ...] = ()
    fingerprinted: bool = False


def triage(candidate: Candidate, open_file: OpenFile, owned: OwnedModels,
           thresholds: Thresholds) -> Outcome:
    """The verdicts for one candidate; never raises for anything a source can do."""
    meter = _Meter(open_file)
    if candidate.files is None:
        raise ValueError(f"{candidate.location}: files not listed (call Crawler.describe first)")
    try:
        return _triage(candidate, meter, owned, thresholds)
    except SkipCandidate as e:
        return Outcome("skipped", str(e), meter.bytes)
    except (FetchError, SourceError) as e:
        return Outcome("failed", str(e), meter.bytes)
    except WeightFormatError as e:
        return Outcome("skipped", str(e), meter.bytes)
    except MonitorError as e:
        return Outcome("failed", str(e), meter.bytes)
    finally:
        meter.close()


def _triage(candidate: Candidate, meter: _Meter, owned: OwnedModels,
            thresholds: Thresholds) -> Outcome:
    files = [f for f in candidate.files if _kind(f.path) in ("safetensors", *OPAQUE.values())]
    published = [_weight_file(f) for f in files if f.sha256 and f.size is not None]
    if hits := owned.with_file_sha256(f.sha256 for f in published):
        suspect = ModelFingerprint(tuple(published), (), architecture.signature([]), None)
        return Outcome("matched", None, 0, tuple(owned.judge(suspect, thresholds, hits)))
    shards = _safetensors_files(candidate, meter)
    if not shards:
        return Outcome("skipped", _nothing_readable(candidate), meter.bytes)
    headers = remote.read_headers([meter.open(f) for f in shards])
    comparable = owned.comparable(headers.tensors)
    if not comparable:
        return Outcome("no_match", "architecture: comparable to no registered model", meter.bytes)
    suspect = remote.fingerprint(headers, published)
    matches = owned.judge(suspect, thresholds, comparable)
    return Outcome("matched" if matches else "no_match", None, meter.bytes, tuple(matches), True)


def _safetensors_files(candidate: Candidate, meter: _Meter) -> list[RemoteFile]:
    """The files of the model: the shards an index names, else every .safetensors file."""
    by_path = {f.path: f for f in candidate.files}
    indexes = sorted((f for f in candidate.files if f.path.endswith(INDEX_SUFFIX)),
                     key=lambda f: (f.path.count("/"), f.path))
    if indexes:
        index = indexes[0]
        folder = posixpath.dirname(index.path)
        names = sorted(set(_weight_map(index, meter).values()))
        missing = [n for n in names if posixpath.join(folder, n) not in by_path]
        if missing:
            raise SkipCandidate(f"{index.path} names shards the repository does not have: "
                                f"{', '.join(missing[:3])}")
        return [by_path[posixpath.join(folder, n)] for n in names]
    return [f for f in candidate.files if _kind(f.path) == "safetensors"]


def _weight_map(index: RemoteFile, meter: _Meter) -> dict[str, str]:
    source = meter.open(index)
    if source.size > MAX_INDEX_BYTES:
        raise SkipCandidate(f"{index.path}: {source.size:,} bytes, more than a shard index "
                            f"can be ({MAX_INDEX_BYTES:,})")
    try:
        doc = json.loads(source.read(0, source.size))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SkipCandidate(f"{index.path}: not JSON ({type(e).__name__})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) and v.endswith(".safetensors") and "/" not in v and v != ".."
            for v in weight_map.values()):
        raise SkipCandidate(f"{index.path}: no weight_map of .safetensors shard names")
    return weight_map


def _nothing_readable(candidate: Candidate) -> str:
    kinds = sorted({_kind(f.path) for f in candidate.files} - {None, "other"})
    if "archive" in kinds:
        names = [f.path for f in candidate.files if _kind(f.path) == "archive"][:3]
        return f"archive, cannot be range-read: {', '.join(names)}"
    if kinds:
        return (f"weights only as {', '.join(kinds)} (not range-readable; checked by published "
                "SHA-256 only)")
    return "no weight files"


def _kind(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith(ARCHIVES):
        return "archive"
    return OPAQUE.get(posixpath.splitext(lower)[1], "other")


def _weight_file(f: RemoteFile) -> WeightFile:
    return WeightFile(f.path, f.size or 0, f.sha256 or "", _kind(f.path) or "other")


class _Meter:
    """Opens a candidate's files and adds up the bytes their sources took off the wire."""

    def __init__(self, open_file: OpenFile) -> None:
        self._open_file = open_file
        self._sources: list[ByteSource] = []
        self._stack = ExitStack()

    def open(self, file: RemoteFile) -> ByteSource:
        source = self._open_file(file)
        self._sources.append(source)
        self._stack.callback(source.close)
        return source

    @property
    def bytes(self) -> int:
        return sum(getattr(s, "bytes_fetched", 0) for s in self._sources)

    def close(self) -> None:
        self._stack.close()


def summarise(matches: Sequence[Match]) -> str | None:
    """The strongest verdict's value, for the candidate row (None when nothing matched)."""
    return matches[0].verdict.value if matches else None
