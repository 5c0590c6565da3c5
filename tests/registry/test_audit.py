"""The audit log: appended by the registry's own changes and by callers, never rewritten."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest


def test_audit_entries_come_back_newest_first_with_json_detail(registry, clock):
    registry.audit(actor="alice", action="config.reload", subject="config:monitor.toml")
    clock.advance(seconds=1)
    registry.audit(actor="bob", action="crawl.start", subject="source:hf_hub",
                   detail={"threshold": np.float32(0.5), "scopes": ("models",)})

    newest, oldest = registry.audit_log()
    assert (newest.actor, newest.action, newest.detail) == ("bob", "crawl.start",
                                                            {"threshold": 0.5,
                                                             "scopes": ["models"]})
    assert newest.at == "2024-05-01T12:00:01.000000+00:00"
    assert (oldest.subject, oldest.detail) == ("config:monitor.toml", {})
    assert registry.audit_log(limit=1) == [newest]


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET actor = 'mallory'",
    "DELETE FROM audit_log",
])
def test_audit_rows_cannot_be_changed_or_deleted(registry, statement):
    registry.audit(actor="alice", action="x", subject="y")
    conn = sqlite3.connect(registry.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="audit_log is append-only"):
            conn.execute(statement)
    finally:
        conn.close()
    assert [e.actor for e in registry.audit_log()] == ["alice"]
