"""PagerDuty notifier: Events API v2 through python-pagerduty's EventsApiV2Client (httpx2).

Trigger with ``dedup_key`` = the alert's fingerprint (one per model and location), so a re-send
after a crash, or the same copy found by another shard, updates the same incident instead of
paging twice; acknowledge with the same key when someone takes the event (investigating,
confirmed: escalation stops), resolve when it is closed; a reminder is another trigger.

The client retries inside ``request()``: 429 forever by default (api_client.py: ``elif status
== 429: sleep; continue`` with a doubling cooldown), 500/502/503/504 2–6 times, and network
errors 3 times, sleeping between tries. Those sleeps would block the drain and be forgotten on
restart, so `_OneShotClient` stops every retry at the first answer: ``postprocess`` (the hook
the client calls on every response, before its retry logic) raises for 429 and 5xx, and
``max_network_attempts = 0`` makes the first transport error final. Retries are the outbox's.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx2
import pagerduty

from monitor.alert.base import Action, Alert, Notifier, Permanent, Transient
from monitor.httputil import retry_after_seconds

DEFAULT_URL = "https://events.pagerduty.com"


class _RetryableAnswer(Exception):
    def __init__(self, response: httpx2.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _OneShotClient(pagerduty.EventsApiV2Client):
    """EventsApiV2Client that makes exactly one HTTP attempt per event."""

    max_network_attempts = 0

    def postprocess(self, response: httpx2.Response) -> None:
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableAnswer(response)


def client(routing_key: str, *, base_url: str = DEFAULT_URL, timeout_s: float = 10.0,
           verify: ssl.SSLContext | bool = True) -> pagerduty.EventsApiV2Client:
    """`verify` is the system trust store unless a caller passes a context (a private CA)."""
    c = _OneShotClient(routing_key, base_url=base_url, verify=verify)
    c.timeout = timeout_s
    return c


class PagerDutyNotifier(Notifier):
    name = "pagerduty"

    def __init__(self, events: pagerduty.EventsApiV2Client, severities: Mapping[str, str]) -> None:
        self.events, self.severities = events, severities

    def send(self, alert: Alert) -> dict[str, Any]:
        try:
            if alert.action is Action.RESOLVE:
                key = self.events.resolve(alert.fingerprint)
            elif alert.action is Action.ACKNOWLEDGE:
                key = self.events.acknowledge(alert.fingerprint)
            else:
                key = self.events.trigger(
                    alert.summary, source="provenance-monitor", dedup_key=alert.fingerprint,
                    severity=self.severities.get(alert.kind, "critical"),  # type: ignore[attr-defined]
                    custom_details=alert.details(),
                    links=[{"href": alert.link, "text": "where it was found"}] if alert.link else None)
        except _RetryableAnswer as e:
            status = e.response.status_code
            raise Transient(self.name, f"HTTP {status} from the Events API",
                            retry_after_seconds(e.response.headers.get("Retry-After"))) from None
        except pagerduty.ServerHttpError as e:  # a 2xx without a dedup_key, a redirect
            raise Transient(self.name, f"unexpected answer: {str(e)[:200]}") from None
        except pagerduty.HttpError as e:  # 4xx (401 raised by the client, others by us below)
            status = e.response.status_code if e.response is not None else "?"
            raise Permanent(self.name, f"HTTP {status}: {_reason(e.response)}") from None
        except pagerduty.Error as e:  # network failure (its first attempt, see _OneShotClient)
            raise Transient(self.name, f"cannot reach the Events API: {e.__cause__ or e}") from None
        return {"dedup_key": key}

    def close(self) -> None:
        self.events.close()


def _reason(response: httpx2.Response | None) -> str:
    if response is None:
        return "no response"
    try:
        body = response.json()
        return "; ".join(body.get("errors") or [body.get("message", "")])[:200]
    except ValueError:
        return response.text[:200]
