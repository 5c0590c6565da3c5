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

Before each pass, `queue_repeats` owes a reminder to each channel of an unacknowledged event or a
firing condition that has heard nothing for its kind's repeat interval. During the pass, a
condition's trigger or repeat is held back while its parent condition fires (inhibition), and a
resolve or acknowledge for a channel that never accepted the trigger is suppressed, not sent.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitor.alert.base import Action, Alert, DeliveryError, Notifier, Permanent, Transient
from monitor.records import OutboxRow
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
    inhibited: int = 0  # held back while a parent condition fires: left pending
    suppressed: int = 0  # resolves/acknowledges with nothing to act on (no trigger got through)
    repeats_queued: int = 0  # reminders owed at the start of the pass
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
        if row.channel in waiting and clock() < waiting[row.channel]:
            report.deferred += 1
            continue
        if registry.notified(row.id):
            registry.record_notification(row.id)
            report.already_sent += 1
            continue
        if _held_back(registry, row, report):
            continue
        alert = Alert.from_row(row)
        try:
            answer = notifier.send(alert)
        except Permanent as e:
            registry.mark_failed(row.id, str(e), next_attempt_at=None)
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
            registry.mark_failed(row.id, str(e), next_attempt_at=at)
            report.retrying += 1
            report.errors[row.channel] = str(e)
            log.warning("alert not delivered, will retry", extra={
                "outbox_id": row.id, "channel": row.channel, "error": str(e), "retry_in_s": delay})
        else:
            registry.record_notification(row.id, answer)
            report.delivered += 1
            log.info("alert delivered", extra={"outbox_id": row.id, "channel": row.channel,
                                               "action": alert.action.value})
    return report


def _held_back(registry: Registry, row: OutboxRow, report: DeliveryReport) -> bool:
    """Inhibition and resolves with nothing to resolve; True if the row is not to be sent now."""
    if row.action in (Action.RESOLVE, Action.ACKNOWLEDGE):
        if not registry.opened(row):
            registry.mark_suppressed(row.id, f"nothing to {row.action.value}: the channel never "
                                             "accepted a trigger for it")
            report.suppressed += 1
            return True
        return False
    if row.condition_id is not None:
        parent = registry.inhibited_by(row.condition_id)
        if parent is not None:  # stays pending; sent if still firing once the parent clears
            report.inhibited += 1
            log.info("alert inhibited", extra={"outbox_id": row.id, "channel": row.channel,
                                               "by": f"{parent.kind}: {parent.subject}"})
            return True
    return False


def queue_repeats(registry: Registry, every: Mapping[str, timedelta], now: datetime) -> int:
    """Owe reminders for what is still open (see the module docstring)."""
    return registry.queue_event_repeats(every, now) + registry.queue_condition_repeats(every, now)


def drain(registry: Registry, alerts, env: Mapping[str, str], clock: Clock, *,
          channel: str | None = None) -> tuple[DeliveryReport, list[str]]:
    """Build the notifiers the due rows need and deliver them: what `monitor alerts deliver`,
    the end of `monitor run-once` and the daemon's delivery job each do. A channel whose
    notifier cannot be built (a secret missing) is reported and its rows stay pending."""
    from monitor.alert.build import notifier
    from monitor.errors import MonitorError

    repeats = queue_repeats(registry, alerts.repeat_intervals(), clock())
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
    report.repeats_queued = repeats
    return report, problems
