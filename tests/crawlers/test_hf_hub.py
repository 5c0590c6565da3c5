"""The Hub crawler and the sweep, against the local Hub through the real huggingface_hub client."""

from __future__ import annotations

import hashlib

import pytest
import torch

from benchmarks.zoo import camouflage
from benchmarks.zoo.llama import LMConfig, init_state_dict
from crawlers.base import CrawlContext
from crawlers.hf_hub import HfHubCrawler, HubOptions
from monitor import derive
from monitor.errors import ConfigError
from monitor.match import Thresholds
from monitor.owned import OwnedModels
from monitor.sweep import Sweep
from tests.crawlers.conftest import st_bytes


def run_sweep(registry, hub, scopes, *, concurrency=4):
    crawler = HfHubCrawler(HubOptions(endpoint=hub.url, retries=2),
                           CrawlContext(env={}, timeout_s=5, concurrency=concurrency),
                           sleep=lambda _s: None)
    try:
        sweep = Sweep(registry, crawler, OwnedModels.load(registry), Thresholds(), actor="test",
                      concurrency=concurrency)
        return sweep.run({n: HfHubCrawler.scope(n, t) for n, t in scopes.items()})
    finally:
        crawler.close()


def by_location(registry):
    return {c["location"]: c for c in registry.candidates(source="hf_hub")}


@pytest.fixture()
def population(hub, lm_sd, tmp_path):
    """One of each: exact re-upload, camouflaged derivative, resharded fp16 copy, unrelated
    model of the same architecture, one of another width, a .bin-only repo, a repo with no
    weights. Returns the hub and each repo's files."""
    shards = derive.save_sharded(derive.cast(derive.rename(lm_sd, "x."), torch.float16),
                                 tmp_path / "sharded", 2)
    repos = {
        "thief/exact": {"model.safetensors": st_bytes(lm_sd), "config.json": b"{}"},
        "thief/camo": {"model.safetensors": st_bytes(
            camouflage.permute_mlp(camouflage.rotate_residual(lm_sd, 1), 2))},
        "thief/sharded": {p.name: p.read_bytes() for p in shards.iterdir()},
        "alice/indep": {"model.safetensors": st_bytes(init_state_dict(LMConfig(), 11))},
        "bob/wide": {"model.safetensors": st_bytes(init_state_dict(LMConfig(d=96), 5))},
        "carol/pickled": {"pytorch_model.bin": b"PK\x03\x04not really"},
        "dave/readme": {"README.md": b"# nothing here"},
    }
    for repo, files in repos.items():
        hub.add_model(repo, files, base_model="us/lm" if repo == "thief/camo" else None)
    return hub, repos


def test_a_sweep_finds_copies_cheapest_first_and_records_every_candidate(registry, population):
    hub, held = population
    (run,) = run_sweep(registry, hub, {"all": {"recent": True}})
    assert (run.seen, run.new, run.matched, run.failed) == (7, 7, 3, 0), run
    rows = by_location(registry)
    assert rows["hf://thief/exact"]["verdict"] == "exact" and rows["hf://thief/exact"]["bytes_read"] == 0
    assert rows["hf://thief/camo"]["verdict"] == "derivative"
    assert rows["hf://thief/sharded"]["verdict"] == "derivative"
    assert rows["hf://alice/indep"]["status"] == "no_match" and rows["hf://alice/indep"]["verdict"] == "none"
    assert rows["hf://bob/wide"]["reason"] == "architecture: comparable to no registered model"
    assert rows["hf://carol/pickled"]["status"] == "skipped" and "torch" in rows["hf://carol/pickled"]["reason"]
    assert rows["hf://dave/readme"]["reason"] == "no weight files"
    events = {e.location: e for e in registry.list_events()}
    assert set(events) == {"hf://thief/exact", "hf://thief/camo", "hf://thief/sharded"}
    assert events["hf://thief/camo"].p_value < 1e-9
    # The prefiltered model cost its header only; nobody read more than ~1 % of what they hold.
    assert 0 < rows["hf://bob/wide"]["bytes_read"] <= 8 << 10
    weights = sum(len(d) for files in held.values() for n, d in files.items() if n.endswith(".safetensors"))
    index = len(held["thief/sharded"]["model.safetensors.index.json"])  # served by the Hub itself
    assert run.bytes_read == hub.bytes_served("cdn") + index <= 0.015 * weights


