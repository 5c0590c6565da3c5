"""Model files attached to GitHub releases, listed through the REST API (version 2022-11-28).

One candidate per release: its weight-like assets (and archives, which the sweep records as
skipped: they cannot be range-read) with the size and the `digest` GitHub publishes for assets
uploaded since 2025, so an exact copy costs no download at all.

Politeness follows GitHub's REST guide (docs.github.com, rest/using-the-rest-api/best-practices
-for-using-the-rest-api and rate-limits-for-the-rest-api): release listings are fetched with
If-None-Match and the ETag stored in the cursor, and a 304 costs no rate-limit budget; on 403/429
with X-RateLimit-Remaining: 0 we wait until X-RateLimit-Reset, on Retry-After that long, and
never retry a rate limit sooner. Organisation and search listings are fetched whole each sweep:
a 304 there would leave us without the repositories to ask about.

The token (GITHUB_TOKEN) goes to the API host only: asset downloads redirect to
objects.githubusercontent.com, and `HttpRangeSource` drops Authorization across origins.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

import httpx2
from pydantic import Field

from crawlers.base import Candidate, Crawler, CrawlContext, Discovered, RemoteFile, Settings
from monitor.config import read_secret
from monitor.errors import SourceError
from monitor.formats.base import ByteSource, one_line
from monitor.formats.http import HttpRangeSource

API_VERSION = "2022-11-28"
RETRIES_5XX = 3  # then the listing fails with SourceError
MAX_RATE_WAITS = 5  # a server that keeps saying "wait" after we waited is failing, not busy
SECONDARY_WAIT_S = 60.0  # a 429 with neither Retry-After nor a reset: "wait at least one minute"


class Options(Settings):
    """The [crawlers.github_releases] keys."""

    api_url: str = "https://api.github.com"
    asset_patterns: list[str] = ["*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf",
                                 "*.zip", "*.tar", "*.tar.gz", "*.tgz", "*.7z"]
    max_wait_s: float = 900.0  # longest sleep for a rate-limit reset; beyond it the scope fails


class Scope(Settings):
    """One [crawlers.github_releases.scopes.<name>] table: where to look."""

    repos: list[str] = []  # "owner/name"
    orgs: list[str] = []  # every repository of these organisations
    search: str | None = None  # a repository search query, e.g. "llama weights in:description"
    max_releases: int = Field(20, ge=1)  # per repository, newest first


class GitHubReleasesCrawler(Crawler):
    name = "github_releases"
    Options = Options
    Scope = Scope

    def __init__(self, options: Settings | None = None, context: CrawlContext | None = None, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        super().__init__(options, context)
        self._sleep, self._clock = sleep, clock
        self._api_url = self.options.api_url.rstrip("/")
        token = read_secret("GITHUB_TOKEN", dict(self.context.env))
        auth = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        common = {"User-Agent": self.context.user_agent, "X-GitHub-Api-Version": API_VERSION, **auth}
        self._api = httpx2.Client(headers={**common, "Accept": "application/vnd.github+json"},
                                  timeout=self.context.timeout_s, follow_redirects=True)
        self._downloads = httpx2.Client(headers={**common, "Accept": "application/octet-stream"},
                                        timeout=self.context.timeout_s)

    # -- Crawler ---------------------------------------------------------------------------------

    def discover(self, scope: Scope, cursor: str | None) -> Iterator[Discovered]:
        etags: dict[str, str] = json.loads(cursor)["etags"] if cursor else {}
        seen = dict(etags)
        pending: Candidate | None = None  # held back so only the last one carries the cursor
        for repo in self._repositories(scope):
            for release in self._releases(repo, scope.max_releases, seen):
                if (candidate := self._candidate(release)) is None:
                    continue
                if pending is not None:
                    yield Discovered(pending, None)
                pending = candidate
        if pending is not None:
            yield Discovered(pending, json.dumps({"etags": seen}, sort_keys=True))

    def refresh(self, location: str) -> Candidate | None:
        owner_repo, sep, tag = urlsplit(location).path.strip("/").partition("/releases/tag/")
        if not sep or owner_repo.count("/") != 1 or not tag:
            raise SourceError(self.name, f"{location}: not a GitHub release page URL")
        url = f"{self._api_url}/repos/{owner_repo}/releases/tags/{quote(unquote(tag), safe='')}"
        response = self._get(url, missing_ok=True)
        return None if response is None else self._candidate(self._decode(response))

    def open(self, file: RemoteFile) -> ByteSource:
        return HttpRangeSource(file.url, self._downloads, size=file.size, sleep=self._sleep)

    def close(self) -> None:
        self._api.close()
        self._downloads.close()

    # -- listing ---------------------------------------------------------------------------------

    def _repositories(self, scope: Scope) -> Iterator[str]:
        """"owner/name" of every repository in the scope, each once, in the order given."""
        listings = [f"{self._api_url}/orgs/{quote(org)}/repos?per_page=100" for org in scope.orgs]
        if scope.search:
            listings.append(f"{self._api_url}/search/repositories?"
                            f"{httpx2.QueryParams({'q': scope.search, 'per_page': 100})}")
        found = dict.fromkeys(scope.repos)
        for url in listings:
            for page in self._pages(url):
                items = page["items"] if isinstance(page, dict) else page
                found.update(dict.fromkeys(item["full_name"] for item in items))
        yield from found

    def _releases(self, repo: str, limit: int, etags: dict[str, str]) -> Iterator[dict]:
        """The newest `limit` releases; none when the first page is unchanged since its ETag."""
        url = f"{self._api_url}/repos/{repo}/releases?per_page={min(limit, 100)}"
        for page in self._pages(url, etags):
            for release in page[:limit]:
                if not release.get("draft"):
                    yield release
            limit -= len(page)
            if limit <= 0:
                return

    def _pages(self, url: str, etags: dict[str, str] | None = None) -> Iterator:
        """Decoded pages following Link rel="next"; with `etags`, the first page is conditional
        and a 304 ends the listing (ETags of later pages would say nothing new)."""
        conditional = etags is not None
        response = self._get(url, etag=etags.get(url) if conditional else None)
        if response.status_code == 304:
            return
        if conditional and response.headers.get("ETag"):
            etags[url] = response.headers["ETag"]
        while True:
            yield self._decode(response)
            if not (next_url := response.links.get("next", {}).get("url")):
                return
            response = self._get(next_url)

    def _candidate(self, release: dict) -> Candidate | None:
        """The release as a candidate, or None when no asset matches `asset_patterns`."""
        assets = [a for a in release.get("assets", []) if a.get("state", "uploaded") == "uploaded"
                  and any(fnmatch.fnmatch(a["name"], p) for p in self.options.asset_patterns)]
        if not assets:
            return None
        # Only the matched assets make the revision: a new checksum file or README is not news.
        stamp = sorted((a["id"], a.get("updated_at") or "", a.get("size") or 0) for a in assets)
        digest = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
        files = tuple(RemoteFile(path=a["name"], url=a["url"], size=a.get("size"),
                                 sha256=(a.get("digest") or "").removeprefix("sha256:") or None)
                      for a in assets)
        return Candidate(self.name, release["html_url"], f"{release['id']}@{digest}", files)

    # -- one request -----------------------------------------------------------------------------

    def _get(self, url: str, *, etag: str | None = None, missing_ok: bool = False) -> httpx2.Response | None:
        """A 200 or 304 (None for a 404 when `missing_ok`), past rate limits and 5xx retries."""
        headers = {"If-None-Match": etag} if etag else {}
        failures = waits = 0
        while True:
            try:
                response = self._api.get(url, headers=headers)
            except httpx2.HTTPError as e:
                raise SourceError(self.name, f"{url}: {type(e).__name__}: {one_line(str(e))}") from None
            status = response.status_code
            if status in (200, 304) or (status == 404 and missing_ok):
                return None if status == 404 else response
            if status in (403, 429) and (limit := self._rate_limit(response)) is not None:
                wait, until = limit
                if wait > self.options.max_wait_s:
                    when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    raise SourceError(self.name, f"{url}: rate limited until {when} ({wait:.0f} s, more "
                                                 f"than max_wait_s={self.options.max_wait_s:g})")
                if waits >= MAX_RATE_WAITS:
                    raise SourceError(self.name, f"{url}: still rate limited after {waits} waits")
                self._sleep(wait)
                waits += 1
            elif status >= 500 and failures < RETRIES_5XX:
                self._sleep(0.5 * 2**failures)
                failures += 1
            else:
                raise SourceError(self.name, f"{url}: HTTP {status}{_message(response)}")

    def _rate_limit(self, response: httpx2.Response) -> tuple[float, float] | None:
        """(seconds to sleep, epoch the limit lifts), or None when this 403/429 is no rate limit.

        A reset gets one second more: X-RateLimit-Reset is whole seconds and our clock is not
        the server's.
        """
        headers, now = response.headers, self._clock()
        if headers.get("Retry-After", "").strip().isdigit():
            return float(headers["Retry-After"]), now + float(headers["Retry-After"])
        if headers.get("X-RateLimit-Remaining") == "0" and headers.get("X-RateLimit-Reset", "").isdigit():
            reset = int(headers["X-RateLimit-Reset"])
            return max(reset - now, 0.0) + 1.0, reset
        return (SECONDARY_WAIT_S, now + SECONDARY_WAIT_S) if response.status_code == 429 else None

    def _decode(self, response: httpx2.Response):
        try:
            return response.json()
        except ValueError:
            raise SourceError(self.name, f"{response.url}: answer is not JSON") from None


def _message(response: httpx2.Response) -> str:
    """GitHub's `message` from an error body, as ": <one line>", or nothing."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        return ""
    return f": {one_line(str(message), 120)}" if message else ""
