"""The local Hub, driven by the real huggingface_hub client (and httpx2 for raw ranges)."""

from __future__ import annotations

import hashlib
import json
import struct
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from safetensors.torch import save_file

from monitor.formats.http import HttpRangeSource
from monitor.formats.safetensors import decode_le, parse_header
from monitor.sandbox.blobs import SizedBlob, SyntheticSafetensors, llama_layout
from monitor.sandbox.hub import HubServer



@pytest.fixture(autouse=True)
def _loopback(loopback_only) -> None:
    """Online client, no token, no telemetry, and any socket off 127.0.0.1 is an error."""


@pytest.fixture
def hub():
    with HubServer(page_size=3) as server:
        yield server


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> bytes:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_file({"embed.weight": torch.randn(16, 8), "head.weight": torch.randn(8, 16)}, str(path))
    return path.read_bytes()


def test_list_models_follows_link_pages_and_filters(hub: HubServer) -> None:
    thieves = {f"thief/llama-copy-{i}" for i in range(8)}
    for repo in sorted(thieves):
        hub.add_model(repo, {"config.json": b"{}"})
    hub.add_model("thief/unrelated", {"config.json": b"{}"})
    hub.add_model("honest/llama-own", {"config.json": b"{}"})

    found = [m.id for m in HfApi(endpoint=hub.url, token=False).list_models(search="llama", author="thief")]

    assert sorted(found) == sorted(thieves)
    pages = [r for r in hub.requests if r.path.startswith("/api/models?")]
    assert len(pages) == 3  # 8 results, 3 a page
    assert all("search=llama" in r.path and "author=thief" in r.path for r in pages)


def test_list_models_filter_sort_limit_and_expand(hub: HubServer) -> None:
    day = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for i in range(5):
        hub.add_model(f"x/ft-{i}", {"model.safetensors": b"w"}, base_model="owner/base",
                      last_modified=day + timedelta(days=i))
    hub.add_model("x/other", {"model.gguf": b"w"})
    api = HfApi(endpoint=hub.url, token=False)

    newest = list(api.list_models(filter="base_model:owner/base", sort="last_modified", limit=4,
                                  expand=["sha", "lastModified"]))

    assert [m.id for m in newest] == ["x/ft-4", "x/ft-3", "x/ft-2", "x/ft-1"]
    assert newest[0].last_modified == day + timedelta(days=4)
    assert newest[0].sha is not None and newest[0].tags is None  # expand returns only what was asked
    assert [m.id for m in api.list_models(filter=["gguf"])] == ["x/other"]


