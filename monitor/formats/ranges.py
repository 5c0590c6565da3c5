"""A byte source that holds only the ranges fetched in advance: the remote-scan path.

A crawler plans the ranges a fingerprint needs (the header, then `fingerprint.units.plan`),
fetches exactly those (coalesced), and hands this source to the ordinary readers. A read
outside what was fetched is an error, not a silent extra request: the plan is the contract,
and tests and benchmarks use this to prove a fingerprint reads nothing else.
"""

from __future__ import annotations

import bisect
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable

from monitor.errors import WeightFormatError
from monitor.formats.base import ByteSource


def coalesce(ranges: Iterable[tuple[int, int]], gap: int = 0) -> list[tuple[int, int]]:
    """Sorted, merged [begin, end) ranges; ranges closer than `gap` bytes become one request."""
    merged: list[list[int]] = []
    for begin, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and begin <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    return [(b, e) for b, e in merged]


class PrefetchedSource(ByteSource):
    """Serves reads from fetched ranges of a file of known size."""

    def __init__(self, name: str, size: int, chunks: dict[tuple[int, int], bytes]) -> None:
        self.name, self.size = name, size
        self._starts = sorted(begin for begin, _ in chunks)
        self._chunks = {begin: (end, data) for (begin, end), data in chunks.items()}

    @classmethod
    def fetch(cls, source: ByteSource, ranges: Iterable[tuple[int, int]], gap: int = 0,
              parallel: int = 1) -> PrefetchedSource:
        """Read the coalesced `ranges` from `source` once and keep them.

        `parallel` > 1 reads that many ranges at once (the source must be thread-safe, as
        HttpRangeSource is): over a 50 ms link a LLaMA's ~20 ranges cost one round trip, not 20.
        """
        plan = coalesce(ranges, gap)
        if parallel <= 1 or len(plan) <= 1:
            return cls(source.name, source.size, {(b, e): source.read(b, e - b) for b, e in plan})
        with ThreadPoolExecutor(min(parallel, len(plan))) as pool:
            data = list(pool.map(lambda r: source.read(r[0], r[1] - r[0]), plan))
        return cls(source.name, source.size, dict(zip(plan, data, strict=True)))

    @property
    def bytes_held(self) -> int:
        return sum(end - begin for begin, (end, _) in self._chunks.items())

    def read(self, offset: int, length: int) -> bytes:
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0:
            begin = self._starts[i]
            end, data = self._chunks[begin]
            if offset + length <= end:
                return data[offset - begin:offset - begin + length]
        raise WeightFormatError(self.name, f"bytes {offset}..{offset + length} were not fetched "
                                "(outside the planned ranges)")


class HeadCache(ByteSource):
    """A source whose first `head` bytes are fetched in one request and kept.

    A safetensors header is read as 8 bytes then the JSON: two round trips, and the planned
    ranges would fetch it a third time. One speculative read of the head serves all three.
    Headers are a few KB (tiny models) to ~100 KB, so the head is 0.1 % of the file, between
    4 KiB and 64 KiB: the speculation never costs more than a tenth of the 1 % read budget, and
    a longer header costs one more request.
    """

    def __init__(self, source: ByteSource, head: int | None = None) -> None:
        self.name, self.size = source.name, source.size
        self._source = source
        head = head if head is not None else max(4 << 10, min(64 << 10, source.size // 1000))
        self._head_len = min(head, source.size)
        self._head: bytes | None = None

    def read(self, offset: int, length: int) -> bytes:
        if self._head is None:
            self._head = self._source.read(0, self._head_len)
        if offset + length <= self._head_len:
            return self._head[offset:offset + length]
        if offset < self._head_len:
            return self._head[offset:] + self._source.read(self._head_len,
                                                           offset + length - self._head_len)
        return self._source.read(offset, length)

    def close(self) -> None:
        self._source.close()
