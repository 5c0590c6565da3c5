"""Fingerprint a weight file on a web server by reading only what the fingerprint plans.

The remote path of DESIGN.md's "cheapest evidence first": the safetensors header (8 bytes plus
its length), then the anchored-units plan for that header, fetched as coalesced ranges into a
`PrefetchedSource` that refuses any other read. No file digest is computed (that would mean
downloading the file); a crawler gets it from the source's API instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from monitor.errors import InputError
from monitor.fingerprint import ModelFingerprint, architecture, units
from monitor.formats.http import HttpRangeSource
from monitor.formats.ranges import PrefetchedSource
from monitor.formats.safetensors import SafetensorsReader, parse_header

COALESCE_GAP = 4 << 10  # ranges closer than this are fetched as one request (a few KB of waste
# costs less than a round trip; much more would break the 1 % budget on small models)


@dataclass(frozen=True)
class RemoteFingerprint:
    """A suspect's fingerprint and what it cost to read."""

    fingerprint: ModelFingerprint
    bytes_fetched: int
    size: int
    requests: int


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def fingerprint_url(url: str, client: httpx2.Client) -> RemoteFingerprint:
    """Header, then planned ranges: a suspect fingerprint of a remote .safetensors file."""
    if not httpx2.URL(url).path.endswith(".safetensors"):
        raise InputError(f"{url}: remote scans read .safetensors files only")
    source = HttpRangeSource(url, client)
    header = parse_header(source)
    ranges = [(0, header.data_start)] + [s.byte_range for s in units.plan(header.tensors)]
    with SafetensorsReader(PrefetchedSource.fetch(source, ranges, gap=COALESCE_GAP)) as reader:
        tensors = reader.tensors()
        fp = ModelFingerprint((), (), architecture.signature(tensors),
                              units.compute([reader], owned=False))
    return RemoteFingerprint(fp, source.bytes_fetched, source.size, source.requests)
