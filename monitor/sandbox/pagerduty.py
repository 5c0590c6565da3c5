"""A local PagerDuty Events API v2 over HTTPS, keeping incidents by dedup_key.

    POST /v2/enqueue   {routing_key, event_action: trigger|acknowledge|resolve, dedup_key?,
                       payload: {summary, source, severity} for a trigger}
                       → 202 {"status": "success", "message": "Event processed", "dedup_key"},
                       400 {"status": "invalid event", "errors": [...]} for a bad event or key
A trigger for an open dedup_key updates that incident (PagerDuty's deduplication); a resolve
closes it. python-pagerduty only talks https, so the server needs a certificate: `self_signed`
makes one for 127.0.0.1 with openssl, and a client trusts it through `trust(cert)`.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.sandbox.capture import Answer, CaptureServer

SEVERITIES = ("critical", "error", "warning", "info")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (and localhost), valid for a day."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def trust(cert: Path) -> ssl.SSLContext:
    """A client context that trusts only this certificate (hostname checked as usual)."""
    return ssl.create_default_context(cafile=str(cert))


@dataclass
class Incident:
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    summary: str
    severity: str
    events: list[str] = field(default_factory=list)  # the event actions it received


class PagerDutyServer(CaptureServer):
    name = "pagerduty"

    def __init__(self, cert: Path, key: Path, *, routing_key: str | None = None,
                 **faults: Any) -> None:
        super().__init__(tls=server_context(cert, key), **faults)
        self.routing_key = routing_key
        self.incidents: dict[str, Incident] = {}

    def events(self) -> list[dict[str, Any]]:
        """The events accepted, in order."""
        return [c.json() for c in self.accepted()]

    def error(self, status: int, headers: dict[str, str]) -> Answer:
        return Answer(status, {"status": "throttle" if status == 429 else "error",
                               "message": "injected"}, headers)

    def route(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path != "/v2/enqueue":
            return Answer(404, {"status": "not found"})
        try:
            event = json.loads(body)
        except ValueError:
            return _invalid("body is not JSON")
        if self.routing_key is not None and event.get("routing_key") != self.routing_key:
            return _invalid("Length of 'routing_key' is incorrect (should be 32 characters)")
        action, key = event.get("event_action"), event.get("dedup_key")
        if action not in ("trigger", "acknowledge", "resolve"):
            return _invalid("'event_action' is invalid")
        if action != "trigger" and not key:
            return _invalid("'dedup_key' is required for acknowledge and resolve")
        key = key or uuid.uuid4().hex
        with self._lock:
            if action == "trigger":
                p = event.get("payload") or {}
                if not all(p.get(k) for k in ("summary", "source", "severity")) \
                        or p["severity"] not in SEVERITIES:
                    return _invalid("'payload' needs summary, source and a valid severity")
                incident = self.incidents.get(key)
                if incident is None or incident.status == "resolved":
                    incident = self.incidents[key] = Incident(key, "triggered", p["summary"],
                                                              p["severity"])
                incident.events.append(action)
            elif key in self.incidents:  # unknown keys are accepted and ignored, as PagerDuty does
                incident = self.incidents[key]
                incident.status = "resolved" if action == "resolve" else "acknowledged"
                incident.events.append(action)
        return Answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})


def _invalid(message: str) -> Answer:
    return Answer(400, {"status": "invalid event", "message": "Event object is invalid",
                        "errors": [message]})
