"""Log notifier: one structured log line per alert (the console when the CLI runs it).

Never fails, so it is the channel to route to while Slack or PagerDuty are being set up, and
what `monitor alerts test --channel log` exercises without any secret.
"""

from __future__ import annotations

import logging

from monitor.alert.base import Alert, Notifier

log = logging.getLogger("monitor.alerts")


class LogNotifier(Notifier):
    name = "log"

    def __init__(self, logger: logging.Logger = log, level: int = logging.WARNING) -> None:
        self.logger, self.level = logger, level

    def send(self, alert: Alert) -> None:
        self.logger.log(self.level, "alert: %s", alert.summary, extra={
            **alert.details(), "fingerprint": alert.fingerprint, "action": alert.action.value,
            "link": alert.link})
