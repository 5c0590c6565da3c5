"""The CLI through its installed entry point, as a user runs it."""

from __future__ import annotations

import json
import pickle
import sqlite3

import pytest

from monitor import derive
from tests.conftest import run_monitor, tiny_state_dict


def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def _models(db) -> int:
    return len(json.loads(run_monitor("--json", "models", "list", db=db).stdout))


def test_version():
    proc = run_monitor("--version")
    assert proc.returncode == 0 and "provenance-monitor 0.1.0" in proc.stdout


def test_register_scan_and_events_workflow(db, owned_model, owned_sd, tmp_path):
    reg = run_monitor("--json", "register", owned_model, "--name", "tiny", "--owner", "a@b.c", db=db)
    assert reg.returncode == 0, reg.stderr
    assert json.loads(reg.stdout)["n_tensors"] == len(owned_sd)

    shard = derive.save_sharded(derive.rename(owned_sd, "m."), tmp_path / "sh", 2)
    scan = run_monitor("--json", "scan", shard, db=db)
    assert scan.returncode == 1, scan.stderr
    (match,) = json.loads(scan.stdout)["matches"]
    assert match["model"] == "tiny" and match["verdict"] == "repackaged"
    assert match["p_value"] < 1e-9 and match["evidence"]["families"] == ["tensors", "units"]

    clean = derive.save_safetensors(tiny_state_dict(42), tmp_path / "other" / "m.safetensors")
    proc = run_monitor("scan", clean, db=db)
    assert proc.returncode == 0 and "no match" in proc.stdout

    events = json.loads(run_monitor("--json", "events", "list", db=db).stdout)
    assert [e["verdict"] for e in events] == ["repackaged"] and events[0]["status"] == "new"
    eid = str(events[0]["id"])
    assert run_monitor("events", "set-status", eid, "confirmed", "--note", "legal", db=db).returncode == 0
    shown = json.loads(run_monitor("--json", "events", "show", eid, db=db).stdout)
    assert shown["status"] == "confirmed" and shown["status_by"]
    bad = run_monitor("events", "set-status", eid, "done", db=db)
    assert bad.returncode == 2

    table = run_monitor("models", "list", db=db)
    assert "tiny" in table.stdout
    assert run_monitor("models", "remove", "tiny", "--yes", db=db).returncode == 0
    assert _models(db) == 0
    kept = json.loads(run_monitor("--json", "events", "list", db=db).stdout)
    assert kept[0]["model_name"] == "tiny" and kept[0]["model_id"] is None


def test_scan_table_output(db, owned_model):
    run_monitor("register", owned_model, "--name", "tiny", db=db)
    proc = run_monitor("scan", owned_model / "model.safetensors", db=db)
    assert proc.returncode == 1 and "exact" in proc.stdout and "tiny" in proc.stdout


def test_duplicate_name_is_bad_input(db, owned_model):
    assert run_monitor("register", owned_model, "--name", "tiny", db=db).returncode == 0
    _one_line_error(run_monitor("register", owned_model, "--name", "tiny", db=db), "tiny")


@pytest.mark.parametrize("content,needle", [
    (b"\x00\x00", "shorter than"),
    ((10_000_000_000).to_bytes(8, "little") + b"{}", "header length"),
    ((7).to_bytes(8, "little") + b"not-js!", "JSON"),
    ((60).to_bytes(8, "little") + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}    ',
     "past the end"),
    ((60).to_bytes(8, "little") + b'{"w":{"dtype":"Q9","shape":[4],"data_offsets":[0,16]}}      '
     + bytes(16), "dtype"),
])
def test_corrupt_safetensors_is_one_line_exit_2_and_nothing_stored(db, tmp_path, owned_model, content, needle):
    assert run_monitor("register", owned_model, "--name", "keep", db=db).returncode == 0
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    _one_line_error(run_monitor("register", bad, "--name", "bad", db=db), "bad.safetensors")
    _one_line_error(run_monitor("scan", bad, db=db), "bad.safetensors")
    assert _models(db) == 1