def test_a_second_sweep_with_nothing_changed_reads_nothing_and_a_push_is_picked_up(registry, population, lm_sd):
    hub, _ = population
    run_sweep(registry, hub, {"all": {"recent": True}})
    hub.clear_log()
    (again,) = run_sweep(registry, hub, {"all": {"recent": True}})
    # Repos modified in the cursor's own second are listed again (the Hub's times have a
    # granularity; stopping at equality could miss a push in that second), but not fetched.
    assert (again.new, again.bytes_read) == (0, 0)
    assert hub.bytes_served("cdn") == 0
    assert {r.path.split("?")[0] for r in hub.requests} == {"/api/models"}  # listing pages only
    hub.add_model("alice/indep", {"model.safetensors": st_bytes(camouflage.scale_mlp(lm_sd, 3.0))})
    (third,) = run_sweep(registry, hub, {"all": {"recent": True}})
    assert (third.new, third.matched) == (1, 1)
    assert {e.location for e in registry.list_events()} >= {"hf://alice/indep"}


def test_scopes_by_base_model_author_and_repo_list(registry, population):
    runs = run_sweep(registry, population[0], {"base": {"base_model": "us/lm"},
                                            "thief": {"author": "thief"},
                                            "list": {"repos": ["bob/wide", "dave/readme"]}})
    assert [(r.scope, r.seen, r.new) for r in runs] == [("base", 1, 1), ("thief", 3, 2), ("list", 2, 2)]


def test_throttled_and_failing_repos_are_retried_and_the_sweep_goes_on(registry, population, lm_sd):
    hub, _ = population
    hub.fail_next("/api/models/thief/camo", 429, retry_after=0, times=2)  # model_info: retried
    shard = population[1]["thief/sharded"]["model-00001-of-00002.safetensors"]
    # Its CDN fails every attempt of this sweep (1 + 2 retries), then recovers.
    hub.fail_next(f"/{hashlib.sha256(shard).hexdigest()}", 500, retry_after=None, times=3)
    (run,) = run_sweep(registry, hub, {"all": {"recent": True}})
    rows = by_location(registry)
    assert rows["hf://thief/camo"]["verdict"] == "derivative"
    assert rows["hf://thief/sharded"]["status"] == "failed" and "HTTP 500" in rows["hf://thief/sharded"]["reason"]
    assert (run.seen, run.matched, run.failed) == (7, 2, 1)
    runs = run_sweep(registry, hub, {"all": {"recent": True}})
    assert [(r.scope, r.new, r.matched) for r in runs] == [("(retry)", 1, 1), ("all", 0, 0)]
    assert by_location(registry)["hf://thief/sharded"]["verdict"] == "derivative"


def test_a_repo_of_a_list_that_fails_is_recorded_and_the_others_go_on(registry, population):
    hub, _ = population
    hub.fail_next("/api/models/bob/wide", 400, retry_after=None, times=2)  # listing and triage
    (run,) = run_sweep(registry, hub, {"list": {"repos": ["bob/wide", "thief/camo"]}})
    rows = by_location(registry)
    assert (run.seen, run.failed, run.matched) == (2, 1, 1)
    assert rows["hf://bob/wide"]["status"] == "failed" and "HTTP 400" in rows["hf://bob/wide"]["reason"]
    runs = run_sweep(registry, hub, {"list": {"repos": ["bob/wide", "thief/camo"]}})
    assert [(r.scope, r.new) for r in runs] == [("(retry)", 1), ("list", 0)]
    assert {r["status"] for r in registry.candidates(source="hf_hub") if r["location"] == "hf://bob/wide"} \
        == {"superseded", "no_match"}


def test_a_listing_failure_is_reported_per_scope(registry, population):
    # (a 5xx would be retried by huggingface_hub itself, for ~20 s, before reaching us)
    population[0].fail_next("/api/models", 400, retry_after=None, times=1)
    (run,) = run_sweep(registry, population[0], {"all": {"recent": True}})
    assert run.seen == 0 and len(run.errors) == 1 and "HTTP 400" in run.errors[0]


@pytest.mark.parametrize("table,key", [({}, "crawlers.hf_hub.scopes.s"),
                                       ({"recent": True, "author": "x"}, "crawlers.hf_hub.scopes.s"),
                                       ({"serch": "x"}, "crawlers.hf_hub.scopes.s.serch")])
def test_bad_scopes_are_config_errors_naming_the_key(table, key):
    with pytest.raises(ConfigError) as info:
        HfHubCrawler.scope("s", table)
    assert str(info.value).startswith(f"config {key}=")
