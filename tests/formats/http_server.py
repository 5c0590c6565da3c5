"""A small threaded HTTP file server on 127.0.0.1 with honest and hostile routes.

Local to the HTTP byte-source tests; shared servers for crawlers will live in tests/servers/.
Every route serves one of `files` by name (``/<route>/<name>``):

    files        HEAD + single byte ranges, done right
    nolength     HEAD without Content-Length (size must come from a Content-Range)
    redirect     302 to the same file on `redirect_to` (a second server: the "CDN")
    loop         302 to itself, forever
    ignore-range 200 with an endless body, whatever Range says
    wrong-range  206 whose Content-Range is one byte off
    flaky        429 + Retry-After for the first `flaky` GETs, then honest
    error-500    500 on every GET
    stall        GET sleeps `stall` seconds before answering
    stall-body   206 headers and half the body, then sleeps `stall` seconds
    gzip         206 with Content-Encoding: gzip of a gzip bomb
"""

from __future__ import annotations

import gzip
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")
BOMB = gzip.compress(bytes(16 << 20))  # 16 MiB of zeros in ~16 KiB


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.redirect_to = ""
        self.flaky = 0
        self.stall = 3.0
        self.bytes_sent = 0
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FileServer

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _handle(self, head: bool) -> None:
        srv = self.server
        srv.log.append((self.command, self.path, dict(self.headers)))
        _, route, name = (self.path.split("/", 2) + ["", ""])[:3]
        data = srv.files.get(name)
        if route == "loop":
            return self._send(302, {"Location": self.path})
        if data is None:
            return self._send(404)
        if route == "redirect":
            return self._send(302, {"Location": f"{srv.redirect_to}/files/{name}"})
        if head:
            extra = {} if route == "nolength" else {"Content-Length": str(len(data))}
            return self._send(200, {"Accept-Ranges": "bytes", **extra}, length=False)
        if route == "flaky" and srv.flaky > 0:
            srv.flaky -= 1
            return self._send(429, {"Retry-After": "7"})
        if route == "error-500":
            return self._send(500)
        if route == "stall":
            time.sleep(srv.stall)
        if route == "ignore-range":
            return self._endless()
        m = _RANGE.fullmatch(self.headers.get("Range", ""))
        if not m or int(m.group(1)) >= len(data):
            return self._send(416, {"Content-Range": f"bytes */{len(data)}"})
        first, last = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
        body = data[first:last + 1]
        shift = 1 if route == "wrong-range" else 0
        headers = {"Content-Range": f"bytes {first + shift}-{last + shift}/{len(data)}"}
        if route == "gzip":
            body, headers["Content-Encoding"] = BOMB, "gzip"
        if route == "stall-body":
            self._send(206, {**headers, "Content-Length": str(len(body))}, length=False)
            self._write(body[: len(body) // 2])
            time.sleep(srv.stall)
            return None
        return self._send(206, headers, body)

    def _send(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"",
              length: bool = True) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self._write(body)

    def _endless(self) -> None:
        """A 200 claiming 1 GiB and sending zeros until the client hangs up."""
        self._send(200, {"Content-Length": str(1 << 30)}, length=False)
        chunk = bytes(64 << 10)
        for _ in range((1 << 30) // len(chunk)):
            if not self._write(chunk):
                return

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client hung up: expected on hostile routes
            self.close_connection = True
            return False
        self.server.bytes_sent += len(data)
        return True
