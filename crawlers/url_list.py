"""A plain list of direct weight-file URLs: the simplest source, and the example plugin.

Everything a crawler must do, in the fewest lines: `discover` names one candidate per URL with
a revision the server vouches for (ETag, else Last-Modified and size, from one HEAD), so an
unchanged file is never read twice; `open` hands out an HTTP range source. The sweep does the
rest (headers, prefilter, planned ranges, recording). A third-party crawler looks like this one,
declared under the `provenance_monitor.crawlers` entry-point group of its own package.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from pathlib import Path

import httpx2
from pydantic import model_validator

from crawlers.base import Candidate, Crawler, CrawlContext, Discovered, NoOptions, RemoteFile, Settings
from monitor.errors import ConfigError
from monitor.formats.base import ByteSource, one_line
from monitor.formats.http import HttpRangeSource

UNAVAILABLE = "unavailable"  # revision of a URL whose HEAD failed: triage records why, retries


class UrlListScope(Settings):
    urls: list[str] = []  # direct links to weight files (.safetensors are fingerprinted)
    file: Path | None = None  # or a text file of URLs, one per line, '#' comments

    @model_validator(mode="after")
    def _some(self) -> UrlListScope:
        if not self.urls and self.file is None:
            raise ValueError("a url_list scope needs urls or file")
        bad = [u for u in self.urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"not an http(s) URL: {bad[0]}")
        return self


class UrlListCrawler(Crawler):
    name = "url_list"
    Options = NoOptions
    Scope = UrlListScope

    def __init__(self, options: NoOptions | None = None, context: CrawlContext | None = None) -> None:
        super().__init__(options, context)
        self._client = httpx2.Client(timeout=httpx2.Timeout(self.context.timeout_s),
                                     headers={"User-Agent": self.context.user_agent})

    def discover(self, scope: UrlListScope, cursor: str | None) -> Iterator[Discovered]:
        for url in _urls(scope):
            size, revision = self._head(url)
            name = posixpath.basename(httpx2.URL(url).path) or "file"
            yield Discovered(Candidate(self.name, url, revision, (RemoteFile(name, url, size, None),)),
                             None)

    def refresh(self, location: str) -> Candidate | None:
        size, revision = self._head(location)
        name = posixpath.basename(httpx2.URL(location).path) or "file"
        return Candidate(self.name, location, revision, (RemoteFile(name, location, size, None),))

    def open(self, file: RemoteFile) -> ByteSource:
        return HttpRangeSource(file.url, self._client, size=file.size)

    def close(self) -> None:
        self._client.close()

    def _head(self, url: str) -> tuple[int | None, str]:
        """(size, revision) from a HEAD; (None, UNAVAILABLE) when the server won't say."""
        try:
            response = self._client.head(url, follow_redirects=True)
        except httpx2.HTTPError:
            return None, UNAVAILABLE
        if response.status_code != 200:
            return None, UNAVAILABLE
        length = response.headers.get("Content-Length", "")
        size = int(length) if length.isdigit() else None
        tag = response.headers.get("ETag") or f"{response.headers.get('Last-Modified', '')}/{size}"
        return size, hashlib.sha256(tag.encode()).hexdigest()[:16]


def _urls(scope: UrlListScope) -> list[str]:
    urls = list(scope.urls)
    if scope.file is not None:
        try:
            lines = scope.file.read_text().splitlines()
        except OSError as e:
            raise ConfigError("crawlers.url_list.scopes.file", str(scope.file),
                              f"cannot read: {one_line(e.strerror or str(e))}") from None
        urls += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return urls
