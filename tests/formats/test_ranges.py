"""Prefetched ranges: exactly what was planned can be read, nothing else."""

from __future__ import annotations

import pytest

from monitor.errors import WeightFormatError
from monitor.formats.ranges import PrefetchedSource, coalesce
from tests.formats.conftest import MemorySource


def test_coalesce_merges_overlaps_and_small_gaps():
    assert coalesce([(10, 20), (0, 5), (18, 30), (33, 40), (50, 50)]) == [(0, 5), (10, 30), (33, 40)]
    assert coalesce([(0, 5), (8, 10)], gap=3) == [(0, 10)]


def test_reads_inside_fetched_ranges_only():
    src = MemorySource(bytes(range(100)))
    pre = PrefetchedSource.fetch(src, [(10, 20), (15, 30), (60, 70)])
    assert src.reads == [(10, 20), (60, 10)] and pre.bytes_held == 30
    assert pre.read(12, 5) == bytes(range(12, 17)) and pre.read(60, 10) == bytes(range(60, 70))
    with pytest.raises(WeightFormatError, match="not fetched"):
        pre.read(25, 10)
    with pytest.raises(WeightFormatError, match="not fetched"):
        pre.read(0, 1)
