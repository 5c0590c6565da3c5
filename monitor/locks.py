"""One holder per job per registry: `monitor run-once` and the daemon never sweep the same crawler
of one registry at once.

An advisory `flock` on `<registry>.<job>.lock`: the kernel releases it when the holder exits,
however it exits (kill -9 included), so a crash never leaves a stale lock to clean up by hand.
The file records the holder's pid and start time for the error message.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monitor.errors import MonitorError


class JobBusy(MonitorError):
    """Another process holds this job's lock."""


def lock_path(db_path: Path, job: str) -> Path:
    return db_path.with_name(f"{db_path.name}.{re.sub(r'[^A-Za-z0-9_.-]', '_', job)}.lock")


@contextmanager
def job_lock(db_path: Path, job: str) -> Iterator[None]:
    """Hold the job's lock for the block; JobBusy at once (no waiting) if another holds it."""
    path = lock_path(db_path, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise JobBusy(f"job {job} is already running on {db_path} ({holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
