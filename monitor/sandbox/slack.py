"""A local Slack: Web API chat.postMessage and incoming webhooks, capturing every message.

    POST /api/chat.postMessage   Bearer token (if `token` is set) and JSON {channel, text, blocks};
                                 answers 200 {"ok": true, "ts", "channel"}, or 200 {"ok": false,
                                 "error": "invalid_auth" | "channel_not_found"} as Slack does
    POST /webhook/{anything}     an incoming webhook: 200 "ok", 400 "invalid_payload" without text
Injected failures look like Slack's: 429 {"ok": false, "error": "ratelimited"} with Retry-After,
5xx with an HTML-ish body. `messages()` gives the JSON bodies that were accepted.
"""

from __future__ import annotations

from itertools import count
from typing import Any

from monitor.sandbox.capture import Answer, CaptureServer


class SlackServer(CaptureServer):
    name = "slack"

    def __init__(self, *, token: str | None = None, channels: tuple[str, ...] = ("#alerts",),
                 **faults: Any) -> None:
        super().__init__(**faults)
        self.token, self.channels = token, channels
        self._ts = count(1)

    @property
    def api_url(self) -> str:
        """What slack-sdk's WebClient takes as base_url."""
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhook/T000/B000/XXXX"

    def messages(self) -> list[dict[str, Any]]:
        return [c.json() for c in self.accepted()]

    def error(self, status: int, headers: dict[str, str]) -> Answer:
        if status == 429:
            return Answer(429, {"ok": False, "error": "ratelimited"}, headers)
        return Answer(status, b"<html>upstream trouble</html>", headers)

    def route(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        import json

        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if path.startswith("/webhook/"):
            if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
                return Answer(400, b"invalid_payload")
            return Answer(200, b"ok")
        if path != "/api/chat.postMessage":
            return Answer(404, {"ok": False, "error": "unknown_method"})
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return Answer(200, {"ok": False, "error": "invalid_auth"})
        if not isinstance(message, dict) or message.get("channel") not in self.channels:
            return Answer(200, {"ok": False, "error": "channel_not_found"})
        return Answer(200, {"ok": True, "channel": message["channel"],
                            "ts": f"1700000000.{next(self._ts):06d}"})
