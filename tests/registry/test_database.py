"""The file itself: pragmas, schema versions and migrations, and files we must refuse."""

from __future__ import annotations

import inspect
import os
import sqlite3
import threading
import time

import pytest
from sqlite_utils import Database

from monitor.errors import RegistryError
from monitor.registry import SCHEMA_VERSION, Registry
from monitor.registry import schema
from monitor.registry.schema import MIGRATIONS, migrate


def _pragma(path, name):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def test_open_creates_the_directory_a_wal_file_and_the_current_schema(db_path):
    assert not db_path.parent.exists()
    with Registry.open(db_path) as reg:
        assert reg.schema_version == SCHEMA_VERSION
        assert reg.path == db_path
    assert _pragma(db_path, "journal_mode") == "wal"
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION


def test_foreign_keys_are_enforced(registry, make_model, counts):
    # SQLite leaves foreign keys off per connection unless asked; cascades prove they are on.
    make_model("m")
    registry.remove_model("m", actor="a")
    assert counts()["tensors"] == counts()["model_files"] == counts()["fingerprints"] == 0


def test_reopening_is_idempotent_and_keeps_data(db_path, clock, make_model, registry):
    record = make_model("m")
    registry.close()
    schema = _schema(db_path)
    for path in (db_path, str(db_path)):
        with Registry.open(path, clock=clock) as reg:
            assert reg.schema_version == SCHEMA_VERSION
            assert reg.get_model("m") == record
    assert _schema(db_path) == schema


def _add_licence(db: Database) -> None:
    db.execute("ALTER TABLE models ADD COLUMN licence TEXT")
    db.execute("UPDATE models SET licence = 'proprietary'")


def test_a_later_migration_is_one_appended_function_and_keeps_data(db_path, make_model,
                                                                   registry):
    record = make_model("m")
    registry.close()
    db = Database(sqlite3.connect(db_path, isolation_level=None))

    assert migrate(db, db_path, [*MIGRATIONS, _add_licence]) == SCHEMA_VERSION + 1

    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert db.execute("SELECT name, licence FROM models").fetchall() == [("m", "proprietary")]
    assert db.execute("SELECT count(*) FROM tensors").fetchone()[0] == record.n_tensors
    db.close()


