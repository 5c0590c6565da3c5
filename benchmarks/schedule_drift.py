"""Scheduling drift of `monitor.schedule.Daemon`: how late does each job start?

An hour of schedule, compressed 60×: each of N jobs fires every `--period` seconds, each slot
standing for one minute of a per-minute cron, for `--seconds` (60 slots = one simulated hour), while every run does real work (CPU in
numpy, plus a sleep standing in for network waits) and one long job holds its instance past its
next slot (coalesced, never doubled). Drift is the actual start minus the scheduled time,
from the Daemon's own wrapper, per run. Target (issue 5): under 1 s per job.

    .venv/bin/python benchmarks/schedule_drift.py --jobs 4 --period 1 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from apscheduler.events import EVENT_JOB_SUBMITTED
from apscheduler.triggers.interval import IntervalTrigger

from monitor import config
from monitor.metrics import Metrics
from monitor.schedule import Daemon, Job


def work(seconds: float):
    def run(stop: threading.Event) -> None:
        a = np.random.default_rng(0).standard_normal((256, 256))
        for _ in range(20):
            a = np.tanh(a @ a.T / 256)
        stop.wait(seconds)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--period", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = config.load(env={"MONITOR_DB": str(Path(tmp) / "r.db"), "MONITOR_DAEMON_JITTER_S": "0"})
        jobs = [Job(f"job{i}", IntervalTrigger(seconds=args.period, timezone=UTC), work(0.1))
                for i in range(args.jobs)]
        jobs.append(Job("long", IntervalTrigger(seconds=args.period, timezone=UTC), work(args.period * 2.5)))
        daemon = Daemon(settings, jobs, Metrics(settings.db_path))
        drift: dict[str, list[float]] = {j.id: [] for j in jobs}

        def submitted(event) -> None:
            for when in event.scheduled_run_times:
                drift[event.job_id].append((datetime.now(UTC) - when).total_seconds())

        daemon.scheduler.add_listener(submitted, EVENT_JOB_SUBMITTED)
        daemon.start()
        time.sleep(args.seconds)
        daemon.stop(10)
    rows = {job: {"runs": len(d), "median_s": round(statistics.median(d), 4) if d else None,
                  "max_s": round(max(d), 4) if d else None} for job, d in drift.items()}
    worst = max(r["max_s"] or 0 for r in rows.values())
    print("| job | runs | median drift (s) | max drift (s) |\n|---|---|---|---|")
    for job, r in rows.items():
        print(f"| {job} | {r['runs']} | {r['median_s']} | {r['max_s']} |")
    print(json.dumps({"jobs": rows, "worst_drift_s": worst, "ok": worst < 1.0,
                      "simulated_minutes": int(args.seconds / args.period)}))
    return 0 if worst < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
