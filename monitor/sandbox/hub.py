"""A local Hugging Face Hub: the API routes huggingface_hub 2.4 calls, plus a separate LFS "CDN".

Two ThreadingHTTPServers on 127.0.0.1, shaped after what the real client sends and reads
(huggingface_hub/hf_api.py, file_download.py, utils/_pagination.py, utils/_http.py):

    hub  GET  /api/models                        search, author, filter (repeatable), sort,
                                                 direction, limit, full, cardData, expand;
                                                 pages of `page_size`, next page in a
                                                 `Link: <...>; rel="next"` header (absolute URL)
         GET  /api/models/{repo}[/revision/{rev}]  `blobs=true` (what model_info(files_metadata=True)
                                                 sends) or `files_metadata=true` adds size, blobId, lfs
         GET|HEAD /{repo}/resolve/{rev}/{path}   weight files (*.safetensors, *.bin, *.gguf) are LFS:
                                                 302 to the CDN with X-Repo-Commit, X-Linked-Etag
                                                 (sha256), X-Linked-Size, ETag (pointer's git oid);
                                                 other files served directly (ETag = git blob oid)
    cdn  GET|HEAD /{sha256}                      the blob, single `Range` honoured (206/416)

A file's content is `bytes` or a `monitor.sandbox.blobs.Blob` generated on demand (synthetic
safetensors, a 2 GB filler); bodies are streamed in 1 MiB pieces, so neither a range nor a whole
GET of a huge blob is ever built in memory. Lazy blobs publish a synthetic sha256 (blobs.py).

Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound), which is how
`hf_raise_for_status` picks the exception class. Faults (`fail_next`) and `delay_s` apply to
both servers; every request is logged with the body bytes it was sent (`requests`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from monitor.sandbox.blobs import Blob, BytesBlob, git_blob_id
from monitor.sandbox.serving import Response, ServerPair, range_response

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
_SHA1 = re.compile(r"[0-9a-f]{40}")
_DESCENDING_BY_DEFAULT = {"lastModified", "createdAt", "downloads", "likes"}


@dataclass(frozen=True)
class RequestRecord:
    """One request either server answered."""

    server: str  # "hub" or "cdn"
    method: str
    path: str  # as requested, query string included
    status: int
    bytes_served: int  # body bytes written (0 for HEAD)
    range: str | None  # the request's Range header, if any


@dataclass(frozen=True)
class _File:
    name: str
    blob: Blob
    lfs: bool

    @property
    def sha256(self) -> str:
        return self.blob.sha256

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """The git oid of what git stores: the LFS pointer for LFS files, the bytes otherwise."""
        if self.lfs:
            return hashlib.sha1(b"blob %d\0" % len(self.pointer) + self.pointer).hexdigest()
        return git_blob_id(self.blob)


@dataclass(frozen=True)
class _Commit:
    sha: str
    files: dict[str, _File]
    last_modified: datetime


@dataclass
class _Repo:
    repo_id: str
    tags: list[str]
    card_data: dict
    created_at: datetime
    downloads: int
    likes: int
    commits: dict[str, _Commit] = field(default_factory=dict)
    head: str = ""

    def info(self, *, siblings: bool, blobs: bool) -> dict:
        commit = self.commits[self.head]
        out = {"_id": hashlib.md5(self.repo_id.encode()).hexdigest()[:24], "id": self.repo_id,
               "modelId": self.repo_id, "author": self.repo_id.split("/")[0] if "/" in self.repo_id else None,
               "sha": commit.sha, "lastModified": _iso(commit.last_modified), "createdAt": _iso(self.created_at),
               "private": False, "disabled": False, "gated": False, "downloads": self.downloads,
               "likes": self.likes, "tags": list(self.tags), "cardData": dict(self.card_data)}
        if siblings:
            out["siblings"] = [_sibling(f, blobs) for f in commit.files.values()]
        return out


def _sibling(f: _File, blobs: bool) -> dict:
    if not blobs:
        return {"rfilename": f.name}
    out = {"rfilename": f.name, "size": f.size, "blobId": f.blob_id}
    if f.lfs:
        out["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
    return out


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _json(obj, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})


class HubServer(ServerPair):
    """The Hub and its CDN on two ports of 127.0.0.1; `with HubServer() as hub: hub.url`.

    `fail_next` paths are the servers' own (`/api/models`, `/org/name/resolve/...`; CDN:
    `/<sha256>`); huggingface_hub sleeps Retry-After + 1 s before retrying a 429 (utils/_http.py).
    `bytes_served()` is the CDN's: the weight bytes a crawler read.
    """

    log_role = "cdn"

    def __init__(self, *, page_size: int = 50, delay_s: float = 0.0) -> None:
        self.page_size = page_size
        self.delay_s = delay_s  # slept before answering any request on either server
        self.arrived = threading.Event()  # set by the first request, before any delay
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, Blob] = {}  # sha256 -> content, what the CDN serves
        super().__init__()
        self._counter = count()
        self._serve({role: _Server(self, role) for role in ("hub", "cdn")})

    @property
    def url(self) -> str:
        return self._url("hub")

    @property
    def cdn_url(self) -> str:
        return self._url("cdn")

    # --- content ---------------------------------------------------------------------------

    def add_model(self, repo_id: str, files: dict[str, bytes | Blob], *, revision: str | None = None,
                  tags: tuple[str, ...] | list[str] = (), base_model: str | None = None,
                  last_modified: datetime | None = None, downloads: int = 0, likes: int = 0) -> str:
        """Create `repo_id`, or push a new commit to it (older revisions stay resolvable).

        Returns the commit sha (`revision`, or a fresh one: every push changes the sha). A file's
        content is bytes or a `Blob` (monitor.sandbox.blobs), read only as far as it is requested.
        """
        if revision is not None and not _SHA1.fullmatch(revision):
            raise ValueError(f"revision must be 40 lowercase hex digits, got {revision!r}")
        built = {name: _File(name, BytesBlob(data) if isinstance(data, bytes) else data,
                             name.endswith(WEIGHT_SUFFIXES)) for name, data in files.items()}
        now = datetime.now(timezone.utc)
        with self._lock:
            if revision is None:
                seed = f"{repo_id}\0{next(self._counter)}\0" + "".join(sorted(f.sha256 for f in built.values()))
                revision = hashlib.sha1(seed.encode()).hexdigest()
            tags = list(tags)
            tags += [t for ext, t in ((".safetensors", "safetensors"), (".gguf", "gguf"))
                     if any(n.endswith(ext) for n in built) and t not in tags]
            card: dict = {}
            if base_model:
                card["base_model"] = base_model
                tags += [f"base_model:{base_model}", f"base_model:finetune:{base_model}"]
            repo = self._repos.get(repo_id)
            if repo is None:
                repo = self._repos[repo_id] = _Repo(repo_id, tags, card, last_modified or now, downloads, likes)
            else:
                repo.tags, repo.card_data, repo.downloads, repo.likes = tags, card, downloads, likes
            repo.commits[revision] = _Commit(revision, built, last_modified or now)
            repo.head = revision
            for f in built.values():
                if f.lfs:
                    self._blobs[f.sha256] = f.blob
        return revision

    # --- routes ----------------------------------------------------------------------------

    def _route(self, role: str, path: str, query: dict[str, list[str]], range_header: str | None) -> Response:
        if role == "cdn":
            blob = self._blobs.get(path.lstrip("/"))
            if blob is None:
                return _error(404, "EntryNotFound", "no such blob")
            return range_response(blob, range_header, {"ETag": f'"{path.lstrip("/")}"'})
        if path == "/api/models":
            return self._list(path, query)
        if path.startswith("/api/models/"):
            repo_id, _, rev = path[len("/api/models/"):].partition("/revision/")
            commit = self._commit(repo_id, unquote(rev) if rev else "main")
            if isinstance(commit, Response):
                return commit
            blobs = _flag(query, "blobs") or _flag(query, "files_metadata")
            info = self._repos[repo_id].info(siblings=True, blobs=blobs)
            if rev:  # a pinned revision describes that commit, not the head
                info["sha"], info["lastModified"] = commit.sha, _iso(commit.last_modified)
                info["siblings"] = [_sibling(f, blobs) for f in commit.files.values()]
            return _json(info)
        if "/resolve/" in path:
            repo_id, _, tail = path[1:].partition("/resolve/")
            rev, _, filename = tail.partition("/")
            return self._resolve(repo_id, unquote(rev), unquote(filename), range_header)
        return _error(404, "NotFound", f"no route for {path}")

    def _commit(self, repo_id: str, rev: str) -> _Commit | Response:
        repo = self._repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository not found: {repo_id}")
        commit = repo.commits.get(repo.head if rev == "main" else rev)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    def _resolve(self, repo_id: str, rev: str, filename: str, range_header: str | None) -> Response:
        commit = self._commit(repo_id, rev)
        if isinstance(commit, Response):
            return commit
        f = commit.files.get(filename)
        if f is None:
            return _error(404, "EntryNotFound", f"{filename} does not exist on {rev}", {"X-Repo-Commit": commit.sha})
        if not f.lfs:
            return range_response(f.blob, range_header, {"ETag": f'"{f.blob_id}"', "X-Repo-Commit": commit.sha})
        return Response(302, b"", {"Location": f"{self.cdn_url}/{f.sha256}", "X-Repo-Commit": commit.sha,
                                    "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size),
                                    "ETag": f'"{f.blob_id}"'})

    def _list(self, path: str, query: dict[str, list[str]]) -> Response:
        with self._lock:
            repos = list(self._repos.values())
        search = query.get("search", [""])[0].lower()
        author = query.get("author", [""])[0].lower()
        wanted = set(query.get("filter", []))
        repos = [r for r in repos if search in r.repo_id.lower()
                 and (not author or r.repo_id.lower().startswith(author + "/"))
                 and wanted <= set(r.tags)]
        sort = query.get("sort", ["id"])[0]
        keys = {"id": lambda r: r.repo_id, "lastModified": lambda r: r.commits[r.head].last_modified,
                "createdAt": lambda r: r.created_at, "downloads": lambda r: r.downloads, "likes": lambda r: r.likes}
        if sort not in keys:
            return _error(400, "BadRequest", f"unsupported sort {sort!r}")
        direction = query.get("direction", ["-1" if sort in _DESCENDING_BY_DEFAULT else "1"])[0]
        repos.sort(key=keys[sort], reverse=direction == "-1")
        if "limit" in query:
            repos = repos[: int(query["limit"][0])]
        cursor = int(query.get("cursor", ["0"])[0])
        page = repos[cursor: cursor + self.page_size]
        headers = {}
        if cursor + self.page_size < len(repos):
            rest = [(k, v) for k, vs in query.items() if k != "cursor" for v in vs]
            nxt = f"{self.url}{path}?{urlencode(rest + [('cursor', cursor + self.page_size)])}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        return _json([_list_item(r, query) for r in page], headers=headers)


def _list_item(repo: _Repo, query: dict[str, list[str]]) -> dict:
    """The real Hub's default list fields; `full`, `cardData` and `expand` add the rest."""
    info = repo.info(siblings=True, blobs=False)
    if "expand" in query:
        return {"_id": info["_id"], "id": info["id"], **{k: info[k] for k in query["expand"] if k in info}}
    keep = {"_id", "id", "modelId", "likes", "private", "downloads", "tags", "createdAt"}
    if _flag(query, "full"):
        keep |= {"sha", "lastModified", "siblings", "author", "disabled", "gated"}
    if _flag(query, "cardData"):
        keep.add("cardData")
    return {k: v for k, v in info.items() if k in keep}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[0].lower() in ("1", "true")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: HubServer, role: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.role = role

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up mid-body (a crawler that read enough) are normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms on Linux) and every request would look that much slower.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        hub, role = self.server.hub, self.server.role
        hub.arrived.set()
        if hub.delay_s:
            time.sleep(hub.delay_s)
        url = urlsplit(self.path)
        range_header = self.headers.get("Range")
        fault = hub._take_fault(url.path)
        if fault is not None:
            extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            resp = _error(fault.status, "Injected", f"injected {fault.status}", extra)
        else:
            resp = hub._route(role, url.path, parse_qs(url.query, keep_blank_values=True), range_header)
        # Logged before the body goes out: a client that has its answer may read the log at once.
        sent = resp.length if send_body else 0
        index = hub._record(RequestRecord(role, self.command, self.path, resp.status, sent, range_header))
        written = 0
        try:
            self.send_response(resp.status)
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(resp.length))
            self.end_headers()
            if sent:
                for piece in resp.pieces():
                    self.wfile.write(piece)
                    written += len(piece)
        except OSError:  # the client hung up: count only the pieces that went out
            hub._amend(index, bytes_served=written)
            raise

    def log_message(self, format: str, *args) -> None:
        pass
