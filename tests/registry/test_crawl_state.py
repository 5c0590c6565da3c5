"""Crawl cursors and candidates seen, so a crawl resumes and never fetches a revision twice."""

from __future__ import annotations

import sqlite3

import pytest

from monitor.errors import InputError


def test_cursor_is_absent_then_set_then_replaced(registry):
    assert registry.get_cursor("hf_hub", "models") is None
    registry.set_cursor("hf_hub", "models", "page-1")
    registry.set_cursor("hf_hub", "models", "page-2")
    registry.set_cursor("hf_hub", "datasets", "x")
    assert registry.get_cursor("hf_hub", "models") == "page-2"
    assert registry.get_cursor("github_releases", "models") is None


def test_a_revision_is_seen_once_recorded_and_upserts_keep_its_id(registry, clock, counts):
    assert not registry.candidate_seen("hf_hub", "thief/copy", "rev1")
    first = registry.record_candidate("hf_hub", "thief/copy", "rev1", status="header",
                                      bytes_read=4096)
    clock.advance(seconds=3)
    again = registry.record_candidate("hf_hub", "thief/copy", "rev1", status="matched",
                                      bytes_read=1 << 20, verdict="exact", reason="sha256")

    assert again == first
    assert registry.candidate_seen("hf_hub", "thief/copy", "rev1")
    assert not registry.candidate_seen("hf_hub", "thief/copy", "rev2")
    assert not registry.candidate_seen("github_releases", "thief/copy", "rev1")
    assert registry.record_candidate("hf_hub", "thief/copy", "rev2", status="seen") != first
    assert counts()["candidates"] == 2
    conn = sqlite3.connect(registry.path)
    row = conn.execute("SELECT status, bytes_read, verdict, reason, first_seen, last_seen "
                       "FROM candidates WHERE id = ?", [first]).fetchone()
    conn.close()
    assert row == ("matched", 4096 + (1 << 20), "exact", "sha256",
                   "2024-05-01T12:00:00.000000+00:00", "2024-05-01T12:00:03.000000+00:00")


def test_an_unknown_candidate_verdict_is_refused(registry):
    with pytest.raises(InputError, match="candidate verdict 'stolen'"):
        registry.record_candidate("hf_hub", "a/b", "r", status="done", verdict="stolen")
    assert not registry.candidate_seen("hf_hub", "a/b", "r")
