"""The GitHub releases crawler against the local GitHub, through the real httpx2 client."""

from __future__ import annotations

import hashlib
import json

import pytest

from crawlers import base
from crawlers.github_releases import GitHubReleasesCrawler
from monitor.errors import ConfigError, SourceError
from monitor.sandbox.github import GitHubServer


class FakeTime:
    """One clock for the server's rate-limit windows and the crawler; sleeping advances it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def gh(clock: FakeTime):
    with GitHubServer(clock=clock) as server:
        yield server


@pytest.fixture
def make(clock: FakeTime):
    """Build crawlers on the fake clock (closed after the test)."""
    built: list[GitHubReleasesCrawler] = []

    def build(gh: GitHubServer, env: dict[str, str] | None = None, **options) -> GitHubReleasesCrawler:
        built.append(GitHubReleasesCrawler(GitHubReleasesCrawler.Options(**{"api_url": gh.url, **options}),
                                           base.CrawlContext(env=env or {}), sleep=clock.sleep, clock=clock))
        return built[-1]

    yield build
    for crawler in built:
        crawler.close()


def crawl(crawler, cursor=None, **scope):
    return list(crawler.discover(crawler.scope("test", scope), cursor))


def test_repos_orgs_and_search_list_releases_with_sizes_and_digests(gh: GitHubServer, make) -> None:
    weights = b"\x01" * 100
    gh.add_release("acme", "llm", "v1", {"model.safetensors": weights, "notes.txt": b"hi"})
    gh.add_release("thieves", "copy-a", "v1", {"weights.tar.gz": b"t" * 9})
    gh.add_release("thieves", "copy-b", "v2", {"model.gguf": b"g" * 5})
    gh.add_repo("thieves", "no-releases")
    gh.add_repo("found", "by-search", description="leaked llama weights")
    gh.add_release("found", "by-search", "r1", {"pytorch_model.bin": b"b" * 3}, digest=False)
    crawler = make(gh)

    seen = crawl(crawler, repos=["acme/llm"], orgs=["thieves"], search="leaked llama")

    by_page = {d.candidate.location.removeprefix(gh.url): d.candidate for d in seen}
    assert list(by_page) == ["/acme/llm/releases/tag/v1", "/thieves/copy-a/releases/tag/v1",
                             "/thieves/copy-b/releases/tag/v2", "/found/by-search/releases/tag/r1"]
    (model,) = by_page["/acme/llm/releases/tag/v1"].files  # notes.txt is no weight
    assert (model.path, model.size, model.sha256) == ("model.safetensors", 100, hashlib.sha256(weights).hexdigest())
    assert model.url.startswith(f"{gh.url}/repos/acme/llm/releases/assets/")
    assert [f.path for f in by_page["/thieves/copy-a/releases/tag/v1"].files] == ["weights.tar.gz"]
    assert by_page["/found/by-search/releases/tag/r1"].files[0].sha256 is None  # no digest published
    assert all(d.candidate.source == "github_releases" for d in seen)
    assert [d.cursor is None for d in seen] == [True, True, True, False]
    assert len(json.loads(seen[-1].cursor)["etags"]) == 5  # one per release listing asked
    assert gh.bytes_served("objects") == 0  # listing reads no weight bytes


def test_newest_releases_first_across_pages(gh: GitHubServer, make) -> None:
    for i in range(103):
        gh.add_release("acme", "llm", f"v{i}", {"m.bin": b"x"})

    seen = crawl(make(gh), repos=["acme/llm"], max_releases=101)

    assert len(seen) == 101
    assert seen[0].candidate.location.endswith("/tag/v102") and seen[-1].candidate.location.endswith("/tag/v2")
    assert [r.path.partition("?")[2] for r in gh.requests] == ["per_page=100", "per_page=100&page=2"]


def test_cursor_makes_unchanged_repos_cost_a_304_and_a_new_asset_changes_revision(gh: GitHubServer, make) -> None:
    gh.add_release("acme", "llm", "v1", {"model.bin": b"1"})
    gh.add_release("acme", "other", "v1", {"model.bin": b"2"})
    crawler = make(gh)
    first = crawl(crawler, repos=["acme/llm", "acme/other"])
    gh.clear_log()

    assert crawl(crawler, first[-1].cursor, repos=["acme/llm", "acme/other"]) == []
    assert [r.status for r in gh.requests] == [304, 304]

    gh.add_asset("acme", "llm", "v1", "extra.safetensors", b"3")
    (changed,) = crawl(crawler, first[-1].cursor, repos=["acme/llm", "acme/other"])
    assert changed.candidate.location == first[0].candidate.location
    assert changed.candidate.revision != first[0].candidate.revision
    assert changed.candidate.revision.startswith(f"{first[0].candidate.revision.partition('@')[0]}@")
    assert [f.path for f in changed.candidate.files] == ["model.bin", "extra.safetensors"]
    assert crawl(crawler, changed.cursor, repos=["acme/llm", "acme/other"]) == []

    gh.add_asset("acme", "llm", "v1", "README.md", b"not a weight")
    (same,) = crawl(crawler, changed.cursor, repos=["acme/llm"])
    assert same.candidate.revision == changed.candidate.revision  # only weight assets make the revision


def test_exhausted_rate_limit_waits_for_the_reset(clock: FakeTime, make) -> None:
    with GitHubServer(rate_limit=1, rate_reset_s=1, clock=clock) as gh:
        gh.add_release("acme", "a", "v1", {"model.bin": b"1"})
        gh.add_release("acme", "b", "v1", {"model.bin": b"2"})

        seen = crawl(make(gh), repos=["acme/a", "acme/b"])

        assert len(seen) == 2
        assert clock.slept == [2.0]  # until X-RateLimit-Reset (start + 1 s), plus one second
        assert [r.status for r in gh.requests] == [200, 403, 200]


def test_rate_limit_reset_beyond_max_wait_is_one_line_source_error(clock: FakeTime, make) -> None:
    with GitHubServer(rate_limit=0, rate_reset_s=3600, clock=clock) as gh:
        gh.add_release("acme", "a", "v1", {"model.bin": b"1"})
        with pytest.raises(SourceError) as err:
            crawl(make(gh, max_wait_s=60), repos=["acme/a"])
    message = str(err.value)
    assert message.startswith(f"github_releases: {gh.url}/repos/acme/a/releases?per_page=20: rate limited until ")
    assert "2023-11-14T23:13:20Z" in message and "max_wait_s=60" in message and "\n" not in message
    assert clock.slept == []


def test_secondary_rate_limit_waits_retry_after(gh: GitHubServer, clock: FakeTime, make) -> None:
    gh.add_release("acme", "a", "v1", {"model.bin": b"1"})
    gh.fail_next("/repos/acme/a", status=403, retry_after=7)
    gh.fail_next("/repos/acme/a", status=429, retry_after=3)

    assert len(crawl(make(gh), repos=["acme/a"])) == 1
    assert clock.slept == [7, 3]


def test_token_goes_to_the_api_and_never_to_the_objects_host(clock: FakeTime, make) -> None:
    data = bytes(range(256)) * 4
    with GitHubServer(require_token="ghp_test", clock=clock) as gh:
        gh.add_release("acme", "llm", "v1", {"model.safetensors": data})
        crawler = make(gh, env={"GITHUB_TOKEN": "ghp_test"})
        (found,) = crawl(crawler, repos=["acme/llm"])
        source = crawler.open(found.candidate.files[0])

        assert source.size == len(data)
        assert source.read(10, 20) == data[10:30] and source.read(1000, 24) == data[1000:]
        crawler.close()

    api = [r for r in gh.requests if r.server == "api"]
    objects = [r for r in gh.requests if r.server == "objects"]
    assert all(r.authorization for r in api) and [r.status for r in api] == [200, 302]
    assert [(r.range, r.authorization, r.status) for r in objects] == [("bytes=10-29", False, 206),
                                                                     ("bytes=1000-1023", False, 206)]
    assert gh.bytes_served("objects") == 44  # exactly the ranges asked for: no HEAD, no extra bytes


def test_persistent_500_is_a_source_error_naming_the_url(gh: GitHubServer, clock: FakeTime, make) -> None:
    gh.add_release("acme", "a", "v1", {"model.bin": b"1"})
    gh.fail_next("/repos/acme/a", status=500, retry_after=None, times=4)  # 1 + 3 retries

    with pytest.raises(SourceError, match=rf"^github_releases: {gh.url}/repos/acme/a/releases\?per_page=20: HTTP 500"):
        crawl(make(gh), repos=["acme/a"])
    assert clock.slept == [0.5, 1.0, 2.0]

    gh.fail_next("/repos/acme/a", status=502, retry_after=None)
    assert len(crawl(make(gh), repos=["acme/a"])) == 1  # a passing 5xx is retried


def test_missing_repo_and_unreachable_api_are_source_errors(gh: GitHubServer, make) -> None:
    with pytest.raises(SourceError, match=r"/repos/acme/gone/releases\?per_page=20: HTTP 404: Not Found$"):
        crawl(make(gh), repos=["acme/gone"])
    crawler = make(gh, api_url="http://127.0.0.1:9")
    with pytest.raises(SourceError, match=r"^github_releases: http://127.0.0.1:9/orgs/x/repos\?per_page=100: Connect"):
        crawl(crawler, orgs=["x"])


def test_refresh_finds_the_release_as_it_is_now(gh: GitHubServer, make) -> None:
    gh.add_release("acme", "llm", "v1.0/rc", {"model.bin": b"1"})
    crawler = make(gh)
    (found,) = crawl(crawler, repos=["acme/llm"])
    gh.add_asset("acme", "llm", "v1.0/rc", "model.gguf", b"2")

    now = crawler.refresh(found.candidate.location)

    assert now.location == found.candidate.location and now.revision != found.candidate.revision
    assert [f.path for f in now.files] == ["model.bin", "model.gguf"]
    assert crawler.refresh(f"{gh.url}/acme/llm/releases/tag/v9") is None
    with pytest.raises(SourceError, match="not a GitHub release page URL"):
        crawler.refresh(f"{gh.url}/acme/llm")


def test_entry_point_builds_it_from_a_config_table(gh: GitHubServer) -> None:
    gh.add_release("acme", "llm", "v1", {"model.bin": b"1"})
    cls = base.load("github_releases")
    crawler = cls.create({"api_url": gh.url}, base.CrawlContext(user_agent="pm-test/1"))
    try:
        assert cls is GitHubReleasesCrawler and len(crawl(crawler, repos=["acme/llm"])) == 1
    finally:
        crawler.close()
    with pytest.raises(ConfigError, match="crawlers.github_releases.api_ur"):
        cls.create({"api_ur": gh.url}, base.CrawlContext())


def test_options_and_scope_are_validated() -> None:
    options = GitHubReleasesCrawler.Options()
    assert options.api_url == "https://api.github.com" and options.max_wait_s == 900
    assert "*.safetensors" in options.asset_patterns and "*.tar.gz" in options.asset_patterns
    assert GitHubReleasesCrawler.scope("s", {"repos": ["a/b"]}).max_releases == 20
    with pytest.raises(ConfigError, match="crawlers.github_releases.scopes.s.repo"):
        GitHubReleasesCrawler.scope("s", {"repo": "a/b"})
