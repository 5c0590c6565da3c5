"""One pass over the outbox: send every due alert, record what each channel accepted.

Guarantees, and the one window they leave:

- A row is marked delivered only after its channel accepted it, and in the same transaction the
  notification log records it; before sending, the log is checked, so a row already logged is
  never sent again to that channel.
- A transient failure (5xx, 429, timeout) leaves the row pending with the next attempt at
  ``base * 2**attempts`` seconds (capped), or at the channel's Retry-After if it gave one (also
  capped): an alert that cannot be delivered stays pending across restarts, never lost.
  A permanent failure (4xx) marks the row failed with the reason (``monitor alerts retry``).
- A process killed (kill -9, power loss) after a channel accepted an alert but before the log
  transaction committed sends that one alert again on restart: at most one re-send per row per
  crash, and none when the kill lands before the send. PagerDuty deduplicates it (the trigger
  carries the alert's fingerprint as dedup_key, so it updates the same incident); Slack has no
  idempotency key, so there the window shows as one duplicate message.
- One deliverer per registry at a time: two concurrent drains could both send a due row.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitor.alert.base import Alert, DeliveryError, Notifier, Permanent, Transient
from monitor.registry import Registry

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Backoff:
    """When to try a row again after its n-th transient failure."""

    base_s: float = 30.0
    cap_s: float = 3600.0
    jitter: float = 0.1  # ± this share of the delay, so a fleet of rows does not retry in step

    def delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:  # the channel said when; we only refuse to wait forever
            return min(max(retry_after, 0.0), self.cap_s)
        delay = min(self.base_s * 2 ** min(attempts, 30), self.cap_s)
        return delay * (1 + self.jitter * (2 * rng.random() - 1))


@dataclass
class DeliveryReport:
    """What one pass did, per outcome; `errors` keeps the last message per channel."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    already_sent: int = 0  # logged as accepted but not yet marked: marked now, not re-sent
    no_notifier: int = 0  # rows for a channel nothing is configured for: left pending
    deferred: int = 0  # not tried this pass: their channel asked us to wait (Retry-After)
    errors: dict[str, str] = field(default_factory=dict)


def deliver_due(registry: Registry, notifiers: Mapping[str, Notifier], clock: Clock, *,
                backoff: Backoff = Backoff(), rng: random.Random | None = None,
                channel: str | None = None) -> DeliveryReport:
    """Send each outbox row due now, oldest first; one channel's trouble never blocks another."""
    rng = rng or random.Random()
    report = DeliveryReport()
    waiting: dict[str, datetime] = {}  # channel → until when it asked us to wait
    for row in registry.pending_outbox(channel=channel, now=clock()):
        notifier = notifiers.get(row.channel)
        if notifier is None:
            report.no_notifier += 1
            continue
        alert = Alert.from_row(row)
        if row.channel in waiting and clock() < waiting[row.channel]:
            report.deferred += 1
            continue
        if registry.notified(row.id, alert.action.value):
            registry.record_notification(row.id, alert.action.value)
            report.already_sent += 1
            continue
        try:
            answer = notifier.send(alert)
        except Permanent as e:
            registry.mark_failed(row.id, str(e), next_attempt_at=None, action=alert.action.value)
            report.failed += 1
            report.errors[row.channel] = str(e)
            log.error("alert rejected, giving up", extra={
                "outbox_id": row.id, "channel": row.channel, "error": str(e)})
        except DeliveryError as e:  # Transient, or a notifier's own subclass: worth retrying
            retry_after = e.retry_after if isinstance(e, Transient) else None
            delay = backoff.delay(row.attempts, retry_after, rng)
            at = clock() + timedelta(seconds=delay)
            if retry_after is not None:
                waiting[row.channel] = at
            registry.mark_failed(row.id, str(e), next_attempt_at=at, action=alert.action.value)
            report.retrying += 1
            report.errors[row.channel] = str(e)
            log.warning("alert not delivered, will retry", extra={
                "outbox_id": row.id, "channel": row.channel, "error": str(e), "retry_in_s": delay})
        else:
            registry.record_notification(row.id, alert.action.value, answer)
            report.delivered += 1
            log.info("alert delivered", extra={"outbox_id": row.id, "channel": row.channel,
                                               "action": alert.action.value})
    return report


def drain(registry: Registry, alerts, env: Mapping[str, str], clock: Clock, *,
          channel: str | None = None) -> tuple[DeliveryReport, list[str]]:
    """Build the notifiers the due rows need and deliver them: what `monitor alerts deliver`,
    the end of `monitor run-once` and the daemon's delivery job each do. A channel whose
    notifier cannot be built (a secret missing) is reported and its rows stay pending."""
    from monitor.alert.build import notifier
    from monitor.errors import MonitorError

    wanted = {r.channel for r in registry.pending_outbox(channel=channel)}
    senders, problems = {}, []
    for name in sorted(wanted):
        try:
            senders[name] = notifier(name, alerts, env)
        except MonitorError as e:  # deliver the others; say what is missing
            problems.append(str(e))
    try:
        report = deliver_due(registry, senders, clock, channel=channel,
                             backoff=Backoff(base_s=alerts.retry_base_s, cap_s=alerts.retry_max_s))
    finally:
        for s in senders.values():
            s.close()
    return report, problems
