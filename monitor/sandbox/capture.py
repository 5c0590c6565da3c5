"""A capture server: a real HTTP(S) server on 127.0.0.1 that records what it was sent and can
be told to fail. The local Slack and PagerDuty stand-ins (slack.py, pagerduty.py) are its routes.

Faults, checked in this order for each request:
    fail_next(n, status, retry_after)   the next n requests get `status` (429 with Retry-After)
    fail_rate (with a seed)             that share of the rest fail at random, 500 or 429 alike
    delay_s                             every answer waits this long after the body was read
A request is recorded as soon as its body is read (`received`), and amended with the status it
got, so a test can tell "arrived" from "accepted" — what a client killed mid-request leaves.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Captured:
    """One request as the server read it, and the status it answered (None while in flight)."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Answer:
    status: int
    body: Any = field(default_factory=dict)  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)


class CaptureServer:
    """Subclasses implement `route(path, headers, body) -> Answer`."""

    name = "capture"

    def __init__(self, *, delay_s: float = 0.0, fail_rate: float = 0.0, seed: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.delay_s, self.fail_rate, self._tls = delay_s, fail_rate, tls
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._received: list[Captured] = []
        self._faults: list[tuple[int, float | None]] = []
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> CaptureServer:
        self._httpd = _Server(self)
        if self._tls is not None:
            self._httpd.socket = self._tls.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(target=self._httpd.serve_forever, daemon=True,
                         name=f"{self.name}-server").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    # -- faults and what was captured ------------------------------------------------------------

    def fail_next(self, times: int = 1, status: int = 500, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.extend([(status, retry_after)] * times)

    @property
    def received(self) -> list[Captured]:
        with self._lock:
            return list(self._received)

    def accepted(self) -> list[Captured]:
        return [c for c in self.received if c.accepted]

    # -- the handler's side ----------------------------------------------------------------------

    def route(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError

    def _fault(self) -> Answer | None:
        with self._lock:
            if self._faults:
                status, retry_after = self._faults.pop(0)
            elif self.fail_rate and self._rng.random() < self.fail_rate:
                status, retry_after = self._rng.choice([(500, None), (429, 0)])
            else:
                return None
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return self.error(status, headers)

    def error(self, status: int, headers: dict[str, str]) -> Answer:
        """What this service sends with an injected failure."""
        return Answer(status, {"error": "injected"}, headers)

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        captured = Captured(path, headers, body)
        with self._lock:
            self._received.append(captured)
        answer = self._fault() or self.route(path, headers, body)
        if self.delay_s:
            time.sleep(self.delay_s)
        captured.status = answer.status
        return answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: CaptureServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up (killed, timed out) is expected here, not news


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.server.owner._handle(self.path, {k.lower(): v for k, v in self.headers.items()},
                                           body)
        data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        ctype = "text/plain" if isinstance(answer.body, bytes) else "application/json"
        self.send_response(answer.status)
        for k, v in {"Content-Type": ctype, **answer.headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
