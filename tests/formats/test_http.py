"""HttpRangeSource against a real local server: exact bytes, and bounded failure on hostile routes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from monitor.errors import WeightFormatError
from monitor.formats.http import HttpRangeSource
from monitor.formats.ranges import PrefetchedSource
from monitor.formats.safetensors import SafetensorsReader
from tests.formats.http_server import FileServer

DATA = os.urandom(100_000)
TIMEOUT = 0.5


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer().start()
    srv.files["blob"] = DATA
    yield srv
    srv.stop()


@pytest.fixture
def cdn(server: FileServer) -> Iterator[FileServer]:
    srv = FileServer().start()
    srv.files = server.files
    server.redirect_to = srv.base
    yield srv
    srv.stop()


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=TIMEOUT) as c:
        yield c


class Sleeps(list[float]):
    """A fake `sleep` that records what it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def source(server: FileServer, client: httpx2.Client, route: str, **kw: object) -> HttpRangeSource:
    return HttpRangeSource(f"{server.base}/{route}/blob", client, **kw)  # type: ignore[arg-type]


# -- honest servers --------------------------------------------------------------------------------

def test_reads_exact_bytes_and_counts_them(server, client):
    src = source(server, client, "files")
    assert src.size == len(DATA)
    assert src.read(0, 8) == DATA[:8]
    assert src.read(12_345, 6_789) == DATA[12_345:19_134]
    assert src.read(len(DATA) - 1, 1) == DATA[-1:]
    assert src.read(50, 0) == b""
    assert src.bytes_fetched == 8 + 6_789 + 1
    gets = [h for m, _, h in server.log if m == "GET"]
    assert [h["Range"] for h in gets] == ["bytes=0-7", "bytes=12345-19133", "bytes=99999-99999"]
    assert all(h["Accept-Encoding"] == "identity" for h in gets)


def test_out_of_bounds_read_is_refused_without_a_request(server, client):
    src = source(server, client, "files")
    before = len(server.log)
    with pytest.raises(WeightFormatError, match="truncated"):
        src.read(len(DATA) - 4, 5)
    assert len(server.log) == before


def test_large_read_is_split_at_max_read(server, client):
    src = source(server, client, "files", max_read=30_000)
    assert src.read(1_000, 70_000) == DATA[1_000:71_000]
    ranges = [h["Range"] for m, _, h in server.log if m == "GET"]
    assert ranges == ["bytes=1000-30999", "bytes=31000-60999", "bytes=61000-70999"]


def test_size_from_content_range_when_head_has_no_length(server, client):
    src = source(server, client, "nolength")
    assert src.size == len(DATA) and src.bytes_fetched == 1
    assert [h.get("Range") for m, _, h in server.log if m == "GET"] == ["bytes=0-0"]
    assert src.read(10, 10) == DATA[10:20]


def test_redirect_to_cdn_is_paid_once_and_drops_credentials(server, cdn):
    with httpx2.Client(timeout=TIMEOUT, headers={"Authorization": "Bearer hub-token"}) as c:
        src = source(server, c, "redirect")
        for offset in (0, 500, 9_000):
            assert src.read(offset, 100) == DATA[offset:offset + 100]
    assert [m for m, _, _ in server.log] == ["HEAD"]  # the origin is asked once only
    assert [m for m, _, _ in cdn.log] == ["HEAD", "GET", "GET", "GET"]
    assert server.log[0][2]["Authorization"] == "Bearer hub-token"
    assert not any("Authorization" in h for _, _, h in cdn.log)


def test_client_auth_is_not_sent_to_cdn(server, cdn):
    with httpx2.Client(timeout=TIMEOUT, auth=("user", "secret")) as c:
        src = source(server, c, "redirect")
        src.read(0, 10)
    assert "Authorization" in server.log[0][2]
    assert not any("Authorization" in h for _, _, h in cdn.log)


@pytest.mark.parametrize(("cap", "waits"), [(30.0, [7.0, 7.0]), (0.01, [0.01, 0.01])])
def test_retry_after_is_honoured_with_a_cap(server, client, cap, waits):
    server.flaky = 2  # the server says Retry-After: 7
    sleeps = Sleeps()
    src = source(server, client, "flaky", sleep=sleeps, retry_after_cap=cap)
    assert src.read(100, 10) == DATA[100:110]
    assert sleeps == waits


def test_gives_up_after_retries(server, client):
    server.flaky = 10
    sleeps = Sleeps()
    src = source(server, client, "flaky", sleep=sleeps, retries=3, retry_after_cap=0.01)
    with pytest.raises(WeightFormatError, match="HTTP 429"):
        src.read(0, 10)
    assert sleeps == [0.01] * 3 and server.flaky == 6


