"""`monitor run-once` and `monitor scan hf://...` as a user runs them, against the local Hub."""

from __future__ import annotations

import json

import pytest

from benchmarks.zoo import camouflage
from benchmarks.zoo.llama import LMConfig, init_state_dict
from monitor import derive
from tests.conftest import run_monitor
from tests.crawlers.conftest import st_bytes
from tests.test_cli import _one_line_error

ENV = {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0"}


@pytest.fixture()
def setup(tmp_path, hub, lm_sd):
    db = tmp_path / "r.db"
    owned = derive.save_safetensors(lm_sd, tmp_path / "own" / "model.safetensors")
    assert run_monitor("register", owned, "--name", "lm", db=db).returncode == 0
    hub.add_model("thief/camo", {"model.safetensors": st_bytes(camouflage.permute_mlp(lm_sd, 4))})
    hub.add_model("alice/indep", {"model.safetensors": st_bytes(init_state_dict(LMConfig(), 9))})
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'[crawlers.hf_hub]\nconcurrency = 2\ntimeout_s = 5\n'
                   f'[crawlers.hf_hub.options]\nendpoint = "{hub.url}"\n'
                   f'[crawlers.hf_hub.scopes.everything]\nrecent = true\n')
    return db, cfg


def test_run_once_sweeps_records_and_summarises(setup, hub):
    db, cfg = setup
    proc = run_monitor("--config", cfg, "--json", "run-once", db=db, env=ENV)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (run,) = report["runs"]
    assert (run["crawler"], run["scope"], run["seen"], run["new"], run["matched"]) == \
        ("hf_hub", "everything", 2, 2, 1)
    assert report["totals"]["bytes_read"] == run["bytes_read"] == hub.bytes_served("cdn") > 0
    (match,) = report["matches"]
    assert (match["location"], match["model"], match["verdict"]) == ("hf://thief/camo", "lm", "derivative")
    events = json.loads(run_monitor("--json", "events", "list", db=db).stdout)
    assert [e["location"] for e in events] == ["hf://thief/camo"]
    again = json.loads(run_monitor("--config", cfg, "--json", "run-once", db=db, env=ENV).stdout)
    assert again["totals"]["new"] == again["totals"]["bytes_read"] == 0
    text = run_monitor("--config", cfg, "run-once", db=db, env=ENV)
    assert text.returncode == 0 and "weight bytes read" in text.stdout and "hf_hub" in text.stdout
    rows = json.loads(run_monitor("--json", "candidates", "--status", "matched", db=db).stdout)
    assert [(r["location"], r["verdict"]) for r in rows] == [("hf://thief/camo", "derivative")]
    listing = run_monitor("candidates", db=db)
    assert listing.returncode == 0 and "hf://alice/indep" in listing.stdout and "no_match" in listing.stdout


def test_scan_of_one_hub_repo(setup, hub):
    db, cfg = setup
    proc = run_monitor("--config", cfg, "--json", "scan", "hf://thief/camo", db=db, env=ENV)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["target"] == "hf://thief/camo" and len(report["revision"]) == 40
    assert report["matches"][0]["verdict"] == "derivative"
    assert 0 < report["bytes_read"] <= 0.015 * report["size"]
    clean = run_monitor("--config", cfg, "scan", "hf://alice/indep", db=db, env=ENV)
    assert clean.returncode == 0 and "no match" in clean.stdout
    _one_line_error(run_monitor("--config", cfg, "scan", "hf://nobody/nothing", db=db, env=ENV),
                    "nobody/nothing", "not found")
    _one_line_error(run_monitor("--config", cfg, "scan", "hf://just-a-name", db=db, env=ENV),
                    "expected hf://owner/repo")


def test_run_once_without_crawlers_or_models_says_what_is_missing(setup, tmp_path):
    db, cfg = setup
    _one_line_error(run_monitor("run-once", db=db), "no crawler is enabled")
    _one_line_error(run_monitor("--config", cfg, "run-once", db=tmp_path / "empty.db", env=ENV),
                    "no models are registered")
    bad = tmp_path / "bad.toml"
    bad.write_text('[crawlers.hf_hub.scopes.x]\nauthr = "me"\n')
    _one_line_error(run_monitor("--config", bad, "run-once", db=db), "crawlers.hf_hub.scopes.x.authr")
    bad.write_text('[crawlers.nope.scopes.x]\na = 1\n')
    _one_line_error(run_monitor("--config", bad, "run-once", db=db), "no such crawler")


def test_a_sweep_match_is_routed_and_delivered_once(setup, tmp_path):
    """run-once queues the derivative for Slack ([alerts] routes) and drains the outbox itself."""
    from monitor.sandbox.slack import SlackServer

    db, cfg = setup
    with SlackServer(token="xoxb-test") as slack:
        cfg.write_text(cfg.read_text() + f'[alerts]\nslack_api_url = "{slack.api_url}"\n'
                       f'slack_channel = "#alerts"\nroutes = {{derivative = ["slack"]}}\n')
        env = {**ENV, "SLACK_BOT_TOKEN": "xoxb-test"}
        first = run_monitor("--config", cfg, "--json", "run-once", db=db, env=env)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["alerts"]["delivered"] == 1
        (message,) = slack.messages()
        assert "thief/camo" in json.dumps(message)
        again = run_monitor("--config", cfg, "--json", "run-once", db=db, env=env)
        assert json.loads(again.stdout)["alerts"] is None and len(slack.messages()) == 1
    rows = json.loads(run_monitor("--json", "alerts", "list", db=db).stdout)
    assert [(r["channel"], r["status"]) for r in rows] == [("slack", "delivered")]
