"""The registry: the daemon's only state, in one SQLite file.

Registered models (files, tensor digests, fingerprints), crawl cursors and candidates seen;
detections (`EventStore`), conditions (`ConditionStore`), the alert outbox they share
(`OutboxStore`) and the audit log. Every multi-row change is
one transaction; every timestamp comes from the injected clock.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from monitor.errors import InputError, NotFoundError
from monitor.records import FingerprintBlob, ModelRecord, TensorDigest, Verdict, WeightFile
from monitor.registry.core import (Clock, chunked, connect, iso, operation, placeholders,
                                   translate)
from monitor.registry.conditions import ConditionStore
from monitor.registry.events import EventStore
from monitor.registry.schema import migrate

_MODEL_SELECT = """
SELECT m.id, m.name, m.owner, m.source, m.registered_at,
       (SELECT count(*) FROM model_files f WHERE f.model_id = m.id) AS n_files,
       (SELECT count(*) FROM tensors t WHERE t.model_id = m.id) AS n_tensors,
       (SELECT coalesce(sum(f.size), 0) FROM model_files f WHERE f.model_id = m.id) AS total_bytes
FROM models m
"""

_FILE_COLUMNS = "path, size, sha256, format"


def _file(row: dict[str, Any]) -> WeightFile:
    return WeightFile(path=row["path"], size=row["size"], sha256=row["sha256"],
                      format=row["format"])


class Registry(EventStore, ConditionStore):
    """Open with `Registry.open(path)`; use as a context manager or call `close()`."""

    @classmethod
    def open(cls, path: Path | str, *, clock: Clock | None = None,
             busy_timeout_s: float = 5.0) -> Registry:
        """Open (creating it and its directory if needed) and migrate the registry at `path`."""
        path = Path(path).expanduser()
        db: Database | None = None
        try:
            db = connect(path, busy_timeout_s)
            migrate(db, path)
        except BaseException as exc:
            if db is not None:
                db.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, path, busy_timeout_s) from exc
            raise
        return cls(db, path, clock=clock, busy_timeout_s=busy_timeout_s)

    def __enter__(self) -> Registry:
        return self

    # -- models --------------------------------------------------------------------------------

    @operation
    def add_model(self, *, name: str, owner: str | None, source: str,
                  files: Sequence[WeightFile], tensors: Sequence[TensorDigest],
                  fingerprints: Sequence[FingerprintBlob], actor: str) -> ModelRecord:
        """Register a model with everything known about it, in one transaction."""
        _check_new_model(name, files, fingerprints)
        now = self._now()
        with self._tx() as db:
            taken = db.execute("SELECT id FROM models WHERE name = ?", [name]).fetchone()
            if taken is not None:
                raise InputError(f"model '{name}' is already registered (id {taken[0]})")
            model_id = db["models"].insert({"name": name, "owner": owner, "source": source,
                                            "registered_at": now}).last_pk
            file_ids = {f.path: db["model_files"].insert(
                {"model_id": model_id, "path": f.path, "size": f.size, "sha256": f.sha256,
                 "format": f.format}).last_pk for f in files}
            # A tensor naming an unknown file fails here, after the rows above: the
            # transaction takes them back.
            db["tensors"].insert_all(_tensor_row(model_id, file_ids, t, name) for t in tensors)
            db["fingerprints"].insert_all(
                {"model_id": model_id, "algorithm": fp.algorithm, "version": fp.version,
                 "created_at": now, "data": bytes(fp.data)} for fp in fingerprints)
            record = self.get_model(model_id)
            self._append_audit(db, actor=actor, action="model.add", subject=f"model:{name}",
                               detail={"id": model_id, "source": source, "files": len(files),
                                       "tensors": len(tensors), "bytes": record.total_bytes})
        return record

    @operation
    def list_models(self) -> list[ModelRecord]:
        return [ModelRecord(**row) for row in self._db.query(_MODEL_SELECT + " ORDER BY m.name")]

    @operation
    def get_model(self, ref: str | int) -> ModelRecord:
        """By id if `ref` is an int or all digits, else by name."""
        by_id = isinstance(ref, int) or ref.isdigit()
        row = next(self._db.query(_MODEL_SELECT + (" WHERE m.id = ?" if by_id else
                                                   " WHERE m.name = ?"),
                                  [int(ref) if by_id else ref]), None)
        if row is None:
            raise NotFoundError(f"no registered model '{ref}'")
        return ModelRecord(**row)

    @operation
    def model_files(self, model_id: int) -> list[WeightFile]:
        return [_file(row) for row in self._db.query(
            f"SELECT {_FILE_COLUMNS} FROM model_files WHERE model_id = ? ORDER BY id", [model_id])]

    @operation
    def model_tensors(self, model_id: int) -> list[TensorDigest]:
        """In the order they were registered."""
        rows = self._db.query(
            "SELECT t.name, t.dtype, t.shape, f.path AS file, t.byte_begin, t.byte_end, t.digest,"
            " t.constant FROM tensors t JOIN model_files f ON f.id = t.file_id"
            " WHERE t.model_id = ? ORDER BY t.id", [model_id])
        return [TensorDigest(name=r["name"], dtype=r["dtype"], shape=tuple(json.loads(r["shape"])),
                             file=r["file"], begin=r["byte_begin"], end=r["byte_end"],
                             digest=r["digest"], constant=bool(r["constant"])) for r in rows]

    @operation
    def model_fingerprints(self, model_id: int) -> list[FingerprintBlob]:
        return [FingerprintBlob(algorithm=r["algorithm"], version=r["version"], data=r["data"])
                for r in self._db.query("SELECT algorithm, version, data FROM fingerprints "
                                        "WHERE model_id = ? ORDER BY id", [model_id])]

    @operation
    def remove_model(self, ref: str | int, *, actor: str) -> ModelRecord:
        """Delete a model with its files, tensors and fingerprints; its events stay."""
        with self._tx() as db:
            record = self.get_model(ref)
            db.execute("DELETE FROM models WHERE id = ?", [record.id])
            self._append_audit(db, actor=actor, action="model.remove",
                               subject=f"model:{record.name}",
                               detail={"id": record.id, "files": record.n_files,
                                       "tensors": record.n_tensors})
        return record

    # -- lookups for matching --------------------------------------------------------------------

    @operation
    def models_with_file_sha256(self, sha256s: Iterable[str]) -> dict[int, list[WeightFile]]:
        """Model id -> its files whose sha256 is among `sha256s`."""
        found: dict[int, list[WeightFile]] = defaultdict(list)
        for chunk in chunked(sha256s):
            for row in self._db.query(
                    f"SELECT model_id, {_FILE_COLUMNS} FROM model_files "
                    f"WHERE sha256 IN ({placeholders(chunk)}) ORDER BY model_id, id", chunk):
                found[row["model_id"]].append(_file(row))
        return dict(found)

    @operation
    def models_with_tensor_digests(self, digests: Iterable[str]) -> dict[int, set[str]]:
        """Model id -> which of `digests` its tensors have; constant tensors prove nothing."""
        found: dict[int, set[str]] = defaultdict(set)
        for chunk in chunked(digests):
            for model_id, digest in self._db.execute(
                    f"SELECT DISTINCT model_id, digest FROM tensors "
                    f"WHERE digest IN ({placeholders(chunk)}) AND constant = 0", chunk):
                found[model_id].add(digest)
        return dict(found)

    # -- crawl state -----------------------------------------------------------------------------

    @operation
    def get_cursor(self, source: str, scope: str) -> str | None:
        row = self._db.execute("SELECT cursor FROM crawl_state WHERE source = ? AND scope = ?",
                               [source, scope]).fetchone()
        return None if row is None else row[0]

    @operation
    def snapshot(self, dest: Path) -> None:
        """A consistent copy of the whole registry at `dest` (SQLite's online backup: writers
        may go on meanwhile), written beside it and renamed into place, so a reader never sees
        half a file."""
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".partial")
        tmp.unlink(missing_ok=True)
        target = sqlite3.connect(tmp)
        try:
            self._db.conn.backup(target)
        finally:
            target.close()
        tmp.replace(dest)

    @operation
    def cursors(self) -> list[tuple[str, str, str]]:
        """Every (source, scope, cursor) kept."""
        return [tuple(r) for r in self._db.execute("SELECT source, scope, cursor FROM crawl_state "
                                                   "ORDER BY source, scope").fetchall()]

    @operation
    def set_cursor(self, source: str, scope: str, cursor: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO crawl_state (source, scope, cursor, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (source, scope) DO UPDATE SET "
                       "cursor = excluded.cursor, updated_at = excluded.updated_at",
                       [source, scope, cursor, self._now()])

    @operation
    def candidate_seen(self, source: str, location: str, revision: str) -> bool:
        """Whether this exact revision was recorded before, whatever became of it."""
        return self._db.execute(
            "SELECT 1 FROM candidates WHERE source = ? AND location = ? AND revision = ?",
            [source, location, revision]).fetchone() is not None

    @operation
    def candidate_status(self, source: str, location: str, revision: str) -> str | None:
        """The recorded status of this revision (None: never seen)."""
        row = self._db.execute(
            "SELECT status FROM candidates WHERE source = ? AND location = ? AND revision = ?",
            [source, location, revision]).fetchone()
        return None if row is None else row[0]

    @operation
    def failed_candidates(self, source: str) -> list[tuple[str, str]]:
        """(location, revision) of this source's candidates whose last attempt failed."""
        return [tuple(r) for r in self._db.execute(
            "SELECT location, revision FROM candidates WHERE source = ? AND status = 'failed' "
            "ORDER BY last_seen", [source]).fetchall()]

    @operation
    def candidates(self, *, source: str | None = None, status: str | None = None,
                   limit: int | None = None) -> list[dict[str, Any]]:
        """Recorded candidates, newest first (for `monitor candidates` and tests)."""
        conds = [(c, v) for c, v in (("source = ?", source), ("status = ?", status)) if v]
        where = ("WHERE " + " AND ".join(c for c, _ in conds)) if conds else ""
        args = [v for _, v in conds]
        sql = (f"SELECT id, source, location, revision, first_seen, last_seen, status, reason, "
               f"bytes_read, verdict FROM candidates {where} ORDER BY last_seen DESC, id DESC")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [dict(r) for r in self._db.query(sql, args)]

    @operation
    def forget_candidates(self, *, older_than: timedelta) -> int:
        """Delete candidate rows that led nowhere (no match, skipped, superseded, gone) and were
        last seen before `older_than` ago, then VACUUM; events and matched rows are kept."""
        cutoff = iso(self._clock() - older_than)
        with self._tx() as db:
            n = db.execute("DELETE FROM candidates WHERE last_seen < ? AND status IN "
                           "('no_match', 'skipped', 'superseded', 'gone')", [cutoff]).rowcount
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA optimize")
        return n

    @operation
    def record_candidate(self, source: str, location: str, revision: str, *, status: str,
                         bytes_read: int = 0, reason: str | None = None,
                         verdict: str | None = None) -> int:
        """Insert or update one candidate revision; return its id.

        status, reason and verdict are replaced; bytes_read adds up over calls, so it is what
        this revision cost in total.
        """
        if verdict is not None:
            try:
                verdict = Verdict(verdict).value
            except ValueError:
                raise InputError(f"candidate verdict {verdict!r}: must be one of "
                                 f"{', '.join(v.value for v in Verdict)}") from None
        now = self._now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO candidates (source, location, revision, first_seen, last_seen, "
                "status, reason, bytes_read, verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (source, location, revision) DO UPDATE SET "
                "last_seen = excluded.last_seen, status = excluded.status, "
                "reason = excluded.reason, verdict = excluded.verdict, "
                "bytes_read = bytes_read + excluded.bytes_read",
                [source, location, revision, now, now, status, reason, bytes_read, verdict])
            return db.execute("SELECT id FROM candidates WHERE source = ? AND location = ? "
                              "AND revision = ?", [source, location, revision]).fetchone()[0]


def _check_new_model(name: str, files: Sequence[WeightFile],
                     fingerprints: Sequence[FingerprintBlob]) -> None:
    if not name.strip():
        raise InputError("model name is empty")
    if name.isdigit():
        raise InputError(f"model name '{name}' is all digits, which would read as a model id")
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise InputError(f"model '{name}': a weight file is listed twice")
    keys = [(fp.algorithm, fp.version) for fp in fingerprints]
    if len(set(keys)) != len(keys):
        raise InputError(f"model '{name}': a fingerprint algorithm and version is given twice")


def _tensor_row(model_id: int, file_ids: dict[str, int], tensor: TensorDigest,
                model_name: str) -> dict[str, Any]:
    if tensor.file not in file_ids:
        raise InputError(f"model '{model_name}': tensor '{tensor.name}' is in file "
                         f"'{tensor.file}', which is not among its weight files")
    return {"model_id": model_id, "file_id": file_ids[tensor.file], "name": tensor.name,
            "dtype": tensor.dtype, "shape": json.dumps(list(tensor.shape)),
            "byte_begin": tensor.begin, "byte_end": tensor.end, "digest": tensor.digest,
            "constant": int(tensor.constant)}
