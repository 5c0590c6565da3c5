"""Build the notifiers the [alerts] settings name, with their secrets; called by the CLI only.

A channel that is routed to but has no secret is a one-line ConfigError naming the variable, so
`monitor alerts deliver` says what to set instead of leaving rows pending without a word.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping

from monitor.alert.base import Notifier
from monitor.alert.log import LogNotifier
from monitor.config import AlertSettings, read_secret
from monitor.errors import ConfigError


def notifier(name: str, alerts: AlertSettings, env: Mapping[str, str]) -> Notifier:
    if name == "log":
        return LogNotifier()
    if name == "slack":
        from slack_sdk import WebClient
        from slack_sdk.webhook import WebhookClient

        from monitor.alert.slack import SlackNotifier, SlackWebhookNotifier

        timeout = int(max(alerts.timeout_s, 1))
        webhook = read_secret("SLACK_WEBHOOK_URL", dict(env))
        if webhook is not None:
            return SlackWebhookNotifier(WebhookClient(webhook.get_secret_value(), timeout=timeout,
                                                      retry_handlers=[]))
        token = read_secret("SLACK_BOT_TOKEN", dict(env))
        if token is None:
            raise ConfigError("alerts.routes", "slack", "set SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN "
                              "(or <NAME>_FILE) to send to Slack")
        return SlackNotifier(WebClient(token=token.get_secret_value(), base_url=alerts.slack_api_url,
                                       timeout=timeout, retry_handlers=[]), alerts.slack_channel)
    if name == "pagerduty":
        from monitor.alert import pagerduty

        key = read_secret("PAGERDUTY_ROUTING_KEY", dict(env))
        if key is None:
            raise ConfigError("alerts.routes", "pagerduty", "set PAGERDUTY_ROUTING_KEY (or "
                              "PAGERDUTY_ROUTING_KEY_FILE) to page through PagerDuty")
        verify: ssl.SSLContext | bool = True
        if alerts.pagerduty_ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(alerts.pagerduty_ca_file))
            except (OSError, ssl.SSLError) as e:
                raise ConfigError("alerts.pagerduty_ca_file", str(alerts.pagerduty_ca_file),
                                  f"not a readable PEM CA file ({e})") from None
        return pagerduty.PagerDutyNotifier(
            pagerduty.client(key.get_secret_value(), base_url=alerts.pagerduty_url,
                             timeout_s=alerts.timeout_s, verify=verify), alerts.severity)
    raise ConfigError("--channel", name, "must be one of slack, pagerduty, log")


def notifiers(names: Iterable[str], alerts: AlertSettings,
              env: Mapping[str, str]) -> dict[str, Notifier]:
    return {name: notifier(name, alerts, env) for name in sorted(set(names))}