def test_5xx_backs_off_exponentially(server, client):
    sleeps = Sleeps()
    src = source(server, client, "error-500", sleep=sleeps, backoff=0.25, retries=3)
    with pytest.raises(WeightFormatError, match="HTTP 500"):
        src.read(0, 10)
    assert sleeps == [0.25, 0.5, 1.0]


def test_safetensors_reader_over_http_matches_local(server, client, tmp_path: Path):
    tensors = {"embed.weight": torch.randn(64, 32), "norm.weight": torch.randn(32),
               "head.bias": torch.arange(10, dtype=torch.float16)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, path)
    server.files["model.safetensors"] = path.read_bytes()
    url = f"{server.base}/files/model.safetensors"

    src = HttpRangeSource(url, client)
    with SafetensorsReader(src) as reader, SafetensorsReader.open(path) as local:
        infos = {i.name: i for i in reader.tensors()}
        assert set(infos) == set(tensors)
        for name, t in tensors.items():
            got = reader.values(infos[name], 0, t.numel())
            np.testing.assert_array_equal(got, t.float().reshape(-1).numpy())
            mine = {i.name: i for i in local.tensors()}[name]
            assert b"".join(reader.chunks(infos[name])) == b"".join(local.chunks(mine))
        ranges = [(i.begin, i.end) for i in reader.tensors()]

    # The remote-scan path: plan ranges, fetch them through the HTTP source, read from memory.
    src = HttpRangeSource(url, client)
    header_end = 8 + int.from_bytes(src.read(0, 8), "little")
    pre = PrefetchedSource.fetch(src, [(0, header_end), *ranges])
    with SafetensorsReader(pre) as reader:
        info = next(i for i in reader.tensors() if i.name == "norm.weight")
        np.testing.assert_array_equal(reader.values(info, 0, 32), tensors["norm.weight"].numpy())
    assert src.bytes_fetched == 8 + pre.bytes_held


# -- hostile servers: a one-line error, quickly, having read little --------------------------------

def expect_error(make, match: str, max_bytes: int = 1 << 20, max_seconds: float = 3.0):
    start = time.monotonic()
    with pytest.raises(WeightFormatError, match=match) as info:
        make()
    assert time.monotonic() - start < max_seconds
    assert "\n" not in str(info.value)
    return info.value


def test_redirect_loop(server, client):
    err = expect_error(lambda: source(server, client, "loop"), "more than 5 redirects")
    assert err.path.endswith("/loop/blob")
    assert len(server.log) == 6


def test_server_ignoring_range_is_not_downloaded(server, client):
    src = source(server, client, "ignore-range")
    expect_error(lambda: src.read(0, 100), "ignored the Range header")
    assert src.bytes_fetched == 0


def test_server_ignoring_range_on_whole_file_read_is_capped(server, client):
    server.files["small"] = DATA[:1000]
    src = HttpRangeSource(f"{server.base}/ignore-range/small", client)
    expect_error(lambda: src.read(0, 1000), "ignored the Range header")
    assert src.bytes_fetched < 1000 + (1 << 20)


def test_wrong_content_range(server, client):
    src = source(server, client, "wrong-range")
    err = expect_error(lambda: src.read(10, 5), "answered Content-Range 'bytes 11-15/100000'")
    assert "bytes 10-14/100000" in err.problem and src.bytes_fetched == 0


def test_gzip_encoding_is_refused(server, client):
    src = source(server, client, "gzip")
    expect_error(lambda: src.read(0, 100), "Content-Encoding 'gzip'")
    assert src.bytes_fetched == 0


@pytest.mark.parametrize("route", ["stall", "stall-body"])
def test_stalled_server_times_out(server, client, route):
    server.stall = 2.0
    src = source(server, client, route)
    expect_error(lambda: src.read(0, 1000), "timed out", max_seconds=TIMEOUT + 1.0)
    assert src.bytes_fetched <= 500


def test_connection_refused(client):
    srv = FileServer()
    url = f"{srv.base}/files/blob"
    srv.server_close()  # the port is now closed
    expect_error(lambda: HttpRangeSource(url, client), "cannot connect")


def test_missing_file_and_invalid_url(server, client):
    expect_error(lambda: HttpRangeSource(f"{server.base}/files/nope", client), "HTTP 404")
    expect_error(lambda: HttpRangeSource("http://[::1", client), "invalid URL")


def test_expired_cdn_url_is_resolved_again(server, cdn, client):
    src = source(server, client, "redirect")
    assert src.read(0, 10) == DATA[:10]
    fresh = FileServer().start()
    try:
        fresh.files, cdn.files = {"blob": DATA}, {}  # the old CDN URL now answers 404
        server.redirect_to = fresh.base
        assert src.read(20, 10) == DATA[20:30]
        assert [m for m, _, _ in fresh.log] == ["GET"]
    finally:
        fresh.stop()
