"""The registry's tables and their forward-only migrations.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes a database from
version ``i`` to ``i + 1``; each runs in its own transaction together with the version bump, so a
failed migration leaves the file at the previous version. Migrations only add (tables, columns,
indexes, backfills): they never drop data. To change the schema, append one function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sqlite_utils import Database

from monitor.errors import RegistryError

Migration = Callable[[Database], None]

_V1 = """
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    owner TEXT,
    source TEXT NOT NULL,
    registered_at TEXT NOT NULL
);

CREATE TABLE model_files (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL,
    UNIQUE (model_id, path)
);
CREATE INDEX model_files_sha256 ON model_files(sha256);

CREATE TABLE tensors (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    file_id INTEGER NOT NULL REFERENCES model_files(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    dtype TEXT NOT NULL,
    shape TEXT NOT NULL,  -- JSON list of ints
    byte_begin INTEGER NOT NULL,
    byte_end INTEGER NOT NULL CHECK (byte_end >= byte_begin),
    digest TEXT NOT NULL,
    constant INTEGER NOT NULL CHECK (constant IN (0, 1))
);
CREATE INDEX tensors_digest ON tensors(digest);
CREATE INDEX tensors_model ON tensors(model_id);
CREATE INDEX tensors_file ON tensors(file_id);  -- cascades from model_files need it

CREATE TABLE fingerprints (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    algorithm TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (model_id, algorithm, version)
);

CREATE TABLE crawl_state (
    source TEXT NOT NULL,
    scope TEXT NOT NULL,
    cursor TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, scope)
);

CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    location TEXT NOT NULL,
    revision TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    bytes_read INTEGER NOT NULL DEFAULT 0,
    verdict TEXT CHECK (verdict IN ('exact', 'repackaged', 'derivative', 'none')),
    UNIQUE (source, location, revision)
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
    model_name TEXT NOT NULL,
    location TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('exact', 'repackaged', 'derivative', 'none')),
    score REAL NOT NULL,
    confidence TEXT NOT NULL,
    p_value REAL,
    evidence TEXT NOT NULL,  -- JSON object
    status TEXT NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'investigating', 'confirmed', 'false_positive', 'resolved')),
    status_by TEXT,
    status_at TEXT,
    created_at TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    sightings INTEGER NOT NULL DEFAULT 1,
    last_seen_at TEXT NOT NULL
);
-- At most one open (not resolved) event per model and location, even with two writers.
CREATE UNIQUE INDEX events_open_dedup ON events(dedup_key) WHERE status != 'resolved';
CREATE INDEX events_dedup ON events(dedup_key);
CREATE INDEX events_status ON events(status);
CREATE INDEX events_model ON events(model_id);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events(id),
    channel TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    payload TEXT NOT NULL,  -- JSON object
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT,
    UNIQUE (event_id, channel)
);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL  -- JSON object
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
"""


def _v1_initial(db: Database) -> None:
    db.executescript(_V1)


def _v2_notification_log(db: Database) -> None:
    """What each channel accepted, Alertmanager's notification log: one row per outbox row and
    action, written in the transaction that marks the row delivered; the deliverer checks it
    before sending. The outbox keeps UNIQUE(event_id, channel): a resolve notification reuses
    its row (the action travels in the payload), so a channel gets one row per event."""
    db.executescript("""
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        outbox_id INTEGER NOT NULL REFERENCES outbox(id),
        event_id INTEGER NOT NULL REFERENCES events(id),
        channel TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('trigger', 'resolve')),
        sent_at TEXT NOT NULL,
        detail TEXT NOT NULL,  -- JSON object: what the channel answered (message ts, dedup_key)
        UNIQUE (outbox_id, action)
    );
    CREATE INDEX notifications_key ON notifications(channel, dedup_key);
    """)


MIGRATIONS: tuple[Migration, ...] = (_v1_initial, _v2_notification_log)
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(db: Database) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: Database, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database at `path` up to ``len(migrations)``; return that version.

    sqlite3 errors propagate: the caller translates them. Each step re-reads the version inside
    its write transaction, so two processes opening a fresh file at once apply each step once.
    """
    known = len(migrations)
    _check_version(db, path, known)
    for target in range(user_version(db) + 1, known + 1):
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            current = _check_version(db, path, known)
            if current < target:
                migrations[target - 1](db)
                db.execute(f"PRAGMA user_version = {target:d}")
            db.conn.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
    return known


def _check_version(db: Database, path: Path, known: int) -> int:
    current = user_version(db)
    if current > known:
        raise RegistryError(f"registry {path}: schema version {current} is newer than this "
                            f"version of provenance-monitor knows ({known}); upgrade it")
    if current == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise RegistryError(f"registry {path}: a SQLite database with tables but no registry "
                            "schema version; not a provenance-monitor registry")
    return current
