"""Conditions end to end, as an operator meets them: `monitor run-once` in subprocesses against
the local Hub (listings refused with an injected 401, as for a revoked token) and the local Slack.

A source none of whose scopes can be listed pages once after `fire_after_runs` sweeps; its
scopes' alerts are held back while it fires and are never sent if they clear with it. A sweep
stopped by a signal observes nothing.

The Hub refuses with a 401 rather than being a dead port: huggingface_hub retries a refused
connection (and a 5xx) inside its listing for ~23 s per scope before giving up, which is too slow
for a test; a 401 is not retried and fails the listing at once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from monitor.sandbox.hub import HubServer
from monitor.sandbox.slack import SlackServer
from tests.alert.test_alerts_cli import MONITOR, _env, _monitor
from tests.conftest import tiny_state_dict
from tests.crawlers.conftest import st_bytes

SCOPES = ("hf_hub/ours", "hf_hub/theirs")


@pytest.fixture()
def hub():
    with HubServer() as server:
        server.add_model("thief/other", {"model.safetensors": st_bytes(tiny_state_dict(1))})
        yield server


@pytest.fixture()
def slack():
    with SlackServer(token="xoxb-test") as server:
        yield server


@pytest.fixture()
def deployment(tmp_path: Path, owned_model: Path, hub: HubServer, slack: SlackServer):
    """A registry owning one tiny model; the hf_hub crawler on the local Hub with two listing
    scopes; conditions routed to the local Slack, firing after two failing sweeps."""
    db = tmp_path / "r.db"
    env = _env(SLACK_BOT_TOKEN="xoxb-test", HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HOME=str(tmp_path / "hf_home"), NO_COLOR="1", COLUMNS="200")
    for name in ("HF_TOKEN", "HF_ENDPOINT"):
        env.pop(name, None)
    registered = _monitor(db, "register", str(owned_model), "--name", "lm", env=env)
    assert registered.returncode == 0, registered.stderr
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'[crawlers.hf_hub]\ntimeout_s = 5\n[crawlers.hf_hub.options]\nendpoint = "{hub.url}"\n'
        '[crawlers.hf_hub.scopes.ours]\nauthor = "our-org"\n'
        '[crawlers.hf_hub.scopes.theirs]\nsearch = "thief"\n'
        '[alerts]\nroutes = { source_unreachable = ["slack"], scope_failing = ["slack"] }\n'
        f'fire_after_runs = 2\nslack_api_url = "{slack.api_url}"\nslack_channel = "#alerts"\n')
    return db, cfg, env


def _json(db: Path, env: dict[str, str], *args: str):
    proc = _monitor(db, "--json", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _sweep(db: Path, cfg: Path, env: dict[str, str], hub: HubServer, *, refused: bool) -> dict:
    """One run-once; with `refused`, both scopes' listings get a 401."""
    hub.clear_log()
    if refused:
        hub.fail_next("/api/models", status=401, retry_after=None, times=len(SCOPES))
    report = _json(db, env, "--config", str(cfg), "run-once")
    listings = [r.status for r in hub.requests if r.path.startswith("/api/models?")]
    assert listings == ([401] * len(SCOPES) if refused else [200] * len(SCOPES)), hub.requests
    failed = {f"{r['crawler']}/{r['scope']}" for r in report["runs"] if r["errors"]}
    assert failed == (set(SCOPES) if refused else set())
    return report


def _conditions(db: Path, env: dict[str, str]) -> dict[str, dict]:
    """subject → condition, as `monitor --json alerts conditions` lists them."""
    return {c["subject"]: c for c in _json(db, env, "alerts", "conditions")}


def _texts(slack: SlackServer) -> list[str]:
    return [m["text"] for m in slack.messages()]


