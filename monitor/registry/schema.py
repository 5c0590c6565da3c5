"""The registry's tables and their forward-only migrations.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes a database from
version ``i`` to ``i + 1``; each runs in its own transaction together with the version bump, so a
failed migration leaves the file at the previous version. Migrations only add (tables, columns,
indexes, backfills): they never drop data. To change the schema, append one function.

SQLite cannot alter a column's constraints, so a migration marked `rebuilds` may rebuild a table
the way SQLite documents (https://sqlite.org/lang_altertable.html#otheralter): create the new
table, copy every row, drop the old one, rename the new one. `migrate` turns foreign keys off
around such a step and runs ``PRAGMA foreign_key_check`` before it commits; a test migrates a
populated registry and compares every row.
"""

from __future__ import annotations

import sqlite3
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


def script(db: Database, sql: str) -> None:
    """Run several statements inside the caller's transaction, one by one.

    Not ``executescript``: Python's sqlite3 commits any pending transaction before running a
    script, which would make a migration half-applied when a later statement fails.
    """
    statement = ""
    for piece in sql.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip(" \n;"):
        raise ValueError(f"incomplete SQL statement: {statement.strip()[:80]}")


def _v1_initial(db: Database) -> None:
    script(db, _V1)


def _v2_notification_log(db: Database) -> None:
    """What each channel accepted, Alertmanager's notification log: one row per outbox row and
    action, written in the transaction that marks the row delivered; the deliverer checks it
    before sending. The outbox keeps UNIQUE(event_id, channel): a resolve notification reuses
    its row (the action travels in the payload), so a channel gets one row per event."""
    script(db, """
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


def rebuilds(step: Migration) -> Migration:
    """Mark a migration that rebuilds tables (drop and rename): run with foreign keys off."""
    step.rebuilds_tables = True  # type: ignore[attr-defined]
    return step


@rebuilds
def _v3_alerts_beyond_detections(db: Database) -> None:
    """Conditions, repeats and inhibition (Alertmanager's habits) need three schema changes.

    - ``conditions``: alerts about the monitor's own sources, not findings — a source that
      cannot be listed, one scope that keeps failing (endpoint probes will add theirs). State
      goes pending → firing (after `fire_after` failed runs in a row) → resolved; `parent` is the
      fingerprint of the condition that inhibits this one while it fires.
    - ``outbox`` rows belong to an event or to a condition, and carry their own action
      (trigger, acknowledge, repeat, resolve) and number: one row per notification, where v1 reused a
      row for its resolve. ``suppressed``: a row deliberately not sent (its subject closed first).
    - ``notifications`` follow, and log acknowledgements and repeats too.
    Rows are copied as they are; a v1/v2 row keeps its id, and its action comes from its payload.
    """
    script(db, """
    CREATE TABLE conditions (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        parent TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
        failures INTEGER NOT NULL,
        detail TEXT NOT NULL,
        started_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        fired_at TEXT,
        resolved_at TEXT
    );
    CREATE UNIQUE INDEX conditions_open ON conditions(fingerprint) WHERE state != 'resolved';
    CREATE INDEX conditions_parent ON conditions(parent) WHERE state = 'firing';

    CREATE TABLE outbox_v3 (
        id INTEGER PRIMARY KEY,
        event_id INTEGER REFERENCES events(id),
        condition_id INTEGER REFERENCES conditions(id),
        channel TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        action TEXT NOT NULL
            CHECK (action IN ('trigger', 'acknowledge', 'repeat', 'resolve')),
        seq INTEGER NOT NULL DEFAULT 0,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'failed', 'suppressed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        created_at TEXT NOT NULL,
        delivered_at TEXT,
        CHECK ((event_id IS NULL) + (condition_id IS NULL) = 1)
    );
    INSERT INTO outbox_v3 (id, event_id, condition_id, channel, dedup_key, action, seq, payload,
                           status, attempts, next_attempt_at, last_error, created_at, delivered_at)
        SELECT id, event_id, NULL, channel, dedup_key,
               coalesce(json_extract(payload, '$.action'), 'trigger'), 0, payload, status,
               attempts, next_attempt_at, last_error, created_at, delivered_at FROM outbox;

    CREATE TABLE notifications_v3 (
        id INTEGER PRIMARY KEY,
        outbox_id INTEGER NOT NULL REFERENCES outbox(id),
        event_id INTEGER REFERENCES events(id),
        condition_id INTEGER REFERENCES conditions(id),
        channel TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        action TEXT NOT NULL
            CHECK (action IN ('trigger', 'acknowledge', 'repeat', 'resolve')),
        sent_at TEXT NOT NULL,
        detail TEXT NOT NULL,
        UNIQUE (outbox_id, action)
    );
    INSERT INTO notifications_v3 (id, outbox_id, event_id, condition_id, channel, dedup_key,
                                  action, sent_at, detail)
        SELECT id, outbox_id, event_id, NULL, channel, dedup_key, action, sent_at, detail
        FROM notifications;

    DROP TABLE notifications;
    DROP TABLE outbox;
    ALTER TABLE outbox_v3 RENAME TO outbox;
    ALTER TABLE notifications_v3 RENAME TO notifications;

    CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
    CREATE UNIQUE INDEX outbox_event_once ON outbox(event_id, channel, action, seq)
        WHERE event_id IS NOT NULL;
    CREATE UNIQUE INDEX outbox_condition_once ON outbox(condition_id, channel, action, seq)
        WHERE condition_id IS NOT NULL;
    CREATE INDEX notifications_key ON notifications(channel, dedup_key);
    CREATE INDEX notifications_event ON notifications(event_id, channel);
    CREATE INDEX notifications_condition ON notifications(condition_id, channel);
    """)


MIGRATIONS: tuple[Migration, ...] = (_v1_initial, _v2_notification_log,
                                     _v3_alerts_beyond_detections)
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
        step = migrations[target - 1]
        rebuild = getattr(step, "rebuilds_tables", False)
        foreign_keys = db.execute("PRAGMA foreign_keys").fetchone()[0]
        if rebuild:  # a no-op inside a transaction, so before BEGIN
            db.execute("PRAGMA foreign_keys = OFF")
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            current = _check_version(db, path, known)
            if current < target:
                step(db)
                if rebuild and db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise RegistryError(f"registry {path}: migration to schema version {target} "
                                        "would break a foreign key; nothing was changed")
                db.execute(f"PRAGMA user_version = {target:d}")
            db.conn.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
        finally:
            if rebuild:
                db.execute(f"PRAGMA foreign_keys = {int(foreign_keys)}")
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
