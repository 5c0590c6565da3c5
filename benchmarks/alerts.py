"""Alert delivery under failure: N events to Slack and PagerDuty whose servers fail a share of
requests at random (500, or 429 with Retry-After: 0); every alert must arrive exactly once per
channel — the triggers, then a day later one reminder each (repeat_interval), then a resolve for
every other event once it is closed.

The real slack-sdk WebClient and python-pagerduty EventsApiV2Client talk to the local capture
servers (PagerDuty over TLS with a throwaway certificate); deliver_due drains the outbox pass after
pass on a simulated clock (backoff is real, waiting for it is not), until nothing is pending.
Counted on the servers' side: accepted messages per (event, channel).

    python benchmarks/alerts.py [--events 1000] [--fail-rate 0.3] [--seed 7]

The issue's other target, scheduling drift under 1 s per job, is measured by
benchmarks/schedule_drift.py (the daemon's benchmark); `make bench` runs both.
TODO(drift): if one report is wanted, call schedule_drift's entry point here and merge its row.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from slack_sdk import WebClient

from monitor.alert import pagerduty
from monitor.alert.deliver import Backoff, deliver_due, queue_repeats
from monitor.alert.slack import SlackNotifier
from monitor.records import EventStatus, FingerprintBlob, NewEvent, Verdict, WeightFile
from monitor.registry import Registry
from monitor.sandbox.pagerduty import PagerDutyServer, self_signed, trust
from monitor.sandbox.slack import SlackServer


class SimClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def run(events: int, fail_rate: float, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = self_signed(Path(tmp))
        clock = SimClock()
        with Registry.open(Path(tmp) / "r.db", clock=clock) as reg, \
                SlackServer(token="xoxb", fail_rate=fail_rate, seed=seed) as slack, \
                PagerDutyServer(cert, key, fail_rate=fail_rate, seed=seed + 1) as pd:
            model = reg.add_model(name="ours", owner=None, source="/m", tensors=[],
                                  files=[WeightFile("m.safetensors", 1, "a" * 64, "safetensors")],
                                  fingerprints=[FingerprintBlob("sketch", 1, b"x")], actor="bench")
            keys, ids = {}, []
            for i in range(events):
                event, _ = reg.record_event(NewEvent(model.id, "ours", f"hf://thief/copy-{i}",
                                                     Verdict.EXACT, 1.0, "high", None, {}),
                                            actor="bench", channels=["slack", "pagerduty"])
                keys[reg.list_outbox(limit=1)[0].dedup_key] = event.location
                ids.append(event.id)
            notifiers = {
                "slack": SlackNotifier(WebClient(token="xoxb", base_url=slack.api_url,
                                                 retry_handlers=[], timeout=5), "#alerts"),
                "pagerduty": pagerduty.PagerDutyNotifier(pagerduty.client(
                    "R" * 32, base_url=pd.url, verify=trust(cert)), {"exact": "critical"})}
            backoff, every = Backoff(base_s=1, cap_s=60), {"exact": timedelta(days=1)}
            passes, started, phases = 0, time.perf_counter(), {}

            def drain(phase: str, expected: int) -> None:
                nonlocal passes
                seen = len(slack.messages()), len(pd.events())
                while True:  # what the daemon's delivery job does, pass after pass
                    queue_repeats(reg, every, clock())
                    if not reg.pending_outbox(now=clock.now + timedelta(days=1)):
                        break
                    deliver_due(reg, notifiers, clock, backoff=backoff)
                    clock.now += timedelta(seconds=60)  # the longest any retry waits
                    passes += 1
                phases[phase] = {
                    "slack": Counter(m["text"].rsplit(" ", 1)[-1]
                                     for m in slack.messages()[seen[0]:]),
                    "pagerduty": Counter(keys[e["dedup_key"]] for e in pd.events()[seen[1]:]),
                    "expected": expected}

            drain("trigger", events)
            clock.now += timedelta(days=1)  # nobody acknowledged: one reminder each is owed
            drain("repeat", events)
            for event_id in ids[::2]:
                reg.set_event_status(event_id, EventStatus.RESOLVED, actor="bench")
            drain("resolve", len(ids[::2]))
            seconds = time.perf_counter() - started
            for n in notifiers.values():
                n.close()
            requests = len(slack.received) + len(pd.received)
            failed = requests - len(slack.accepted()) - len(pd.accepted())
            outbox = Counter(r.status.value for r in reg.list_outbox())
    rows = {f"{phase} → {ch}": {"alerts": p["expected"], "received": sum(p[ch].values()),
                                "distinct": len(p[ch]), "duplicates": sum(v - 1 for v in p[ch].values()),
                                "missing": p["expected"] - len(p[ch])}
            for phase, p in phases.items() for ch in ("slack", "pagerduty")}
    sent = sum(r["received"] for r in rows.values())
    return {"events": events, "fail_rate": fail_rate, "seed": seed, "channels": rows,
            "requests": requests, "injected_failures": failed, "passes": passes,
            "seconds": round(seconds, 2), "alerts_per_s": round(sent / seconds, 1),
            "outbox": dict(outbox),
            "exactly_once": all(r["duplicates"] == 0 and r["missing"] == 0 for r in rows.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--fail-rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # every injected failure logs (ours, slack-sdk); the table counts them
    result = run(args.events, args.fail_rate, args.seed)
    print("| notification → channel | alerts | received | distinct | duplicates | missing |\n"
          "|---|---|---|---|---|---|")
    for ch, r in result["channels"].items():
        print(f"| {ch} | {r['alerts']} | {r['received']} | {r['distinct']} | {r['duplicates']} | "
              f"{r['missing']} |")
    print(f"\n{result['requests']} requests, {result['injected_failures']} failed "
          f"({100 * result['injected_failures'] / max(result['requests'], 1):.1f} %), "
          f"{result['passes']} passes, {result['seconds']} s, {result['alerts_per_s']} alerts/s; "
          f"exactly once per channel: {result['exactly_once']}\n")
    print(json.dumps(result))
    return 0 if result["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