def test_model_info_siblings_carry_real_sha256(hub: HubServer, weights: bytes) -> None:
    sha = hub.add_model("thief/copy", {"model.safetensors": weights, "config.json": b'{"a": 1}'},
                        tags=["text-generation"], base_model="owner/base")
    api = HfApi(endpoint=hub.url, token=False)

    info = api.model_info("thief/copy", files_metadata=True)

    assert info.sha == sha and info.id == "thief/copy"
    assert info.card_data.base_model == "owner/base" and "text-generation" in info.tags
    files = {s.rfilename: s for s in info.siblings}
    assert files["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert files["model.safetensors"].size == files["model.safetensors"].lfs.size == len(weights)
    assert files["config.json"].lfs is None and files["config.json"].size == 8
    assert hub.bytes_served("cdn") == 0  # metadata alone reads no weight bytes


def test_pushing_changes_sha_and_old_revision_stays_readable(hub: HubServer) -> None:
    old = hub.add_model("a/b", {"model.safetensors": b"one"})
    new = hub.add_model("a/b", {"model.safetensors": b"two", "extra.bin": b"3"})
    api = HfApi(endpoint=hub.url, token=False)

    assert old != new and api.model_info("a/b").sha == new
    pinned = api.model_info("a/b", revision=old, files_metadata=True)
    assert pinned.sha == old and [s.rfilename for s in pinned.siblings] == ["model.safetensors"]
    assert pinned.siblings[0].lfs.sha256 == hashlib.sha256(b"one").hexdigest()


def test_hf_hub_download_goes_through_the_cdn(hub: HubServer, weights: bytes, tmp_path: Path) -> None:
    sha = hub.add_model("thief/copy", {"model.safetensors": weights})

    path = hf_hub_download("thief/copy", "model.safetensors", endpoint=hub.url, cache_dir=tmp_path, token=False)

    assert Path(path).read_bytes() == weights and sha in path
    head, get = hub.requests
    assert (head.server, head.method, head.status) == ("hub", "HEAD", 302)
    assert (get.server, get.method, get.status) == ("cdn", "GET", 200)
    assert hub.bytes_served("cdn") == len(weights)


def test_file_metadata_and_header_range_read_only_eight_bytes(hub: HubServer, weights: bytes) -> None:
    sha = hub.add_model("thief/copy", {"model.safetensors": weights})
    url = hf_hub_url("thief/copy", "model.safetensors", endpoint=hub.url)

    meta = get_hf_file_metadata(url, token=False)
    assert (meta.commit_hash, meta.etag, meta.size) == (sha, hashlib.sha256(weights).hexdigest(), len(weights))
    assert meta.location.startswith(hub.cdn_url)

    with httpx2.Client(follow_redirects=True) as client:
        r = client.get(url, headers={"Range": "bytes=0-7"})
    assert r.status_code == 206 and len(r.content) == 8
    assert r.headers["Content-Range"] == f"bytes 0-7/{len(weights)}"
    (header_len,) = struct.unpack("<Q", r.content)
    assert "embed.weight" in json.loads(weights[8: 8 + header_len])
    assert hub.bytes_served("cdn") == 8


def test_cdn_ranges_suffix_open_and_unsatisfiable(hub: HubServer) -> None:
    hub.add_model("a/b", {"model.bin": bytes(range(100))})
    blob = f"{hub.cdn_url}/{hashlib.sha256(bytes(range(100))).hexdigest()}"
    with httpx2.Client() as client:
        assert client.get(blob, headers={"Range": "bytes=-3"}).content == bytes([97, 98, 99])
        assert client.get(blob, headers={"Range": "bytes=98-"}).content == bytes([98, 99])
        assert client.get(blob, headers={"Range": "bytes=200-300"}).status_code == 416
        head = client.head(blob)
    assert head.headers["Content-Length"] == "100" and head.headers["Accept-Ranges"] == "bytes"


def test_injected_429_is_seen_and_retried_by_the_client(hub: HubServer) -> None:
    hub.add_model("a/b", {"config.json": b"{}"})
    api = HfApi(endpoint=hub.url, token=False)

    hub.fail_next("/api/models/a/b", status=429, retry_after=0)
    with pytest.raises(HfHubHTTPError) as err:  # model_info does not retry
        api.model_info("a/b")
    assert err.value.response.status_code == 429

    hub.fail_next("/api/models", status=429, retry_after=0)
    start = time.monotonic()
    assert [m.id for m in api.list_models()] == ["a/b"]  # pagination retries (Retry-After + 1 s)
    assert time.monotonic() - start >= 1.0
    assert [r.status for r in hub.requests if r.path.partition("?")[0] == "/api/models"] == [429, 200]


def test_missing_repo_revision_and_file_raise_hub_errors(hub: HubServer, tmp_path: Path) -> None:
    hub.add_model("a/b", {"config.json": b"{}"})
    api = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("a/missing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("a/b", revision="f" * 40)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("a/b", "nope.safetensors", endpoint=hub.url, cache_dir=tmp_path, token=False)


def test_delay_applies_to_every_request(hub: HubServer) -> None:
    hub.add_model("a/b", {"config.json": b"{}"})
    hub.delay_s = 0.2
    start = time.monotonic()
    HfApi(endpoint=hub.url, token=False).model_info("a/b")
    assert time.monotonic() - start >= 0.2


# --- lazily generated blobs ------------------------------------------------------------------------

_SMALL_LLAMA = llama_layout(vocab=1024, hidden=64, ffn=172, layers=2, dtype="BF16")


def test_synthetic_safetensors_header_parses_over_http_ranges(hub: HubServer) -> None:
    blob = SyntheticSafetensors(_SMALL_LLAMA, seed=7)
    hub.add_model("x/synthetic", {"model.safetensors": blob, "config.json": b"{}"})
    info = HfApi(endpoint=hub.url, token=False).model_info("x/synthetic", files_metadata=True)
    sibling = next(s for s in info.siblings if s.rfilename == "model.safetensors")
    assert (sibling.lfs.sha256, sibling.size) == (blob.sha256, blob.size)

    url = hf_hub_url("x/synthetic", "model.safetensors", endpoint=hub.url)
    with httpx2.Client() as client:
        header = parse_header(HttpRangeSource(url, client))

    assert [(t.name, t.dtype, tuple(t.shape)) for t in header.tensors] == _SMALL_LLAMA
    assert header.tensors[-1].end == blob.size  # the data area is exactly the tensors, no gaps
    assert hub.bytes_served("cdn") == 8 + header.header_len


def test_synthetic_ranges_are_stable_and_look_like_weights(hub: HubServer) -> None:
    blob = SyntheticSafetensors(_SMALL_LLAMA, seed=7)
    hub.add_model("x/synthetic", {"model.safetensors": blob})
    url = hf_hub_url("x/synthetic", "model.safetensors", endpoint=hub.url)
    with httpx2.Client() as client:
        source = HttpRangeSource(url, client)
        header = parse_header(source)
        up = next(t for t in header.tensors if t.name.endswith("0.mlp.up_proj.weight"))
        first = source.read(up.begin, up.nbytes)
        again = source.read(up.begin, up.nbytes)
        halves = source.read(up.begin, 1000) + source.read(up.begin + 1000, up.nbytes - 1000)

    assert first == again == halves == blob.read(up.begin, up.end)
    assert SyntheticSafetensors(_SMALL_LLAMA, seed=7).read(up.begin, up.end) == first  # new object
    assert SyntheticSafetensors(_SMALL_LLAMA, seed=8).read(up.begin, up.end) != first
    values = decode_le(first, "BF16")
    assert abs(float(values.std()) - 0.02) < 0.002 and abs(float(values.mean())) < 0.002
    norm = next(t for t in header.tensors if t.name == "model.norm.weight")
    assert abs(float(decode_le(blob.read(norm.begin, norm.end), "BF16").mean()) - 1.0) < 0.01


def test_two_gigabyte_blobs_are_served_in_pieces_without_building_them(hub: HubServer) -> None:
    big_config = SizedBlob(2 << 30, fill=b" ", prefix=b'{"a": 1,')
    big_weights = SyntheticSafetensors(llama_layout(vocab=32000, hidden=4096, ffn=11008, layers=2), 1)
    assert big_weights.size > 1 << 30
    hub.add_model("x/huge", {"config.json": big_config, "model.safetensors": big_weights})
    config_url = hf_hub_url("x/huge", "config.json", endpoint=hub.url)
    weights_url = hf_hub_url("x/huge", "model.safetensors", endpoint=hub.url)

    tracemalloc.start()
    try:
        with httpx2.Client(follow_redirects=True) as client:
            tail = client.get(weights_url, headers={"Range": "bytes=-4000000"})
            far = client.get(config_url, headers={"Range": f"bytes={(2 << 30) - 10}-"})
            with client.stream("GET", config_url) as whole:  # no Range: the whole 2 GB, streamed
                assert whole.headers["Content-Length"] == str(2 << 30)
                got = 0
                for piece in whole.iter_raw():
                    got += len(piece)
                    if got >= 8 << 20:
                        break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert tail.status_code == 206 and tail.content == big_weights.read(big_weights.size - 4000000,
                                                                         big_weights.size)
    assert far.status_code == 206 and far.content == b" " * 10
    assert got >= 8 << 20
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_sized_blob_prefix_and_fill_by_range() -> None:
    blob = SizedBlob(20, fill=b"ab", prefix=b"XYZ")
    whole = blob.read(0, 20)
    assert whole == b"XYZ" + b"abababababababab" + b"a" and len(whole) == 20
    assert all(blob.read(i, j) == whole[i:j] for i in range(21) for j in range(i, 22))
    assert blob.sha256 != SizedBlob(21, fill=b"ab", prefix=b"XYZ").sha256
