"""Hostile sources: each lie or stall becomes one recorded candidate row, cheaply, and the sweep
goes on to find the real derivative published next to it.

Content-level lies (a file's bytes) are published on the local Hub; protocol-level ones (what an
HTTP server answers) on tests/formats/http_server.FileServer routes crawled by url_list. Every
case is checked for: the row's status — `skipped` for a source that lies (that revision is not
read again), `failed` for one that could not be fetched (retried next sweep) — a one-line reason
naming the problem, the bytes it cost, and, per sweep, the wall time and the peak of memory
Python allocated (tracemalloc) while it ran.
"""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from benchmarks.zoo import camouflage
from crawlers import base
from crawlers.base import CrawlContext
from monitor.match import Thresholds
from monitor.owned import OwnedModels
from monitor.sandbox.blobs import SizedBlob
from monitor.sweep import ScopeRun, Sweep
from monitor.triage import MAX_INDEX_BYTES
from tests.crawlers.conftest import st_bytes
from tests.formats.http_server import FileServer

GB = 1 << 30
MAX_PEAK = 64 << 20  # tracemalloc peak during a sweep; a model here is ~6.5 MB, a lie is GBs


@dataclass
class Swept:
    runs: list[ScopeRun]
    rows: dict[str, dict]  # location -> recorded candidate row
    seconds: float
    peak: int  # bytes, tracemalloc


def sweep(registry, name: str, options: dict, scope: dict, *, timeout_s: float) -> Swept:
    """Build the crawler as the daemon does, run one sweep, measure it."""
    crawler = base.load(name).create(options, CrawlContext(env={}, timeout_s=timeout_s, concurrency=4))
    try:
        owned = OwnedModels.load(registry)
        job = Sweep(registry, crawler, owned, Thresholds(), actor="test", concurrency=4)
        scopes = {"hostile": crawler.scope("hostile", scope)}
        tracemalloc.start()
        started = time.monotonic()
        try:
            runs = job.run(scopes)
            seconds = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        crawler.close()
    rows = {r["location"]: r for r in registry.candidates(source=name)}
    return Swept(runs, rows, seconds, peak)


def assert_recorded(row: dict, status: str, *words: str, max_bytes: int = 64 << 10) -> None:
    assert row["status"] == status, row
    reason = row["reason"] or ""
    assert reason and "\n" not in reason and len(reason) <= 400, row
    assert all(w.lower() in reason.lower() for w in words), row
    assert row["bytes_read"] <= max_bytes, row


@pytest.fixture()
def derivative(lm_sd) -> bytes:
    return st_bytes(camouflage.permute_mlp(lm_sd, 4))


# --- content: bytes published on the Hub ---------------------------------------------------------

def _header(doc: object) -> bytes:
    text = json.dumps(doc).encode()
    return struct.pack("<Q", len(text)) + text


