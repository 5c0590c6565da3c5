"""A local GitHub: the REST API routes the releases crawler calls, plus a separate "objects" host.

Two ThreadingHTTPServers on 127.0.0.1, shaped after REST API version 2022-11-28 (docs.github.com:
rest/releases/releases, rest/releases/assets, rest/repos/repos, rest/search/search,
rest/using-the-rest-api/rate-limits-for-the-rest-api):

    api      GET /repos/{o}/{r}/releases                 newest first; `per_page` (≤100), `page`;
                                                         `Link: <abs>; rel="next", <abs>; rel="last"`
             GET /repos/{o}/{r}/releases/tags/{tag}
             GET /repos/{o}/{r}/releases/assets/{id}     asset JSON, or with `Accept:
                                                         application/octet-stream` a 302 to objects
             GET /orgs/{org}/repos                       paginated like releases
             GET /search/repositories?q=                 {"total_count", "incomplete_results",
                                                         "items"}; q: words found in full_name or
                                                         description, plus `org:`/`user:` qualifiers
             GET /{o}/{r}/releases/tag/{tag}             the release page (html_url; github.com on
             GET /{o}/{r}/releases/download/{tag}/{n}    the real service): HTML, and a 302 to objects
    objects  GET|HEAD /release-assets/{id}               the bytes, one `Range` honoured (206/416)

JSON answers carry a weak ETag; a matching If-None-Match gets 304 with no body, which (as on
GitHub) costs no rate-limit budget. API answers carry X-RateLimit-Limit/-Remaining/-Reset/-Used/
-Resource, with separate "core" and "search" buckets of `rate_limit` requests; an exhausted bucket
answers 403 with Remaining 0 and Reset in epoch seconds until `rate_reset_s` have passed on
`clock`. `fail_next` injects secondary-rate-limit 403/429s with Retry-After (or any status).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from monitor.sandbox.blobs import Blob, BytesBlob
from monitor.sandbox.serving import Response, ServerPair, range_response

_DOCS = "https://docs.github.com/rest"


@dataclass(frozen=True)
class RequestRecord:
    """One request either server answered."""

    server: str  # "api" or "objects"
    method: str
    path: str  # as requested, query string included
    status: int
    bytes_served: int  # body bytes written (0 for HEAD and 304)
    range: str | None  # the request's Range header
    authorization: bool  # whether the request carried an Authorization header


@dataclass
class _Asset:
    id: int
    tag: str  # of its release, for browser_download_url
    name: str
    blob: Blob
    digest: bool  # False: published before GitHub computed digests (2025), "digest": null
    content_type: str
    updated_at: datetime


@dataclass
class _Release:
    id: int
    tag: str
    name: str
    published_at: datetime
    assets: dict[str, _Asset] = field(default_factory=dict)


@dataclass
class _Repo:
    id: int
    owner: str
    name: str
    description: str
    releases: list[_Release] = field(default_factory=list)  # newest first, as the API lists them


def _json(obj, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj).encode(), {"Content-Type": "application/json; charset=utf-8",
                                                         **(headers or {})})


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"message": message, "documentation_url": _DOCS, "status": str(status)}, status, headers)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitHubServer(ServerPair):
    """The GitHub API and its asset host on two ports of 127.0.0.1; `with GitHubServer() as gh`."""

    log_role = "objects"

    def __init__(self, *, rate_limit: int = 5000, rate_reset_s: float = 3600.0,
                 require_token: str | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.rate_limit, self.rate_reset_s = rate_limit, rate_reset_s
        self.require_token = require_token  # when set, API requests need `Bearer <it>`
        self._clock = clock  # what rate-limit windows are measured on (tests pass a fake)
        self._buckets: dict[str, list[float]] = {}  # resource -> [used, reset epoch]
        self._repos: dict[str, _Repo] = {}  # "owner/name" -> repo
        self._assets: dict[int, _Asset] = {}  # every asset ever uploaded, what objects serves
        self._ids = count(1001)
        self._serve({role: _Server(self, role) for role in ("api", "objects")})

    @property
    def url(self) -> str:
        return self._url("api")

    @property
    def objects_url(self) -> str:
        return self._url("objects")

    # --- content ---------------------------------------------------------------------------

    def add_repo(self, owner: str, repo: str, description: str = "") -> None:
        with self._lock:
            self._repo(owner, repo).description = description

    def add_release(self, owner: str, repo: str, tag: str, assets: dict[str, bytes | Blob], *,
                    digest: bool = True, name: str | None = None,
                    published_at: datetime | None = None) -> int:
        """Publish release `tag` (newest of its repo) with `assets`; returns the release id.

        An asset is bytes or a lazy `Blob` (monitor.sandbox.blobs), so a benchmark can publish
        gigabytes it never holds; a Blob's `digest` is its (possibly synthetic) sha256.
        """
        with self._lock:
            r = self._repo(owner, repo)
            if any(rel.tag == tag for rel in r.releases):
                raise ValueError(f"{owner}/{repo} already has a release {tag!r}")  # GitHub: 422
            release = _Release(next(self._ids), tag, name or tag, published_at or datetime.now(timezone.utc))
            r.releases.insert(0, release)
        for asset_name, data in assets.items():
            self.add_asset(owner, repo, tag, asset_name, data, digest=digest)
        return release.id

    def add_asset(self, owner: str, repo: str, tag: str, name: str, data: bytes | Blob, *,
                  digest: bool = True, content_type: str = "application/octet-stream") -> int:
        """Upload `name` to a release; an asset of that name is replaced (deleted, re-uploaded:
        a new id, as on GitHub). Returns the asset id."""
        with self._lock:
            release = next(rel for rel in self._repos[f"{owner}/{repo}"].releases if rel.tag == tag)
            blob = BytesBlob(data) if isinstance(data, bytes) else data
            asset = _Asset(next(self._ids), tag, name, blob, digest, content_type, datetime.now(timezone.utc))
            release.assets[name] = self._assets[asset.id] = asset
        return asset.id

    def _repo(self, owner: str, repo: str) -> _Repo:
        key = f"{owner}/{repo}"
        if key not in self._repos:
            self._repos[key] = _Repo(next(self._ids), owner, repo, "")
        return self._repos[key]

    # --- faults and log --------------------------------------------------------------------

    def fail_next(self, prefix: str, status: int = 403, retry_after: int | None = 1, times: int = 1) -> None:
        """Answer the next `times` requests whose path starts with `prefix` with `status`.

        GitHub's secondary rate limits are 403 or 429 with Retry-After and a nonzero
        X-RateLimit-Remaining; a fault costs no budget.
        """
        super().fail_next(prefix, status, retry_after, times)

    # --- answering -------------------------------------------------------------------------

    def _answer(self, role: str, path: str, query: dict[str, list[str]], headers) -> Response:
        fault = self._take_fault(path)
        if fault:
            extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            message = "You have exceeded a secondary rate limit." if fault.status in (403, 429) else "injected"
            resp = _message(fault.status, message, extra)
            return resp if role == "objects" else self._stamp(resp, path, spend=False)
        if role == "objects":
            asset_id = path.removeprefix("/release-assets/")
            asset = self._assets.get(int(asset_id)) if asset_id.isdigit() else None
            if asset is None:
                return _message(404, "Not Found")
            return range_response(asset.blob, headers.get("Range"), {"ETag": f'"{asset.blob.sha256[:32]}"'})
        if not path.startswith("/repos/") and ("/releases/tag/" in path or "/releases/download/" in path):
            # github.com's pages on the real service: no API budget, no token needed
            return self._web(path)
        auth = headers.get("Authorization")
        if self.require_token and auth not in (f"Bearer {self.require_token}", f"token {self.require_token}"):
            return _message(401, "Bad credentials" if auth else "Requires authentication")
        if self._bucket(path)[0] >= self.rate_limit:
            return self._stamp(_message(403, "API rate limit exceeded. (See the rate-limits documentation.)"),
                               path, spend=False)
        resp = self._route(path, query, headers.get("Accept", ""))
        if resp.status == 200 and resp.headers.get("Content-Type", "").startswith("application/json"):
            etag = 'W/"' + hashlib.sha256(resp.body).hexdigest()[:40] + '"'
            resp.headers["ETag"] = etag
            wanted = {t.strip().removeprefix("W/") for t in headers.get("If-None-Match", "").split(",")}
            if etag.removeprefix("W/") in wanted or "*" in wanted:
                return self._stamp(Response(304, b"", {"ETag": etag}), path, spend=False)
        return self._stamp(resp, path, spend=True)

    def _bucket(self, path: str) -> list[float]:
        """The rate-limit bucket of `path`'s resource, opened anew once its reset has passed."""
        resource = "search" if path.startswith("/search/") else "core"
        with self._lock:
            bucket = self._buckets.setdefault(resource, [0, 0.0])
            if self._clock() >= bucket[1]:
                bucket[:] = [0, float(math.ceil(self._clock() + self.rate_reset_s))]
            return bucket

    def _stamp(self, resp: Response, path: str, *, spend: bool) -> Response:
        bucket = self._bucket(path)
        with self._lock:
            bucket[0] += spend
            used = int(bucket[0])
        resp.headers.update({"X-RateLimit-Limit": str(self.rate_limit),
                             "X-RateLimit-Remaining": str(max(self.rate_limit - used, 0)),
                             "X-RateLimit-Reset": str(int(bucket[1])), "X-RateLimit-Used": str(used),
                             "X-RateLimit-Resource": "search" if path.startswith("/search/") else "core",
                             "X-GitHub-Api-Version-Selected": "2022-11-28"})
        return resp

    def _route(self, path: str, query: dict[str, list[str]], accept: str) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["search", "repositories"]:
            terms = query.get("q", [""])[0].lower().split()
            found = [r for r in self._snapshot() if all(_matches(r, t) for t in terms)]
            page, links = self._page(path, query, found)
            return _json({"total_count": len(found), "incomplete_results": False,
                          "items": [self._repo_json(r) for r in page]}, headers=links)
        if len(parts) == 3 and parts[0] == "orgs" and parts[2] == "repos":
            page, links = self._page(path, query, [r for r in self._snapshot() if r.owner == parts[1]])
            return _json([self._repo_json(r) for r in page], headers=links)
        if len(parts) < 4 or parts[0] != "repos" or parts[3] != "releases":
            return _message(404, "Not Found")
        repo = self._repos.get(f"{parts[1]}/{parts[2]}")
        if repo is None:
            return _message(404, "Not Found")
        if len(parts) == 4:
            page, links = self._page(path, query, list(repo.releases))
            return _json([self._release_json(repo, rel) for rel in page], headers=links)
        if len(parts) == 6 and parts[4] == "tags":
            release = next((rel for rel in repo.releases if rel.tag == parts[5]), None)
            return _json(self._release_json(repo, release)) if release else _message(404, "Not Found")
        if len(parts) == 6 and parts[4] == "assets" and parts[5].isdigit():
            asset = next((a for rel in repo.releases for a in rel.assets.values() if a.id == int(parts[5])), None)
            if asset is None:
                return _message(404, "Not Found")
            if "application/octet-stream" in accept:
                return Response(302, b"", {"Location": f"{self.objects_url}/release-assets/{asset.id}"})
            return _json(self._asset_json(repo, asset))
        return _message(404, "Not Found")

    def _web(self, path: str) -> Response:
        owner, repo, _, kind, rest = (path.strip("/").split("/", 4) + [""] * 5)[:5]
        r = self._repos.get(f"{owner}/{repo}")
        tag, _, name = unquote(rest).rpartition("/") if kind == "download" else (unquote(rest), "", "")
        release = next((rel for rel in (r.releases if r else []) if rel.tag == tag), None)
        if release is None or (kind == "download" and name not in release.assets):
            return Response(404, b"Not Found", {"Content-Type": "text/plain"})
        if kind == "download":
            return Response(302, b"", {"Location": f"{self.objects_url}/release-assets/{release.assets[name].id}"})
        return Response(200, f"<h1>{release.name}</h1>".encode(), {"Content-Type": "text/html"})

    def _page(self, path: str, query: dict[str, list[str]], items: list) -> tuple[list, dict[str, str]]:
        """One page of `items` and its Link header (absolute URLs, other parameters kept)."""
        per_page = min(max(_int(query, "per_page", 30), 1), 100)
        page, last = max(_int(query, "page", 1), 1), max(math.ceil(len(items) / per_page), 1)
        rest = [(k, v) for k, vs in query.items() if k != "page" for v in vs]
        def link(n: int, rel: str) -> str:
            return f'<{self.url}{path}?{urlencode(rest + [("page", n)])}>; rel="{rel}"'

        links = ([link(page + 1, "next"), link(last, "last")] if page < last else []) + \
                ([link(page - 1, "prev"), link(1, "first")] if page > 1 else [])
        return items[(page - 1) * per_page: page * per_page], ({"Link": ", ".join(links)} if links else {})

    def _snapshot(self) -> list[_Repo]:
        with self._lock:
            return sorted(self._repos.values(), key=lambda r: r.id)

    def _repo_json(self, r: _Repo) -> dict:
        full = f"{r.owner}/{r.name}"
        return {"id": r.id, "name": r.name, "full_name": full, "private": False, "fork": False,
                "owner": {"login": r.owner, "type": "Organization"}, "description": r.description,
                "html_url": f"{self.url}/{full}", "url": f"{self.url}/repos/{full}",
                "releases_url": f"{self.url}/repos/{full}/releases{{/id}}"}

    def _release_json(self, r: _Repo, rel: _Release) -> dict:
        base = f"{self.url}/repos/{r.owner}/{r.name}/releases"
        return {"url": f"{base}/{rel.id}", "assets_url": f"{base}/{rel.id}/assets", "id": rel.id,
                "html_url": f"{self.url}/{r.owner}/{r.name}/releases/tag/{quote(rel.tag)}",
                "tag_name": rel.tag, "target_commitish": "main", "name": rel.name, "draft": False,
                "prerelease": False, "created_at": _iso(rel.published_at),
                "published_at": _iso(rel.published_at), "author": {"login": r.owner},
                "assets": [self._asset_json(r, a) for a in rel.assets.values()], "body": ""}

    def _asset_json(self, r: _Repo, a: _Asset) -> dict:
        return {"url": f"{self.url}/repos/{r.owner}/{r.name}/releases/assets/{a.id}", "id": a.id,
                "browser_download_url":
                    f"{self.url}/{r.owner}/{r.name}/releases/download/{quote(a.tag)}/{quote(a.name)}",
                "name": a.name, "label": None, "state": "uploaded", "content_type": a.content_type,
                "size": a.blob.size, "digest": f"sha256:{a.blob.sha256}" if a.digest else None,
                "download_count": 0, "created_at": _iso(a.updated_at), "updated_at": _iso(a.updated_at)}


