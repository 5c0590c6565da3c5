"""Slack notifier: chat.postMessage with Block Kit (bot token), or an incoming webhook.

slack-sdk's own retry handlers are switched off (``retry_handlers=[]``): a retry that sleeps in
the client would hide from the outbox and be lost on restart; ours live in deliver.py. Answers are
translated here, once: 429 (Retry-After) and 5xx, a refused or timed-out connection, and Slack's
transient ``ok: false`` errors → Transient; any other 4xx or ``ok: false`` → Permanent.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Mapping
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from monitor.alert.base import (Action, Alert, ConditionAlert, DetectionAlert, Notifier,
                                Permanent, Transient)
from monitor.httputil import retry_after_seconds

# chat.postMessage errors that Slack documents as worth retrying (answered with HTTP 200).
_TRANSIENT_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout",
                     "ratelimited"}


def blocks(alert: Alert) -> tuple[str, list[dict[str, Any]]]:
    """Fallback text and Block Kit blocks: what, where (linked), how sure, what to do next."""
    if isinstance(alert, ConditionAlert):
        return _condition_blocks(alert)
    assert isinstance(alert, DetectionAlert)
    where = f"<{alert.link}|{alert.location}>" if alert.link else f"`{alert.location}`"
    if alert.action is Action.RESOLVE:
        text = f"Resolved ({alert.status}): {alert.model} at {alert.location}"
        return text, [{"type": "section", "text": {"type": "mrkdwn", "text":
                       f":white_check_mark: *Resolved* ({alert.status}): event {alert.event_id}, "
                       f"*{alert.model}* at {where}"}}]
    if alert.action is Action.ACKNOWLEDGE:
        return alert.summary, [{"type": "section", "text": {"type": "mrkdwn", "text":
                               f":eyes: *Acknowledged* ({alert.status}, by "
                               f"{alert.status_by or 'someone'}): event {alert.event_id}, "
                               f"*{alert.model}* at {where}"}}]
    p_value = "n/a" if alert.p_value is None else f"{alert.p_value:.2e}"
    text = alert.summary
    title = f"Possible stolen copy of {alert.model}"
    if alert.action is Action.REPEAT:
        title = f"Still unacknowledged (reminder {alert.repeat}): copy of {alert.model}"
    return text, [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"Found at {where}"}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Verdict*\n{alert.verdict}"},
            {"type": "mrkdwn", "text": f"*Confidence*\n{alert.confidence} (score {alert.score:.2f})"},
            {"type": "mrkdwn", "text": f"*p-value*\n{p_value}"},
            {"type": "mrkdwn", "text": f"*Event*\n{alert.event_id} · detected {alert.detected_at[:19]}Z"
                                       f" · seen {alert.sightings}×"},
        ]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text":
                                          f"Next step: `{alert.next_step}`"}]},
    ]


def _condition_blocks(alert: ConditionAlert) -> tuple[str, list[dict[str, Any]]]:
    icon = ":white_check_mark:" if alert.action is Action.RESOLVE else ":warning:"
    body = [{"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {alert.summary}"}}]
    if alert.action is not Action.RESOLVE:
        body.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                     f"Failing since {alert.since[:19]}Z · next step: {alert.next_step}"}]})
    return alert.summary, body


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    """slack-sdk hands headers as a plain dict (case as sent, values sometimes lists)."""
    for name in ("Retry-After", "retry-after"):
        value = (headers or {}).get(name)
        if value is not None:
            return retry_after_seconds(value[0] if isinstance(value, list) else value)
    return None


def _by_status(name: str, status: int, headers: Mapping[str, Any] | None, what: str) -> None:
    if status == 429:
        raise Transient(name, f"rate limited (429): {what}", _retry_after(headers))
    if status >= 500:
        raise Transient(name, f"HTTP {status}: {what}")
    if status >= 400:
        raise Permanent(name, f"HTTP {status}: {what}")


class SlackNotifier(Notifier):
    """Posts to one channel with a bot token (chat.postMessage)."""

    name = "slack"

    def __init__(self, client: WebClient, channel: str) -> None:
        self.client, self.channel = client, channel

    def send(self, alert: Alert) -> dict[str, Any]:
        text, body = blocks(alert)
        try:
            response = self.client.chat_postMessage(channel=self.channel, text=text, blocks=body)
        except SlackApiError as e:
            r = e.response
            error = r.data.get("error") if isinstance(r.data, dict) else str(r.data)[:200]
            _by_status(self.name, r.status_code, r.headers, str(error))
            if error in _TRANSIENT_ERRORS:
                raise Transient(self.name, f"chat.postMessage: {error}") from None
            raise Permanent(self.name, f"chat.postMessage: {error}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise Transient(self.name, f"cannot reach Slack: {getattr(e, 'reason', e)}") from None
        return {"ts": response.get("ts"), "channel": response.get("channel")}


class SlackWebhookNotifier(Notifier):
    """Posts through an incoming webhook (the URL is the secret; the channel is fixed by it)."""

    name = "slack"

    def __init__(self, client: WebhookClient) -> None:
        self.client = client

    def send(self, alert: Alert) -> None:
        text, body = blocks(alert)
        try:
            response = self.client.send(text=text, blocks=body)
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise Transient(self.name, f"cannot reach the webhook: {getattr(e, 'reason', e)}") from None
        _by_status(self.name, response.status_code, response.headers, str(response.body)[:200])
        return None
