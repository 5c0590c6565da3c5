"""What the stand-in servers share: an answer (`Response`, `range_response` for a Range request
served from a Blob) and `ServerPair` — several servers on 127.0.0.1 started and stopped together,
with injected faults and a log of every request answered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer

from monitor.sandbox.blobs import Blob, iter_range, parse_range


@dataclass
class Response:
    """An answer either server sends: status, headers, and bytes or a span of a Blob."""

    status: int
    body: bytes | Blob = b""
    headers: dict[str, str] = field(default_factory=dict)
    span: tuple[int, int] | None = None  # the part of a Blob body to send; None: all of it

    @property
    def length(self) -> int:
        if isinstance(self.body, bytes):
            return len(self.body)
        start, end = self.span or (0, self.body.size)
        return end - start

    def pieces(self) -> Iterator[bytes]:
        if isinstance(self.body, bytes):
            yield self.body
        else:
            yield from iter_range(self.body, *(self.span or (0, self.body.size)))


def range_response(blob: Blob, range_header: str | None, headers: dict[str, str]) -> Response:
    """One `bytes=a-b`, `a-` or `-n` range (RFC 9110 §14); anything else gets the whole body."""
    headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
    span = parse_range(range_header, blob.size)
    if span is None:
        return Response(200, blob, headers)
    if span == "unsatisfiable":
        return Response(416, b"", {**headers, "Content-Range": f"bytes */{blob.size}"})
    start, end = span
    return Response(206, blob, {**headers, "Content-Range": f"bytes {start}-{end - 1}/{blob.size}"}, span)


@dataclass
class Fault:
    """An injected answer: the next `remaining` requests whose path starts with `prefix`."""

    prefix: str
    status: int
    retry_after: int | None
    remaining: int


class ServerPair:
    """What a stand-in made of several HTTP servers on 127.0.0.1 shares (the Hub and its CDN,
    GitHub's API and its objects host): each server on its own port and thread, started and
    stopped together; injected faults; a log of every request answered. Subclasses call
    `super().__init__()`, then `_serve({role: server})`, and read `_url(role)`."""

    log_role = ""  # the server whose body bytes are the weight bytes a client read

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._log: list = []

    def _serve(self, servers: dict[str, ThreadingHTTPServer]) -> None:
        self._servers = servers
        self._threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True)
                         for s in servers.values()]

    def _url(self, role: str) -> str:
        return f"http://127.0.0.1:{self._servers[role].server_address[1]}"

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        for s in self._servers.values():
            s.shutdown()
            s.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and log ----------------------------------------------------------------------

    def fail_next(self, path_prefix: str, status: int = 429, retry_after: int | None = 1,
                  times: int = 1) -> None:
        """Answer the next `times` requests whose path starts with `path_prefix` with `status`
        (paths are the servers' own; Retry-After is sent when `retry_after` is not None)."""
        with self._lock:
            self._faults.append(Fault(path_prefix, status, retry_after, times))

    @property
    def requests(self) -> list:
        with self._lock:
            return list(self._log)

    def bytes_served(self, server: str | None = None) -> int:
        """Body bytes sent by one server (default `log_role`: what a crawler read)."""
        server = server or self.log_role
        return sum(r.bytes_served for r in self.requests if r.server == server)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and path.startswith(fault.prefix):
                    fault.remaining -= 1
                    return fault
        return None

    def _record(self, record) -> int:
        """Log a request before its body goes out (a client holding its answer may look)."""
        with self._lock:
            self._log.append(record)
            return len(self._log) - 1

    def _amend(self, index: int, **changes) -> None:
        with self._lock:
            if index < len(self._log):  # clear_log() may have run meanwhile
                self._log[index] = replace(self._log[index], **changes)