def _matches(r: _Repo, term: str) -> bool:
    qualifier, _, value = term.partition(":")
    if value and qualifier in ("org", "user"):
        return r.owner.lower() == value
    return term in f"{r.owner}/{r.name}".lower() or term in r.description.lower()


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    value = query.get(name, [""])[0]
    return int(value) if value.isdigit() else default


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, github: GitHubServer, role: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.github, self.role = github, role

    def handle_error(self, request, client_address) -> None:
        pass  # a client hanging up after the header bytes it wanted is normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes (see hub.py)
    server: _Server

    def do_GET(self) -> None:
        self._reply(send_body=True)

    def do_HEAD(self) -> None:
        self._reply(send_body=False)

    def _reply(self, send_body: bool) -> None:
        github, url = self.server.github, urlsplit(self.path)
        resp = github._answer(self.server.role, url.path, parse_qs(url.query, keep_blank_values=True), self.headers)
        sent = resp.length if send_body and resp.status != 304 else 0
        record = RequestRecord(self.server.role, self.command, self.path, resp.status, sent,
                               self.headers.get("Range"), "Authorization" in self.headers)
        github._record(record)
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if resp.status != 304:
            self.send_header("Content-Length", str(resp.length))
        self.end_headers()
        if sent:
            for piece in resp.pieces():  # a Blob is streamed a piece at a time, never built whole
                self.wfile.write(piece)

    def log_message(self, format: str, *args) -> None:
        pass
