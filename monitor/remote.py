"""Fingerprint remote weight files by reading only what the fingerprint plans.

The remote path of DESIGN.md's "cheapest evidence first", in two steps so a caller can stop
between them: `read_headers` (one request per file: the first 64 KiB hold the 8-byte length and,
for real checkpoints, the whole header), then — only when the architecture prefilter lets the
candidate through — `fingerprint` fetches the anchored-units plan as coalesced ranges into a
`PrefetchedSource` per file, which refuses any other read. No file digest is computed (that
would mean downloading the file); crawlers take it from the source's API instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass


from monitor.fingerprint import ModelFingerprint, architecture, units
from monitor.formats.base import ByteSource
from monitor.formats.ranges import HeadCache, PrefetchedSource
from monitor.formats.safetensors import SafetensorsHeader, SafetensorsReader, parse_header
from monitor.records import TensorInfo, WeightFile

COALESCE_GAP = 4 << 10  # ranges closer than this are fetched as one request (a few KB of waste
# costs less than a round trip; much more would break the 1 % budget on small models)
MAX_REMOTE_HEADER = 16 << 20  # real headers are KBs (a 7B shard's is ~30 KB); more is hostile
PARALLEL_RANGES = 4  # ranges of one file in flight at once (latency, not bandwidth, is the cost)


@dataclass(frozen=True)
class RemoteHeaders:
    """The parsed headers of one candidate's safetensors files, with their sources."""

    sources: tuple[HeadCache, ...]
    headers: tuple[SafetensorsHeader, ...]

    @property
    def tensors(self) -> list[TensorInfo]:
        return [t for h in self.headers for t in h.tensors]


def read_headers(sources: Sequence[ByteSource]) -> RemoteHeaders:
    """Parse each file's safetensors header (WeightFormatError names a file that lies)."""
    cached = tuple(HeadCache(s) for s in sources)
    return RemoteHeaders(cached, tuple(parse_header(s, MAX_REMOTE_HEADER) for s in cached))


def fingerprint(remote: RemoteHeaders, files: Sequence[WeightFile] = ()) -> ModelFingerprint:
    """The suspect fingerprint: architecture from the headers, units from the planned ranges.

    `files` (with the digests the source published) ride along for exact matching.
    """
    wanted: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for spec in units.plan(remote.tensors):
        wanted[spec.tensor.file].append(spec.byte_range)
    with ExitStack() as stack:
        readers = []
        for source, header in zip(remote.sources, remote.headers, strict=True):
            ranges = [(0, header.data_start)] + wanted.get(source.name, [])
            prefetched = PrefetchedSource.fetch(source, ranges, gap=COALESCE_GAP,
                                                parallel=PARALLEL_RANGES)
            readers.append(stack.enter_context(SafetensorsReader(prefetched)))
        tensors = [t for r in readers for t in r.tensors()]
        return ModelFingerprint(tuple(files), (), architecture.signature(tensors),
                                units.compute(readers, owned=False))