def test_truncated_file(db, tmp_path, owned_model):
    data = (owned_model / "model.safetensors").read_bytes()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    _one_line_error(run_monitor("scan", bad, db=db), "trunc.safetensors")


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED",))


def test_pickle_with_code_is_refused_and_never_runs(db, tmp_path):
    import torch

    path = tmp_path / "evil.bin"
    torch.save({"w": torch.zeros(3), "x": _Evil()}, path)
    proc = run_monitor("scan", path, db=db)
    _one_line_error(proc, "evil.bin")
    assert not (tmp_path / "PWNED").exists()
    path.write_bytes(pickle.dumps(_Evil()))
    _one_line_error(run_monitor("scan", path, db=db), "evil.bin")


def test_folder_without_weights(db, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    _one_line_error(run_monitor("scan", tmp_path / "empty", db=db), "no weight files")


def test_missing_path(db, tmp_path):
    _one_line_error(run_monitor("scan", tmp_path / "nope", db=db), "nope")


def test_corrupt_registry(tmp_path):
    db = tmp_path / "garbage.db"
    db.write_bytes(b"this is not sqlite" * 100)
    _one_line_error(run_monitor("models", "list", db=db), "garbage.db")
    assert db.read_bytes() == b"this is not sqlite" * 100


def test_locked_registry(db, owned_model):
    assert run_monitor("models", "list", db=db).returncode == 0
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        proc = run_monitor("register", owned_model, "--name", "x", db=db,
                           env={"MONITOR_REGISTRY_BUSY_TIMEOUT_S": "0.3"})
        _one_line_error(proc, "locked")
    finally:
        holder.rollback()
        holder.close()
    assert _models(db) == 0


def test_bad_config_names_key(db, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[match]\nrepackaged_coverage = 7\n")
    _one_line_error(run_monitor("--config", cfg, "models", "list", db=db), "match.repackaged_coverage", "7")


def test_unknown_model_and_event(db):
    _one_line_error(run_monitor("models", "show", "ghost", db=db), "ghost")
    _one_line_error(run_monitor("events", "show", "999", db=db), "999")


def test_daemon_refuses_to_start_on_a_bad_crawler_table(db, tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('[crawlers.hf_hub.scopes.x]\nrecnt = true\n')
    _one_line_error(run_monitor("--config", cfg, "daemon", db=db), "crawlers.hf_hub.scopes.x.recnt")


def test_usage_error_exit_2():
    assert run_monitor("scan").returncode == 2
    assert run_monitor("frobnicate").returncode == 2


def test_plugins_lists_installed_crawlers(db):
    proc = run_monitor("--json", "plugins", db=db)
    assert proc.returncode == 0 and isinstance(json.loads(proc.stdout), list)


def test_scan_of_a_url_reads_only_the_header_and_planned_ranges(db, tmp_path):
    """A permuted copy served over HTTP: matched from about 1 % of its bytes, nothing else read."""
    from benchmarks.zoo import camouflage
    from benchmarks.zoo.llama import LMConfig, init_state_dict
    from tests.formats.http_server import FileServer

    sd = init_state_dict(LMConfig(), 3)
    owned = derive.save_safetensors(sd, tmp_path / "own" / "model.safetensors")
    assert run_monitor("register", owned, "--name", "lm", db=db).returncode == 0
    suspect = derive.save_safetensors(camouflage.permute_mlp(camouflage.rotate_residual(sd, 1), 2),
                                      tmp_path / "s" / "model.safetensors")
    server = FileServer().start()
    try:
        server.files["model.safetensors"] = suspect.read_bytes()
        url = f"{server.base}/files/model.safetensors"
        proc = run_monitor("--json", "scan", url, db=db)
        other = run_monitor("--json", "scan", f"{server.base}/files/missing.safetensors", db=db)
    finally:
        server.stop()
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    (match,) = report["matches"]
    assert match["verdict"] == "derivative" and match["p_value"] < 1e-9 and report["target"] == url
    assert report["bytes_read"] <= 0.012 * report["size"]
    _one_line_error(other, "missing.safetensors")