def test_an_unreachable_source_pages_once_and_its_scopes_stay_quiet(deployment, hub, slack):
    db, cfg, env = deployment

    # run 1: everything fails once → pending, nothing queued, nothing sent
    assert _sweep(db, cfg, env, hub, refused=True)["alerts"] is None
    conditions = _conditions(db, env)
    assert {(c["kind"], s, c["state"], c["failures"]) for s, c in conditions.items()} == {
        ("source_unreachable", "hf_hub", "pending", 1),
        ("scope_failing", "hf_hub/ours", "pending", 1),
        ("scope_failing", "hf_hub/theirs", "pending", 1)}
    assert _json(db, env, "alerts", "list") == []
    assert slack.received == []

    # run 2: all three fire; only the source reaches Slack, its scopes are held back
    report = _sweep(db, cfg, env, hub, refused=True)
    assert (report["alerts"]["delivered"], report["alerts"]["inhibited"]) == (1, 2)
    (text,) = _texts(slack)
    assert text.startswith("source unreachable: hf_hub (2 runs failed") and "401" in text
    assert "hf_hub/" not in text
    conditions = _conditions(db, env)
    source_id = conditions["hf_hub"]["id"]
    assert {s: (c["state"], c["inhibited_by"]) for s, c in conditions.items()} == {
        "hf_hub": ("firing", None), "hf_hub/ours": ("firing", source_id),
        "hf_hub/theirs": ("firing", source_id)}
    rows = _json(db, env, "alerts", "list")
    assert {(r["subject"], r["kind"], r["action"], r["status"]) for r in rows} == {
        ("source_unreachable: hf_hub", "source_unreachable", "trigger", "delivered"),
        ("scope_failing: hf_hub/ours", "scope_failing", "trigger", "pending"),
        ("scope_failing: hf_hub/theirs", "scope_failing", "trigger", "pending")}
    table = _monitor(db, "alerts", "list", "--status", "pending", env=env).stdout
    assert "scope_failing: hf_hub/ours" in table and "source_unreachable" not in table
    held = _monitor(db, "alerts", "conditions", "--state", "firing", env=env).stdout
    assert held.count("held back by source_unreachable: hf_hub") == 2

    # run 3: the Hub answers again → all resolve; Slack hears the source's resolve, nothing else
    report = _sweep(db, cfg, env, hub, refused=False)
    assert (report["alerts"]["delivered"], report["alerts"]["suppressed"]) == (1, 2)
    assert report["totals"]["seen"] == 1  # thief/other, listed and triaged
    texts = _texts(slack)
    assert texts[1:] == ["resolved: source unreachable: hf_hub"] and len(slack.received) == 2
    assert not any("scope failing" in t or "hf_hub/" in t for t in texts)
    assert {c["state"] for c in _conditions(db, env).values()} == {"resolved"}
    rows = _json(db, env, "alerts", "list")
    scope_rows = sorted((r["subject"], r["action"], r["status"], r["last_error"]) for r in rows
                        if r["kind"] == "scope_failing")
    assert [(s, a, st) for s, a, st, _ in scope_rows] == [
        ("scope_failing: hf_hub/ours", "resolve", "suppressed"),
        ("scope_failing: hf_hub/ours", "trigger", "suppressed"),
        ("scope_failing: hf_hub/theirs", "resolve", "suppressed"),
        ("scope_failing: hf_hub/theirs", "trigger", "suppressed")]
    assert all(("closed before" if a == "trigger" else "nothing to resolve") in e
               for _, a, _, e in scope_rows)
    source_rows = [(r["action"], r["status"]) for r in rows if r["kind"] == "source_unreachable"]
    assert source_rows == [("resolve", "delivered"), ("trigger", "delivered")]
    assert len(_json(db, env, "alerts", "list", "--status", "suppressed")) == 4


def test_a_sweep_stopped_by_a_signal_observes_nothing(deployment, hub, slack):
    """Stopped while its scopes were being listed, each listing refused: had the sweep been
    recorded, it would read as the source being down."""
    db, cfg, env = deployment
    hub.delay_s = 1.0  # SIGTERM lands ~1 s before the sweep could end on its own
    hub.fail_next("/api/models", status=401, retry_after=None, times=len(SCOPES))
    proc = subprocess.Popen([MONITOR, "--db", str(db), "--config", str(cfg), "run-once"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not hub.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "stopped by signal" in stderr
    assert {r.status for r in hub.requests} == {401}
    assert _json(db, env, "alerts", "conditions") == []
    assert _json(db, env, "alerts", "list") == [] and slack.received == []



def test_run_once_sends_the_reminders_a_cronjob_owes(deployment, hub, slack):
    """No daemon: the CronJob's run-once is the only deliverer, so it must queue reminders even
    when nothing else is pending."""
    from datetime import timedelta

    from monitor.records import NewEvent, Verdict
    from monitor.registry import Registry
    from monitor.registry.core import utc_now

    db, cfg, env = deployment
    two_days_ago = utc_now() - timedelta(days=2)
    with Registry.open(db, clock=lambda: two_days_ago) as reg:  # found and sent two days ago
        lm = reg.get_model("lm")
        reg.record_event(NewEvent(lm.id, lm.name, "hf://thief/copy", Verdict.EXACT, 1.0, "high",
                                  1e-30, {}), actor="test", channels=["slack"])
        (trigger,) = reg.list_outbox()
        reg.record_notification(trigger.id, {"ts": "1"})
    cfg.write_text(cfg.read_text().replace(
        'routes = {', 'routes = { exact = ["slack"],'))
    report = _sweep(db, cfg, env, hub, refused=False)
    assert (report["alerts"]["repeats_queued"], report["alerts"]["delivered"]) == (1, 1)
    (text,) = _texts(slack)
    assert text.startswith("still open (reminder 1): exact copy of lm found at hf://thief/copy")
    assert _sweep(db, cfg, env, hub, refused=False)["alerts"] is None  # nothing more owed today
