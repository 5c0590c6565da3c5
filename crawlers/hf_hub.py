"""The Hugging Face Hub: models in configured scopes, through huggingface_hub's HfApi.

Per scope, a listing sorted by last modification (newest first) with each repo's commit sha; it
stops at the scope's cursor (the newest modification time handled last sweep), and the sweep
skips any (repo, sha) it has recorded, so an unchanged repo is never fetched again. Only a new
revision costs a `model_info(files_metadata=True)` (sizes and LFS sha256 of every file: exact
copies are matched from this alone), then headers and planned ranges through `open`, pinned to
the commit sha by its resolve URL.

huggingface_hub leaves a few things to us (2.4): its shared httpx2 client has no timeout
(`default_client_factory`), `model_info` does not retry 429 or 5xx (only paginated listings do),
and HF_ENDPOINT is read once at import — so the endpoint goes to `HfApi(endpoint=...)`, a
timeout goes into the client factory, and `_call` retries with Retry-After and backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import httpx2
from huggingface_hub import HfApi, hf_hub_url, set_client_factory
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils._http import default_client_factory
from pydantic import Field, model_validator

from crawlers.base import Candidate, Crawler, CrawlContext, Discovered, RemoteFile, Settings
from monitor.config import read_secret
from monitor.errors import SourceError
from monitor.formats.base import ByteSource, one_line
from monitor.formats.http import RETRY_STATUSES, HttpRangeSource
from monitor.httputil import retry_after_seconds
from monitor.remote import PARALLEL_RANGES

T = TypeVar("T")
PREFIX = "hf://"
UNAVAILABLE = "unavailable"  # revision of a listed repo the Hub would not describe this time
_factory_lock = threading.Lock()


class HubOptions(Settings):
    endpoint: str = "https://huggingface.co"  # a mirror or a local Hub; HF_ENDPOINT is ignored
    retries: int = Field(4, ge=0, le=10)  # per API call, on 429 and 5xx
    max_retry_wait_s: float = Field(60.0, ge=0)  # longest Retry-After we honour


class HubScope(Settings):
    """One set of repos to watch. Listing keys combine (AND); `repos` are looked up directly."""

    search: str | None = None  # substring of the repo id
    author: str | None = None  # a user or organisation
    tags: list[str] = []  # Hub filters: "gguf", "text-generation", "license:mit", ...
    base_model: str | None = None  # repos declaring this model as their base_model
    recent: bool = False  # everything on the Hub, newest first (set `limit`)
    repos: list[str] = []  # explicit "owner/name" list
    limit: int | None = Field(None, ge=1)  # most repos listed per sweep

    @model_validator(mode="after")
    def _something(self) -> HubScope:
        listing = self.search or self.author or self.tags or self.base_model
        if not (listing or self.recent or self.repos):
            raise ValueError("a scope needs search, author, tags, base_model, recent or repos")
        if self.recent and listing:
            raise ValueError("recent = true lists the whole Hub; drop it or the filters")
        return self


class HfHubCrawler(Crawler):
    name = "hf_hub"
    Options = HubOptions
    Scope = HubScope

    def __init__(self, options: HubOptions | None = None, context: CrawlContext | None = None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(options, context)
        self.options: HubOptions
        self.endpoint = self.options.endpoint.rstrip("/")
        secret = read_secret("HF_TOKEN", self.context.env)
        token = secret.get_secret_value() if secret else None
        _install_timeout(self.context.timeout_s)
        self._api = HfApi(endpoint=self.endpoint, token=token or False,
                          user_agent=self.context.user_agent)
        headers = {"User-Agent": self.context.user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"  # HttpRangeSource drops it off-origin
        # Each candidate in flight fetches up to PARALLEL_RANGES ranges at once: size the pool so
        # they never queue for a connection (they did at 2 per candidate: a third of the sweep).
        connections = self.context.concurrency * (PARALLEL_RANGES + 1)
        self._client = httpx2.Client(
            timeout=httpx2.Timeout(self.context.timeout_s), headers=headers,
            limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections))
        self._sleep = sleep

    # -- discovery -------------------------------------------------------------------------------

    def discover(self, scope: HubScope, cursor: str | None) -> Iterator[Discovered]:
        if scope.repos:
            for repo in scope.repos:
                try:
                    info = self._call(f"model {repo}", lambda r=repo: self._api.model_info(
                        r, files_metadata=True, timeout=self.context.timeout_s))
                except SourceError:
                    # One repo failing must not hide the others: it goes to triage unlisted, fails
                    # there with the reason, is recorded, and is retried next sweep.
                    yield Discovered(Candidate(self.name, PREFIX + repo, UNAVAILABLE, None), None)
                    continue
                yield Discovered(self._candidate(info), None)
            return
        since = datetime.fromisoformat(cursor) if cursor else None
        listing = self._api.list_models(
            search=scope.search, author=scope.author,
            filter=scope.tags + ([f"base_model:{scope.base_model}"] if scope.base_model else []),
            sort="last_modified", limit=scope.limit, expand=["sha", "lastModified"])
        newest: datetime | None = None
        previous: Candidate | None = None
        for info in self._iterate(listing, scope):
            modified = info.last_modified
            if since is not None and modified is not None and modified < since:
                break  # newest first: everything after this was handled by an earlier sweep
            if modified is not None and (newest is None or modified > newest):
                newest = modified
            if previous is not None:
                yield Discovered(previous, None)
            previous = Candidate(self.name, PREFIX + info.id, info.sha or "", None)
        if previous is not None:  # the last one carries the new high-water mark
            mark = max(filter(None, [newest, since]), default=None)
            yield Discovered(previous, mark.isoformat() if mark else cursor)

    def describe(self, candidate: Candidate) -> Candidate:
        if candidate.files is not None:
            return candidate
        repo = candidate.location.removeprefix(PREFIX)
        revision = None if candidate.revision in ("", UNAVAILABLE) else candidate.revision
        info = self._call(f"model {repo}{'@' + revision if revision else ''}", lambda: self._api.model_info(
            repo, revision=revision, files_metadata=True, timeout=self.context.timeout_s))
        return self._candidate(info)

    def refresh(self, location: str) -> Candidate | None:
        repo = location.removeprefix(PREFIX)
        try:
            info = self._call(f"model {repo}", lambda: self._api.model_info(
                repo, files_metadata=True, timeout=self.context.timeout_s))
        except SourceError as e:
            if "not found" in e.problem:
                return None
            raise
        return self._candidate(info)

    def candidate(self, repo: str, revision: str | None = None) -> Candidate:
        """One repo at a revision (default: main), for `monitor scan hf://owner/repo[@rev]`."""
        info = self._call(f"model {repo}{'@' + revision if revision else ''}",
                          lambda: self._api.model_info(repo, revision=revision, files_metadata=True,
                                                       timeout=self.context.timeout_s))
        return self._candidate(info)

    def _candidate(self, info: ModelInfo) -> Candidate:
        if not info.sha:
            raise SourceError(self.name, f"model {info.id}: the Hub gave no commit sha")
        files = []
        for s in info.siblings or []:
            lfs = s.lfs
            files.append(RemoteFile(
                path=s.rfilename,
                url=hf_hub_url(info.id, s.rfilename, revision=info.sha, endpoint=self.endpoint),
                size=lfs.size if lfs else s.size,
                sha256=lfs.sha256 if lfs else None))
        return Candidate(self.name, PREFIX + info.id, info.sha, tuple(files))

    def _iterate(self, listing: Iterator[ModelInfo], scope: HubScope) -> Iterator[ModelInfo]:
        """The listing with its errors translated (huggingface_hub retries its pages itself)."""
        try:
            yield from listing
        except (HfHubHTTPError, httpx2.HTTPError) as e:
            raise SourceError(self.name, f"listing {_describe(scope)}: {_problem(e)}") from None

    # -- bytes -----------------------------------------------------------------------------------

    def open(self, file: RemoteFile) -> ByteSource:
        return HttpRangeSource(file.url, self._client, size=file.size, retries=self.options.retries,
                               retry_after_cap=self.options.max_retry_wait_s, sleep=self._sleep)

    def close(self) -> None:
        self._client.close()

    # -- API calls -------------------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """One API call with 429/5xx retries; huggingface_hub errors become SourceError."""
        for attempt in range(self.options.retries + 1):
            try:
                return call()
            except HfHubHTTPError as e:
                status = e.response.status_code if e.response is not None else None
                if status not in RETRY_STATUSES or attempt == self.options.retries:
                    raise SourceError(self.name, f"{what}: {_problem(e)}") from None
                self._sleep(self._delay(e.response, attempt))
            except httpx2.HTTPError as e:
                if attempt == self.options.retries:
                    raise SourceError(self.name, f"{what}: {_problem(e)}") from None
                self._sleep(min(0.5 * 2 ** attempt, self.options.max_retry_wait_s))
        raise AssertionError("unreachable")

    def _delay(self, response: httpx2.Response, attempt: int) -> float:
        given = retry_after_seconds(response.headers.get("Retry-After"))
        delay = 0.5 * 2 ** attempt if given is None else given
        return max(0.0, min(delay, self.options.max_retry_wait_s))


def _problem(e: Exception) -> str:
    if isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)):
        return "not found (or private without HF_TOKEN)"
    if isinstance(e, GatedRepoError):
        return "gated: HF_TOKEN has no access"
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code}"
    if isinstance(e, httpx2.TimeoutException):
        return f"timed out ({type(e).__name__})"
    return one_line(f"{type(e).__name__}: {e}")


def _describe(scope: HubScope) -> str:
    parts: dict[str, Any] = {k: v for k, v in scope.model_dump().items() if v and k != "limit"}
    return ", ".join(f"{k}={v}" for k, v in parts.items()) or "scope"


def _install_timeout(timeout_s: float) -> None:
    """huggingface_hub's shared client waits forever by default; give it our timeout.

    The client is process-wide (huggingface_hub.get_session), so this applies to every HfApi.
    """
    def factory() -> httpx2.Client:
        client = default_client_factory()
        client.timeout = httpx2.Timeout(timeout_s)
        return client

    with _factory_lock:
        set_client_factory(factory)
