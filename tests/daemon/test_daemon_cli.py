"""`monitor daemon`, `monitor health` and `run-once --shard` as an operator runs them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import httpx2
import pytest

from benchmarks.zoo.llama import LMConfig, init_state_dict
from monitor import derive
from monitor.locks import job_lock
from monitor.sandbox.hub import HubServer
from tests.conftest import MONITOR, run_monitor
from tests.crawlers.conftest import st_bytes
from tests.test_cli import _one_line_error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def hub():
    with HubServer(page_size=5) as server:
        yield server


@pytest.fixture()
def deployment(tmp_path, hub):
    """A registry owning one model, a Hub with a dozen repos, and a config pointing at both."""
    sd = init_state_dict(LMConfig(), 3)
    db = tmp_path / "r.db"
    owned = derive.save_safetensors(sd, tmp_path / "own" / "model.safetensors")
    assert run_monitor("register", owned, "--name", "lm", db=db).returncode == 0
    for i in range(12):
        hub.add_model(f"u{i}/m", {"model.safetensors": st_bytes(init_state_dict(LMConfig(), 100 + i))})
    port = _free_port()
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[daemon]\nlisten = "127.0.0.1:{port}"\n'
                   f'[crawlers.hf_hub]\nschedule = "0 0 1 1 *"\n[crawlers.hf_hub.options]\n'
                   f'endpoint = "{hub.url}"\n[crawlers.hf_hub.scopes.all]\nrecent = true\n')
    return db, cfg, port


def test_daemon_serves_health_and_metrics_and_stops_on_sigterm(deployment):
    db, cfg, port = deployment
    proc = subprocess.Popen([MONITOR, "--db", str(db), "--config", str(cfg), "daemon"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx2.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "no answer"
                time.sleep(0.2)
        assert health.status_code == 200
        assert set(health.json()["jobs"]) == {"crawl:hf_hub", "retention", "deliver"}
        checked = run_monitor("--config", cfg, "health", db=db)
        assert checked.returncode == 0 and "healthy" in checked.stdout
        metrics = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'monitor_alerts{status="pending"} 0.0' in metrics
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=35) == 0
        assert time.monotonic() - started < 35
    finally:
        if proc.poll() is None:
            proc.kill()
    down = run_monitor("--config", cfg, "health", db=db)
    assert down.returncode == 1 and down.stderr.startswith("unhealthy:") and "Traceback" not in down.stderr


def test_run_once_refuses_while_the_crawler_job_runs_elsewhere(deployment):
    db, cfg, _ = deployment
    with job_lock(db, "crawl:hf_hub"):
        proc = run_monitor("--config", cfg, "run-once", db=db)
    _one_line_error(proc, "crawl:hf_hub is already running")


def test_shards_of_one_sweep_cover_every_candidate_once(deployment, hub, tmp_path):
    db, cfg, _ = deployment
    seen = []
    for i in range(3):
        shard_db = tmp_path / f"shard{i}.db"  # each pod its own crawl state (a registry copy)
        shard_db.write_bytes(db.read_bytes())
        proc = run_monitor("--config", cfg, "--json", "run-once", "--shard", f"{i}/3", db=shard_db)
        assert proc.returncode == 0, proc.stderr
        seen.append(json.loads(proc.stdout)["totals"]["seen"])
        rows = json.loads(run_monitor("--json", "candidates", "--limit", "100", db=shard_db).stdout)
        assert len(rows) == seen[-1]
    assert sum(seen) == 12 and all(n < 12 for n in seen)
    env = {"JOB_COMPLETION_INDEX": "1"}
    auto = run_monitor("--config", cfg, "--json", "run-once", "--shard", "auto/3", db=db, env=env)
    assert json.loads(auto.stdout)["totals"]["seen"] == seen[1]


def test_shard_registries_fold_back_into_the_primary(deployment, hub, tmp_path):
    """Pods sweep copies; importing their files gives the primary every candidate, once."""
    db, cfg, _ = deployment
    sd = init_state_dict(LMConfig(), 3)
    from benchmarks.zoo import camouflage
    hub.add_model("thief/copy", {"model.safetensors": st_bytes(camouflage.permute_mlp(sd, 1))})
    shards = []
    for i in range(2):
        shard_db = tmp_path / f"pod{i}.db"
        assert run_monitor("snapshot", shard_db, db=db).returncode == 0  # what the pod starts from
        assert run_monitor("--config", cfg, "run-once", "--shard", f"{i}/2", db=shard_db).returncode == 0
        shards.append(shard_db)
    proc = run_monitor("--json", "import-shards", *shards, db=db)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["events_new"] for r in report] in ([1, 0], [0, 1])
    rows = json.loads(run_monitor("--json", "candidates", "--limit", "100", db=db).stdout)
    assert len(rows) == 13 and len({r["location"] for r in rows}) == 13
    events = json.loads(run_monitor("--json", "events", "list", db=db).stdout)
    assert [e["location"] for e in events] == ["hf://thief/copy"]
    again = run_monitor("--json", "import-shards", *shards, db=db)  # idempotent
    assert again.returncode == 0
    assert len(json.loads(run_monitor("--json", "candidates", "--limit", "100", db=db).stdout)) == 13
    assert len(json.loads(run_monitor("--json", "events", "list", db=db).stdout)) == 1
    # The next snapshot knows what the pods triaged: a sweep of it fetches nothing new.
    after = json.loads(run_monitor("--config", cfg, "--json", "run-once", db=db).stdout)
    assert after["totals"]["new"] == 0 and after["totals"]["bytes_read"] == 0


def test_sigterm_during_a_stuck_listing_still_exits_within_stop_timeout(deployment, hub):
    """A job blocked inside a request (a Hub that takes 60 s to answer) cannot poll the stop
    event; the daemon must still exit once stop_timeout_s has passed, saying so, rather than
    wait for the job (the interpreter joins worker threads at exit)."""
    db, cfg, port = deployment
    cfg.write_text(cfg.read_text()
                   .replace('schedule = "0 0 1 1 *"', 'schedule = "every 1h"\ntimeout_s = 120')
                   .replace("[daemon]\n", "[daemon]\nstop_timeout_s = 2\njitter_s = 0\n"))
    hub.delay_s = 60
    proc = subprocess.Popen([MONITOR, "--db", str(db), "--config", str(cfg), "daemon"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # its interval job (never run) starts at once, and its listing waits on the Hub
        assert hub.arrived.wait(30) and proc.poll() is None
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3 and "jobs still running after 2" in stderr, stderr
    assert took < 10, took
