"""The local GitHub, driven by plain httpx2 the way the REST API documents it."""

from __future__ import annotations

import hashlib

import httpx2
import pytest

from monitor.sandbox.blobs import SizedBlob
from monitor.sandbox.github import GitHubServer

JSON = {"Accept": "application/vnd.github+json"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gh():
    with GitHubServer() as server:
        yield server


@pytest.fixture
def client():
    with httpx2.Client(headers=JSON) as c:
        yield c


def test_releases_newest_first_with_link_pages_and_asset_fields(gh: GitHubServer, client) -> None:
    for i in range(5):
        gh.add_release("acme", "llm", f"v{i}", {"model.safetensors": bytes([i]) * (10 + i)})
    gh.add_asset("acme", "llm", "v4", "old.bin", b"x" * 7, digest=False)

    first = client.get(f"{gh.url}/repos/acme/llm/releases", params={"per_page": 2})
    assert [r["tag_name"] for r in first.json()] == ["v4", "v3"]
    assert set(first.links) == {"next", "last"} and first.links["last"]["url"].endswith("page=3")
    second = client.get(first.links["next"]["url"])
    assert [r["tag_name"] for r in second.json()] == ["v2", "v1"]
    assert set(second.links) == {"next", "last", "prev", "first"}
    assert "next" not in client.get(second.links["last"]["url"]).links

    weights, old = first.json()[0]["assets"]
    assert weights["size"] == 14 and weights["digest"] == "sha256:" + hashlib.sha256(b"\x04" * 14).hexdigest()
    assert weights["url"] == f"{gh.url}/repos/acme/llm/releases/assets/{weights['id']}"
    assert weights["browser_download_url"].endswith("/acme/llm/releases/download/v4/model.safetensors")
    assert (old["digest"], old["size"]) == (None, 7)
    assert first.json()[0]["html_url"] == f"{gh.url}/acme/llm/releases/tag/v4"


def test_release_by_tag_and_not_found(gh: GitHubServer, client) -> None:
    rid = gh.add_release("acme", "llm", "v1.0/rc", {"a.gguf": b"g"})
    assert client.get(f"{gh.url}/repos/acme/llm/releases/tags/v1.0%2Frc").json()["id"] == rid
    missing = client.get(f"{gh.url}/repos/acme/llm/releases/tags/nope")
    assert missing.status_code == 404 and missing.json()["message"] == "Not Found"
    assert client.get(f"{gh.url}/repos/acme/gone/releases").status_code == 404
    with pytest.raises(ValueError, match="already has a release"):
        gh.add_release("acme", "llm", "v1.0/rc", {})


def test_asset_download_redirects_to_objects_with_ranges(gh: GitHubServer, client) -> None:
    data = bytes(range(200))
    gh.add_release("acme", "llm", "v1", {"model.bin": data})
    asset = client.get(f"{gh.url}/repos/acme/llm/releases/tags/v1").json()["assets"][0]

    assert client.get(asset["url"]).json()["name"] == "model.bin"  # JSON without the octet Accept
    redirect = client.get(asset["url"], headers={"Accept": "application/octet-stream"})
    assert redirect.status_code == 302 and redirect.headers["Location"].startswith(gh.objects_url)
    blob = redirect.headers["Location"]
    ranged = client.get(blob, headers={"Range": "bytes=10-19"})
    assert (ranged.status_code, ranged.content) == (206, data[10:20])
    assert ranged.headers["Content-Range"] == "bytes 10-19/200"
    assert client.get(blob, headers={"Range": "bytes=-3"}).content == data[-3:]
    unsatisfiable = client.get(blob, headers={"Range": "bytes=200-300"})
    assert (unsatisfiable.status_code, unsatisfiable.headers["Content-Range"]) == (416, "bytes */200")
    assert client.head(blob).headers["Content-Length"] == "200"
    browser = client.get(asset["browser_download_url"])
    assert browser.status_code == 302 and browser.headers["Location"] == blob
    assert gh.bytes_served("objects") == 10 + 3
    assert "X-RateLimit-Limit" not in ranged.headers  # the objects host is not the API


def test_lazy_blob_assets_are_served_by_range_without_being_built(gh: GitHubServer, client) -> None:
    huge = SizedBlob(size=3 << 30, prefix=b"GGUF")
    gh.add_release("acme", "llm", "v1", {"model.gguf": huge})
    asset = client.get(f"{gh.url}/repos/acme/llm/releases/tags/v1").json()["assets"][0]
    assert (asset["size"], asset["digest"]) == (3 << 30, f"sha256:{huge.sha256}")

    blob = client.get(asset["url"], headers={"Accept": "application/octet-stream"}).headers["Location"]
    assert client.get(blob, headers={"Range": "bytes=0-3"}).content == b"GGUF"
    assert client.get(blob, headers={"Range": "bytes=-2"}).content == b"\0\0"
    assert gh.bytes_served("objects") == 6


def test_etag_304_costs_no_budget_and_a_new_asset_changes_it(gh: GitHubServer, client) -> None:
    gh.add_release("acme", "llm", "v1", {"model.bin": b"1"})
    url = f"{gh.url}/repos/acme/llm/releases"
    first = client.get(url)
    etag, remaining = first.headers["ETag"], int(first.headers["X-RateLimit-Remaining"])
    assert etag.startswith('W/"')

    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert int(again.headers["X-RateLimit-Remaining"]) == remaining

    gh.add_asset("acme", "llm", "v1", "model.bin", b"22")  # replaced: a new asset id
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.json()[0]["assets"][0]["size"] == 2
    assert int(changed.headers["X-RateLimit-Remaining"]) == remaining - 1
    assert [r.bytes_served == 0 for r in gh.requests] == [False, True, False]


def test_primary_rate_limit_exhausts_and_resets_per_resource(client) -> None:
    clock = FakeClock()
    with GitHubServer(rate_limit=2, rate_reset_s=1, clock=clock) as gh:
        gh.add_release("acme", "llm", "v1", {"model.bin": b"1"})
        url = f"{gh.url}/repos/acme/llm/releases"
        ok = [client.get(url) for _ in range(2)]
        assert [r.headers["X-RateLimit-Remaining"] for r in ok] == ["1", "0"]
        assert ok[1].headers["X-RateLimit-Used"] == "2" and ok[1].headers["X-RateLimit-Resource"] == "core"

        limited = client.get(url)
        assert limited.status_code == 403 and "rate limit exceeded" in limited.json()["message"]
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert limited.headers["X-RateLimit-Reset"] == str(int(clock.now) + 1)
        search = client.get(f"{gh.url}/search/repositories", params={"q": "llm"})
        assert search.status_code == 200 and search.headers["X-RateLimit-Resource"] == "search"

        clock.now += 1
        assert client.get(url).headers["X-RateLimit-Remaining"] == "1"


def test_injected_secondary_limits_carry_retry_after(gh: GitHubServer, client) -> None:
    gh.add_release("acme", "llm", "v1", {"model.bin": b"1"})
    gh.fail_next("/repos/acme", status=429, retry_after=7)
    gh.fail_next("/repos/acme", status=500, retry_after=None)
    secondary = client.get(f"{gh.url}/repos/acme/llm/releases")
    assert secondary.status_code == 429 and secondary.headers["Retry-After"] == "7"
    assert "secondary rate limit" in secondary.json()["message"]
    assert secondary.headers["X-RateLimit-Remaining"] != "0"
    assert client.get(f"{gh.url}/repos/acme/llm/releases").status_code == 500
    assert client.get(f"{gh.url}/repos/acme/llm/releases").status_code == 200


def test_org_listing_and_search(gh: GitHubServer, client) -> None:
    for i in range(3):
        gh.add_repo("thieves", f"model-{i}", description="llama weights")
    gh.add_repo("honest", "tools", description="a llama tool")
    gh.add_repo("thieves", "website")

    org = client.get(f"{gh.url}/orgs/thieves/repos", params={"per_page": 2})
    assert [r["full_name"] for r in org.json()] == ["thieves/model-0", "thieves/model-1"]
    second = client.get(org.links["next"]["url"]).json()
    assert [r["full_name"] for r in second] == ["thieves/model-2", "thieves/website"]

    found = client.get(f"{gh.url}/search/repositories", params={"q": "llama weights"}).json()
    assert found["total_count"] == 3 and found["incomplete_results"] is False
    only_honest = client.get(f"{gh.url}/search/repositories", params={"q": "llama org:honest"}).json()
    assert [r["full_name"] for r in only_honest["items"]] == ["honest/tools"]


def test_required_token_and_the_log_of_who_sent_one() -> None:
    with GitHubServer(require_token="s3cret") as gh, httpx2.Client(headers=JSON) as client:
        gh.add_release("acme", "llm", "v1", {"model.bin": b"1"})
        url = f"{gh.url}/repos/acme/llm/releases"
        assert client.get(url).json()["message"] == "Requires authentication"
        assert client.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert [(r.status, r.authorization) for r in gh.requests] == [(401, False), (401, True), (200, True)]