def test_every_step_runs_from_an_empty_file(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    db = Database(sqlite3.connect(path, isolation_level=None))
    assert migrate(db, path, [*MIGRATIONS, _add_licence]) == SCHEMA_VERSION + 1
    assert "licence" in db["models"].columns_dict
    db.close()


def test_a_failing_migration_leaves_the_previous_version(db_path, make_model, registry):
    make_model("m")
    registry.close()

    def half_done(db: Database) -> None:
        db.execute("ALTER TABLE models ADD COLUMN licence TEXT")
        raise RuntimeError("boom")

    db = Database(sqlite3.connect(db_path, isolation_level=None))
    with pytest.raises(RuntimeError, match="boom"):
        migrate(db, db_path, [*MIGRATIONS, half_done])
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "licence" not in db["models"].columns_dict
    db.close()


def test_only_a_marked_rebuild_may_drop_and_nothing_deletes_rows():
    for step in MIGRATIONS:
        text = (inspect.getsource(step) + (schema._V1 if step is MIGRATIONS[0] else "")).upper()
        assert "DELETE FROM" not in text, step.__name__
        if not getattr(step, "rebuilds_tables", False):
            assert "DROP " not in text, step.__name__


def _populate_v2(path):
    """A v2 registry with a row in every table, an event resolved the v2 way (its trigger row
    reused for the resolve) and one still pending."""
    db = Database(sqlite3.connect(path, isolation_level=None))
    db.execute("PRAGMA foreign_keys = ON")
    migrate(db, path, MIGRATIONS[:2])
    t = "2026-01-01T00:00:00.000000+00:00"
    db.execute("INSERT INTO models VALUES (1, 'm', NULL, '/m', ?)", [t])
    for i, status in ((1, "resolved"), (2, "new")):
        db.execute("INSERT INTO events (id, model_id, model_name, location, verdict, score, "
                   "confidence, evidence, status, created_at, dedup_key, last_seen_at) VALUES "
                   "(?, 1, 'm', ?, 'exact', 1.0, 'high', '{}', ?, ?, ?, ?)",
                   [i, f"hf://x/{i}", status, t, f"k{i}", t])
    db.execute("INSERT INTO outbox VALUES (10, 1, 'slack', 'k1', ?, 'delivered', 2, ?, NULL, ?, ?)",
               ['{"action": "resolve", "model_name": "m"}', t, t, t])
    db.execute("INSERT INTO outbox VALUES (11, 2, 'pagerduty', 'k2', ?, 'pending', 1, ?, 'HTTP 500', ?, NULL)",
               ['{"model_name": "m"}', t, t])
    for n, action in ((20, "trigger"), (21, "resolve")):
        db.execute("INSERT INTO notifications VALUES (?, 10, 1, 'slack', 'k1', ?, ?, '{}')",
                   [n, action, t])
    db.close()


def test_migrating_a_populated_registry_keeps_every_row(tmp_path):
    path = tmp_path / "v2.db"
    _populate_v2(path)
    before = sqlite3.connect(path)
    tables = [r[0] for r in before.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    rows = {t: before.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
    columns = {t: [c[1] for c in before.execute(f"PRAGMA table_info({t})")] for t in tables}
    before.close()

    with Registry.open(path) as reg:
        assert reg.schema_version == SCHEMA_VERSION
        outbox = {r.id: r for r in reg.list_outbox()}
    after = sqlite3.connect(path)
    for t in tables:  # every old column of every old row, unchanged
        got = after.execute(f"SELECT {', '.join(columns[t])} FROM {t} ORDER BY 1").fetchall()
        assert got == rows[t], t
    assert after.execute("PRAGMA foreign_key_check").fetchall() == []
    assert after.execute("PRAGMA foreign_keys").fetchone()[0] == 0  # a fresh connection's default
    after.close()
    assert (outbox[10].action, outbox[11].action) == ("resolve", "trigger")  # from the payload
    assert outbox[11].status.value == "pending" and outbox[11].last_error == "HTTP 500"


def test_a_failing_statement_late_in_a_script_leaves_the_previous_version(tmp_path):
    # Python's executescript commits before it runs: a half-applied script would survive.
    path = tmp_path / "r.db"
    db = Database(sqlite3.connect(path, isolation_level=None))

    def broken(d: Database) -> None:
        schema.script(d, "CREATE TABLE first (x); CREATE TABLE second (y); SELECT * FROM nowhere;")

    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(db, path, [*MIGRATIONS, broken])
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "first" not in db.table_names()
    db.close()


def test_a_rebuild_that_breaks_a_foreign_key_is_refused_and_rolled_back(tmp_path):
    path = tmp_path / "r.db"
    _populate_v2(path)
    db = Database(sqlite3.connect(path, isolation_level=None))
    db.execute("PRAGMA foreign_keys = ON")

    @schema.rebuilds
    def orphaning(d: Database) -> None:  # drops a parent without a replacement
        schema.script(d, "CREATE TABLE models_copy AS SELECT * FROM models; DROP TABLE models;")

    with pytest.raises(RegistryError, match="foreign key"):
        migrate(db, path, [*MIGRATIONS[:2], orphaning])
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "models" in db.table_names() and "models_copy" not in db.table_names()
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    db.close()


def test_a_newer_schema_is_refused_naming_both_versions(db_path, registry):
    registry.close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(RegistryError) as caught:
        Registry.open(db_path)
    message = str(caught.value)
    assert str(db_path) in message
    assert f"schema version {SCHEMA_VERSION + 5}" in message and f"({SCHEMA_VERSION})" in message


def test_garbage_is_not_a_sqlite_database_and_is_left_alone(tmp_path):
    path = tmp_path / "random.db"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(RegistryError, match=rf"^registry {path}: not a SQLite database \("):
        Registry.open(path)
    assert path.read_bytes() == garbage


def test_someone_elses_database_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE models (x)")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match="not a provenance-monitor registry"):
        Registry.open(path)
    assert _pragma(path, "user_version") == 0


def test_a_directory_that_cannot_be_made_is_a_registry_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match="cannot create its directory"):
        Registry.open(tmp_path / "file" / "registry.db")


def test_a_write_lock_held_past_the_busy_timeout_is_reported(db_path, registry):
    registry.close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with Registry.open(db_path, busy_timeout_s=0.2) as reg:
            assert reg.get_cursor("hf_hub", "models") is None  # WAL: reads go on
            started = time.monotonic()
            with pytest.raises(RegistryError, match=rf"^registry {db_path}: database is locked by"):
                reg.set_cursor("hf_hub", "models", "page-2")
            assert 0.15 < time.monotonic() - started < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Registry.open(db_path) as reg:  # and nothing was half-written
        assert reg.get_cursor("hf_hub", "models") is None


def test_a_closed_registry_says_so(registry):
    registry.close()
    with pytest.raises(RegistryError, match="closed"):
        registry.list_models()


def test_one_registry_can_be_shared_by_threads(registry):
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(20):
                registry.set_cursor("src", f"scope-{n}", str(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [registry.get_cursor("src", f"scope-{n}") for n in range(4)] == ["19"] * 4


def _schema(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def test_a_lock_held_while_a_new_registry_is_opened_is_reported(tmp_path):
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RegistryError, match=rf"^registry {path}: database is locked by"):
            Registry.open(path, busy_timeout_s=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Registry.open(path) as reg:
        assert reg.schema_version == SCHEMA_VERSION
