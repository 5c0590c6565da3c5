"""A remote weight file read by HTTP range requests: the byte source behind every remote scan.

The server is untrusted. It may ignore ``Range`` and start sending a 70 GB file, answer with the
wrong range, gzip a bomb at us, redirect forever, or stall. So every response is streamed with a
byte cap and checked against exactly what was asked, and each httpx2 exception is translated
here, at this one boundary, into a one-line `WeightFormatError` naming the URL.

The `httpx2.Client` is injected and owned by the caller (timeouts, HTTP/2, auth headers). We follow
redirects ourselves instead of letting the client do it, for three reasons: our own
``max_redirects`` applies whatever the client says; httpx reads a redirect response's whole body
into memory before following it (``Client._send_handling_redirects`` calls ``response.read()``),
which a hostile server can fill; and we keep the final URL (a resolve URL on the Hub redirecting to
a CDN is the normal case) so later ranges don't pay the redirect. Requests to that cached URL
carry no credentials when it is on another origin, matching what httpx does on the hop itself.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx2

from monitor.errors import FetchError, WeightFormatError
from monitor.formats.base import ByteSource, one_line
from monitor.httputil import retry_after_seconds

MAX_READ = 64 << 20
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses a cached CDN URL gives once its signature expires: resolve the original URL again.
STALE_STATUSES = frozenset({401, 403, 404, 410})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")


class HttpRangeSource(ByteSource):
    """Bytes of the file at `url`, fetched one range per request (split at `max_read`).

    `bytes_fetched` counts every body byte taken off the wire, including rejected ones, so a
    caller can account for what a scan cost and tests can prove a hostile server got us nowhere.
    """

    def __init__(self, url: str, client: httpx2.Client, *, max_read: int = MAX_READ,
                 max_redirects: int = 5, retries: int = 3, retry_after_cap: float = 30.0,
                 backoff: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 size: int | None = None) -> None:
        self.name = url
        self._client = client
        try:
            self._origin = httpx2.URL(url)
        except httpx2.InvalidURL as e:
            raise self._error(f"invalid URL: {one_line(str(e))}") from None
        self._url = self._origin  # the final URL after redirects, reused by later reads
        self.max_read, self.max_redirects = max_read, max_redirects
        self.retries, self.retry_after_cap, self.backoff = retries, retry_after_cap, backoff
        self._sleep = sleep
        self._counts = threading.Lock()  # reads may run on several threads (PrefetchedSource)
        self.bytes_fetched = 0
        self.requests = 0
        # A size the source's API already published saves a round trip; every range answer is
        # still checked against it (Content-Range carries the total).
        self.size = size if size is not None else self._probe_size()

    # -- ByteSource ------------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise WeightFormatError(self.name, f"truncated: wanted bytes {offset}..{offset + length}"
                                    f" of a {self.size}-byte file")
        pieces = [self._read_range(start, min(self.max_read, offset + length - start))
                  for start in range(offset, offset + length, self.max_read)]
        return b"".join(pieces)

    def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""

    # -- size ------------------------------------------------------------------------------------

    def _probe_size(self) -> int:
        """Content-Length of a HEAD, else the total in the Content-Range of a 1-byte GET."""
        with self._request("HEAD", {}) as response:
            if response.status_code == 200 and _identity(response):
                length = response.headers.get("Content-Length", "")
                if length.isdigit():
                    return int(length)
        with self._request("GET", {"Range": "bytes=0-0"}) as response:
            content_range = response.headers.get("Content-Range", "")
            if response.status_code == 416:  # an empty file has no byte 0
                if m := _UNSATISFIED_RANGE.fullmatch(content_range):
                    return int(m.group(1))
            elif response.status_code == 206:
                m = _CONTENT_RANGE.fullmatch(content_range)
                if m and m.group(3) != "*":
                    self._body(response, 1)
                    return int(m.group(3))
            elif response.status_code == 200:
                raise self._error("server ignored the Range header and sent no size in a HEAD")
            else:
                raise FetchError(self.name, f"HTTP {response.status_code} asking for the size")
            raise self._error(f"no usable size: HEAD had no Content-Length and a 1-byte range "
                              f"answered Content-Range {content_range!r}")

    # -- one range -------------------------------------------------------------------------------

    def _read_range(self, offset: int, length: int) -> bytes:
        last = offset + length - 1
        with self._request("GET", {"Range": f"bytes={offset}-{last}"}) as response:
            if response.status_code == 200:
                # The server ignored Range. Only the whole file is then what we asked for; for any
                # other range, close without reading so a huge body never crosses the wire.
                if offset == 0 and length == self.size:
                    return self._body(response, length, ignored_range=True)
                raise self._error("server ignored the Range header (HTTP 200 instead of 206)")
            if response.status_code != 206:
                raise FetchError(self.name, f"HTTP {response.status_code} for bytes {offset}-{last}")
            got = response.headers.get("Content-Range", "")
            if got != f"bytes {offset}-{last}/{self.size}":
                raise self._error(f"asked for bytes {offset}-{last}/{self.size} but the server "
                                  f"answered Content-Range {got!r}")
            return self._body(response, length)

    def _body(self, response: httpx2.Response, length: int, *, ignored_range: bool = False) -> bytes:
        """Exactly `length` raw body bytes; stop reading the moment the server sends more."""
        if not _identity(response):
            raise self._error(f"refusing Content-Encoding {response.headers['Content-Encoding']!r}"
                              " (asked for identity)")
        buf = bytearray()
        try:
            for chunk in response.iter_raw():
                with self._counts:
                    self.bytes_fetched += len(chunk)
                buf += chunk
                if len(buf) > length:
                    raise self._error("server ignored the Range header (body longer than the file)"
                                      if ignored_range else
                                      f"server sent more than the {length} bytes asked for")
        except httpx2.HTTPError as e:
            raise self._translate(e) from None
        if len(buf) != length:
            raise self._error(f"short body: {len(buf)} of {length} bytes")
        return bytes(buf)

    # -- requests, redirects, retries ------------------------------------------------------------

    @contextmanager
    def _request(self, method: str, headers: dict[str, str]) -> Iterator[httpx2.Response]:
        """A streamed response, closed on leaving the block (httpx2 responses aren't contexts)."""
        response = self._send(method, headers)
        try:
            yield response
        finally:
            response.close()

    def _send(self, method: str, headers: dict[str, str]) -> httpx2.Response:
        """A streamed response past redirects and retryable statuses; the caller closes it."""
        headers = {**headers, "Accept-Encoding": "identity"}
        attempt = 0
        while True:
            response = self._follow(method, headers)
            if response.status_code in STALE_STATUSES and self._url != self._origin:
                response.close()  # a cached CDN URL expired: resolve again, once
                self._url = self._origin
                response = self._follow(method, headers)
            if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                return response
            delay = self._delay(response, attempt)
            response.close()
            self._sleep(delay)
            attempt += 1

    def _follow(self, method: str, headers: dict[str, str]) -> httpx2.Response:
        """Send to the cached URL and follow up to `max_redirects` hops, keeping the final URL."""
        request = self._client.build_request(method, self._url, headers=headers)
        if request.url.origin != self._origin.origin:
            request.headers.pop("Authorization", None)  # client defaults are not for the CDN
        for _ in range(self.max_redirects + 1):
            try:
                with self._counts:
                    self.requests += 1
                response = self._client.send(
                    request, stream=True, follow_redirects=False,
                    # Client-level auth (e.g. BasicAuth) would be re-added to a foreign origin.
                    **({"auth": None} if request.url.origin != self._origin.origin else {}))
            except httpx2.HTTPError as e:
                raise self._translate(e) from None
            if response.next_request is None:
                self._url = request.url
                return response
            response.close()
            request = response.next_request
        raise self._error(f"more than {self.max_redirects} redirects (last to {request.url})")

    def _delay(self, response: httpx2.Response, attempt: int) -> float:
        """Retry-After (seconds or HTTP date) for 429/503, else exponential backoff; capped."""
        delay = self.backoff * 2**attempt
        if response.status_code in (429, 503):
            given = retry_after_seconds(response.headers.get("Retry-After"))
            delay = delay if given is None else given
        return max(0.0, min(delay, self.retry_after_cap))

    # -- errors ----------------------------------------------------------------------------------

    def _error(self, problem: str) -> WeightFormatError:
        return WeightFormatError(self.name, problem)

    def _translate(self, e: httpx2.HTTPError) -> FetchError:
        """One line for an httpx2 failure: what kind it was, and the library's words if any."""
        kind = {httpx2.TimeoutException: "timed out", httpx2.ConnectError: "cannot connect",
                httpx2.TooManyRedirects: "too many redirects"}
        label = next((text for cls, text in kind.items() if isinstance(e, cls)), "HTTP failure")
        detail = one_line(str(e)) if str(e) else ""
        return FetchError(self.name, f"{label} ({type(e).__name__}{': ' + detail if detail else ''})")


def _identity(response: httpx2.Response) -> bool:
    return response.headers.get("Content-Encoding", "identity").strip().lower() == "identity"
