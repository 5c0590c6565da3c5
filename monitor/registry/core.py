"""The connection under the registry: opening, transactions, clock, JSON, and the audit log.

This is the one boundary where sqlite3 exceptions become ``RegistryError``: every public
registry method is wrapped by `operation`, so callers only ever see the monitor's error tree.
"""

from __future__ import annotations

import functools
import hashlib
import json
import numbers
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from monitor.errors import RegistryError
from monitor.records import AuditEntry

Clock = Callable[[], datetime]
F = TypeVar("F", bound=Callable[..., Any])

# The most bound parameters one statement may take. SQLite's compiled-in default was 999 until
# 3.32; we set it as the connection's limit so IN-list chunking behaves the same on every build.
MAX_VARIABLES = 999
IN_CHUNK = 900


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC, so stored timestamps sort as strings. Naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _json_default(value: object) -> object:
    # numpy scalars register with the numbers ABCs; arrays and tensors offer tolist().
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def stable_key(*parts: str) -> str:
    """A short fingerprint of `parts` that never changes between versions: alerts' dedup_keys
    (PagerDuty folds triggers with the same key into one incident, across pods and restarts)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def dumps(value: object) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


def chunked(values: Iterable[str]) -> Iterator[list[str]]:
    """Distinct values in lists short enough for one ``IN (...)``."""
    distinct = list(dict.fromkeys(values))
    for start in range(0, len(distinct), IN_CHUNK):
        yield distinct[start:start + IN_CHUNK]


def placeholders(values: list[str]) -> str:
    return ", ".join("?" * len(values))


def connect(path: Path, busy_timeout_s: float) -> Database:
    """An open connection in WAL mode with foreign keys on; sqlite3 errors propagate."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"registry {path}: cannot create its directory ({exc.strerror})") \
            from None
    # isolation_level=None: the driver opens no implicit transactions; we BEGIN IMMEDIATE
    # ourselves so a write waits for the lock up front instead of failing at its first write.
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, MAX_VARIABLES)
        db = Database(conn, execute_plugins=False)
        db.execute("PRAGMA schema_version")  # reads the header: a non-SQLite file fails here
        db.enable_wal()
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000):d}")
    except BaseException:
        conn.close()
        raise
    return db


def translate(exc: sqlite3.Error, path: Path, busy_timeout_s: float) -> RegistryError:
    """One line naming the file and what went wrong, for any sqlite3 exception."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        problem = (f"database is locked by another connection (waited {busy_timeout_s:g}s; "
                   "is another monitor writing?)")
    elif name.startswith("SQLITE_NOTADB"):
        problem = f"not a SQLite database ({exc})"
    elif name.startswith("SQLITE_CORRUPT"):
        problem = f"database is corrupt ({exc})"
    elif name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")):
        problem = f"cannot open or write ({exc})"
    elif isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
        problem = "the registry is closed"
    else:
        problem = str(exc)
    return RegistryError(f"registry {path}: {problem}")


def operation(method: F) -> F:
    """Serialise a public method on the connection and translate sqlite3 errors it raises."""

    @functools.wraps(method)
    def wrapper(self: RegistryCore, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise translate(exc, self.path, self._busy_timeout_s) from exc

    return wrapper  # type: ignore[return-value]


class RegistryCore:
    """Holds the connection and the clock; the Registry's parts build on its helpers."""

    def __init__(self, db: Database, path: Path, *, clock: Clock | None,
                 busy_timeout_s: float) -> None:
        self.path = path
        self._db = db
        self._clock = clock or utc_now
        self._busy_timeout_s = busy_timeout_s
        # One connection may be shared by scheduler threads; SQLite connections are not.
        self._lock = threading.RLock()

    def __enter__(self) -> RegistryCore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @operation
    def close(self) -> None:
        self._db.close()

    @property
    @operation
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _now(self) -> str:
        return iso(self._clock())

    @contextmanager
    def _tx(self) -> Iterator[Database]:
        """One write transaction: everything inside commits together or not at all."""
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _append_audit(self, db: Database, *, actor: str, action: str, subject: str,
                      detail: dict[str, Any] | None) -> None:
        db["audit_log"].insert({"at": self._now(), "actor": actor, "action": action,
                                "subject": subject, "detail": dumps(detail or {})})

    @operation
    def audit(self, *, actor: str, action: str, subject: str,
              detail: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            self._append_audit(db, actor=actor, action=action, subject=subject, detail=detail)

    @operation
    def audit_log(self, *, limit: int | None = None) -> list[AuditEntry]:
        """Newest first."""
        sql = "SELECT id, at, actor, action, subject, detail FROM audit_log ORDER BY id DESC"
        params: list[int] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [AuditEntry(id=r["id"], at=r["at"], actor=r["actor"], action=r["action"],
                           subject=r["subject"], detail=json.loads(r["detail"]))
                for r in self._db.query(sql, params)]