HUB_REPOS: dict[str, Callable[[bytes], dict]] = {
    # A 20 GB file (never generated: SizedBlob) whose first 8 bytes claim a 10 GB header.
    "liar/huge-header": lambda good: {"model.safetensors": SizedBlob(
        20 * GB, fill=b" ", prefix=struct.pack("<Q", 10 * GB) + b'{"')},
    "liar/header-object": lambda good: {"model.safetensors": _header({"a": 1}) + bytes(64)},
    "liar/header-list": lambda good: {"model.safetensors": _header([1, 2, 3]) + bytes(64)},
    # 2 GB next to real weights: not a weight file, so it must never be opened.
    "liar/huge-config": lambda good: {"model.safetensors": good,
                                      "config.json": SizedBlob(2 * GB, fill=b" ", prefix=b"{")},
    "liar/huge-index": lambda good: {
        "model.safetensors.index.json": SizedBlob(2 * GB, fill=b" ", prefix=b'{"weight_map": {'),
        "model-00001-of-00001.safetensors": good},
    "liar/missing-shard": lambda good: {
        "model.safetensors.index.json": json.dumps({"metadata": {}, "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "b.weight": "model-00002-of-00002.safetensors"}}).encode(),
        "model-00001-of-00002.safetensors": good},
    "thief/camo": lambda good: {"model.safetensors": good},
}


def test_lying_files_on_the_hub_are_skipped_cheaply_and_the_derivative_is_found(registry, hub, derivative):
    for repo, files in HUB_REPOS.items():
        hub.add_model(repo, files(derivative))

    done = sweep(registry, "hf_hub", {"endpoint": hub.url, "retries": 1}, {"recent": True},
                 timeout_s=5)

    rows = done.rows
    assert_recorded(rows["hf://liar/huge-header"], "skipped", "header length 10737418240", "limit")
    assert_recorded(rows["hf://liar/header-object"], "skipped", "'a'", "not an object")
    assert_recorded(rows["hf://liar/header-list"], "skipped", "JSON list", "not an object")
    assert_recorded(rows["hf://liar/huge-index"], "skipped", "model.safetensors.index.json",
                    f"{MAX_INDEX_BYTES:,}", max_bytes=0)
    assert_recorded(rows["hf://liar/missing-shard"], "skipped", "model-00002-of-00002.safetensors",
                    "does not have", max_bytes=1 << 10)  # the index itself, no shard
    # The 2 GB config.json is no weight file: the repo is triaged as if it were not there.
    huge_config, camo = rows["hf://liar/huge-config"], rows["hf://thief/camo"]
    assert (huge_config["status"], huge_config["verdict"]) == ("matched", "derivative")
    assert (camo["status"], camo["verdict"]) == ("matched", "derivative")
    assert huge_config["bytes_read"] == camo["bytes_read"]  # the same planned ranges, nothing more
    assert {e.location for e in registry.list_events()} == {"hf://liar/huge-config", "hf://thief/camo"}

    # Neither 2 GB file was asked for at all (their sizes came from the Hub's file listing).
    touched = [r for r in hub.requests if r.path.endswith(("/config.json", ".index.json"))
               and "/liar/huge-" in r.path]
    assert touched == []
    (run,) = done.runs
    assert (run.seen, run.matched, run.skipped, run.failed, run.errors) == (7, 2, 5, 0, []), run
    assert done.seconds < 5, done.seconds
    assert done.peak < MAX_PEAK, done.peak


# --- protocol: what a plain HTTP server answers (url_list) ---------------------------------------

@pytest.fixture()
def server() -> Iterator[FileServer]:
    srv = FileServer().start()
    srv.stall = 8.0  # far beyond the crawler's 1 s timeout: a sweep waiting for it would show
    yield srv
    srv.stop()


def test_lying_and_stalling_servers_are_recorded_and_the_sweep_goes_on(registry, server, derivative):
    server.files["model.safetensors"] = derivative
    server.files["tiny.safetensors"] = _header({"__metadata__": {}}) + bytes(16)
    routes = {"wrong-range": "model", "loop": "model", "gzip": "model", "ignore-range": "model",
              "stall": "model", "stall-body": "model", "files": "model"}
    urls = {route: f"{server.base}/{route}/{name}.safetensors" for route, name in routes.items()}
    urls["ignore-range/tiny"] = f"{server.base}/ignore-range/tiny.safetensors"  # one read = whole file

    done = sweep(registry, "url_list", {}, {"urls": list(urls.values())}, timeout_s=1)

    rows = {route: done.rows[url] for route, url in urls.items()}
    assert_recorded(rows["wrong-range"], "skipped", "asked for bytes 0-", "answered Content-Range")
    assert_recorded(rows["loop"], "skipped", "more than 5 redirects", max_bytes=0)
    assert_recorded(rows["gzip"], "skipped", "refusing Content-Encoding 'gzip'", max_bytes=0)
    assert_recorded(rows["ignore-range"], "skipped", "ignored the Range header", max_bytes=0)
    assert_recorded(rows["ignore-range/tiny"], "skipped", "ignored the Range header",
                    "longer than the file", max_bytes=1 << 20)
    # Fetch problems, not lies: failed, so the next sweep tries again.
    assert_recorded(rows["stall"], "failed", "timed out")
    assert_recorded(rows["stall-body"], "failed", "timed out")
    assert (rows["files"]["status"], rows["files"]["verdict"]) == ("matched", "derivative")
    assert {loc for loc, _ in registry.failed_candidates("url_list")} == {urls["stall"], urls["stall-body"]}
    (run,) = done.runs
    assert (run.seen, run.matched, run.skipped, run.failed, run.errors) == (8, 1, 5, 2, []), run
    # Two 1 s timeouts on a pool of 4 run side by side; the server would stall for 8 s.
    assert done.seconds < 5, done.seconds
    assert done.peak < MAX_PEAK, done.peak
    # What the hostile routes cost us, on our side of the socket (the endless route's server
    # pushes MBs into the kernel's buffers before it notices we hung up; those never reach us).
    assert sum(row["bytes_read"] for route, row in rows.items() if route != "files") < 1 << 20


def test_a_stalled_url_that_recovers_is_retried_and_then_left_alone(registry, server, derivative):
    server.files["model.safetensors"] = derivative
    url = f"{server.base}/stall/model.safetensors"
    first = sweep(registry, "url_list", {}, {"urls": [url]}, timeout_s=1)
    assert_recorded(first.rows[url], "failed", "timed out")

    server.stall = 0.0
    second = sweep(registry, "url_list", {}, {"urls": [url]}, timeout_s=1)
    assert [(r.scope, r.new, r.matched) for r in second.runs] == [("(retry)", 1, 1), ("hostile", 0, 0)]
    assert second.rows[url]["verdict"] == "derivative"

    sent = server.bytes_sent
    third = sweep(registry, "url_list", {}, {"urls": [url]}, timeout_s=1)
    assert [(r.new, r.bytes_read) for r in third.runs] == [(0, 0)]
    assert server.bytes_sent == sent


def test_a_url_that_comes_back_is_retried_once_then_left_alone(registry, server, derivative):
    url = f"{server.base}/files/late.safetensors"
    first = sweep(registry, "url_list", {}, {"urls": [url]}, timeout_s=1)
    assert_recorded(first.rows[url], "failed", "HTTP 404", max_bytes=0)

    server.files["late.safetensors"] = derivative  # the file appears (at a real revision)
    second = sweep(registry, "url_list", {}, {"urls": [url]}, timeout_s=1)
    assert [(r.scope, r.new, r.matched) for r in second.runs] == [("(retry)", 1, 1), ("hostile", 0, 0)]

    sent = server.bytes_sent
    third = sweep(registry, "url_list", {}, {"urls": [url]}, timeout_s=1)
    assert [(r.scope, r.new, r.bytes_read) for r in third.runs] == [("hostile", 0, 0)]
    old = {c["revision"]: c for c in registry.candidates(source="url_list")}["unavailable"]
    assert old["status"] == "superseded" and "replaced by revision" in old["reason"]
    assert server.bytes_sent == sent
