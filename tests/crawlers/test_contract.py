"""One contract, every built-in crawler (as APScheduler 3 runs one test body over every backend).

Each crawler gets a fixture that publishes the same three models on its own local server — a
camouflaged derivative of the owned model, an independent model of the same architecture, and
a byte-for-byte copy of the owned file — and builds the crawler the way the daemon does
(`base.load(name).create(options, CrawlContext(...))`). The test bodies then know nothing about
the source: discover, describe, open, a full sweep, and a second sweep that must cost nothing.

Where sources differ they differ in what they publish, stated per site: the Hub and GitHub
publish a SHA-256 per file, so the copy is an exact match for 0 bytes; a bare URL has no digest,
so the copy is found by the robust fingerprint, as a derivative, for the planned ranges only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.zoo import camouflage
from benchmarks.zoo.llama import LMConfig, init_state_dict
from crawlers import base
from crawlers.base import Candidate, CrawlContext, Discovered
from monitor.formats.base import ByteSource
from monitor.match import Thresholds
from monitor.owned import OwnedModels
from monitor.sandbox.github import GitHubServer
from monitor.sweep import Sweep
from tests.crawlers.conftest import st_bytes
from tests.formats.http_server import FileServer

BUILTINS = ("github_releases", "hf_hub", "url_list")  # one publisher each, below
ROLES = ("derivative", "independent", "exact")


@dataclass
class Site:
    """One crawler's local source with the three models published on it."""

    crawler: str
    options: dict[str, Any]  # the [crawlers.<name>.options] table pointing at the local server
    scope: dict[str, Any]  # one scope table that covers the three publications
    locations: dict[str, str]  # role -> Candidate.location the crawler must report
    files: dict[str, tuple[str, bytes]]  # role -> (RemoteFile.path of the weights, its bytes)
    weight_bytes_served: Callable[[], int]  # body bytes of weight files the server has sent
    exact_verdict: str  # what the byte copy is recorded as, given what the source publishes
    exact_costs_nothing: bool  # True when a published digest identifies it with 0 weight bytes


@pytest.fixture(scope="module")
def models(lm_sd) -> dict[str, bytes]:
    """Safetensors bytes of the derivative and the independent model (the copy comes from the
    registry's own file, so it is byte-identical by construction)."""
    return {"derivative": st_bytes(camouflage.permute_mlp(lm_sd, 4)),
            "independent": st_bytes(init_state_dict(LMConfig(), 9))}


def _published(tmp_path: Path, models: dict[str, bytes]) -> dict[str, bytes]:
    owned = tmp_path / "own" / "model.safetensors"  # written by the `registry` fixture
    return {**models, "exact": owned.read_bytes()}


def _hf_hub(hub, data: dict[str, bytes]) -> Site:
    repos = {"derivative": "thief/camo", "independent": "alice/indep", "exact": "thief/exact"}
    for role, repo in repos.items():
        hub.add_model(repo, {"model.safetensors": data[role], "config.json": b"{}"})
    return Site("hf_hub", {"endpoint": hub.url, "retries": 1}, {"recent": True},
                {role: f"hf://{repo}" for role, repo in repos.items()},
                {role: ("model.safetensors", data[role]) for role in ROLES},
                lambda: hub.bytes_served("cdn"), "exact", True)


def _github_releases(gh: GitHubServer, data: dict[str, bytes]) -> Site:
    repos = {"derivative": "thief/camo", "independent": "alice/indep", "exact": "thief/exact"}
    for role, repo in repos.items():
        gh.add_release(*repo.split("/"), "v1", {"model.safetensors": data[role], "notes.txt": b"hi"})
    return Site("github_releases", {"api_url": gh.url}, {"repos": list(repos.values())},
                {role: f"{gh.url}/{repo}/releases/tag/v1" for role, repo in repos.items()},
                {role: ("model.safetensors", data[role]) for role in ROLES},
                gh.bytes_served, "exact", True)


def _url_list(srv: FileServer, data: dict[str, bytes]) -> Site:
    names = {role: f"{role}.safetensors" for role in ROLES}
    urls = {}
    for role, name in names.items():
        srv.files[name] = data[role]
        urls[role] = f"{srv.base}/files/{name}"
    return Site("url_list", {}, {"urls": list(urls.values())}, urls,
                {role: (names[role], data[role]) for role in ROLES},
                lambda: srv.bytes_sent, "derivative", False)


@pytest.fixture(params=BUILTINS)
def site(request, registry, tmp_path, models) -> Iterator[Site]:
    data = _published(tmp_path, models)
    if request.param == "hf_hub":
        hub = request.getfixturevalue("hub")
        yield _hf_hub(hub, data)
    elif request.param == "github_releases":
        with GitHubServer() as gh:
            yield _github_releases(gh, data)
    else:
        srv = FileServer().start()
        try:
            yield _url_list(srv, data)
        finally:
            srv.stop()


@pytest.fixture()
def crawler(site: Site) -> Iterator[base.Crawler]:
    built = base.load(site.crawler).create(site.options, CrawlContext(env={}, timeout_s=5,
                                                                       concurrency=2))
    yield built
    built.close()


def test_every_builtin_crawler_has_a_contract_site():
    declared = {name for name, target in base.available().items() if target.startswith("crawlers.")}
    assert declared == set(BUILTINS)


def test_discover_describe_and_open_give_the_published_bytes(site: Site, crawler: base.Crawler):
    assert crawler.name == site.crawler
    found = list(crawler.discover(crawler.scope("contract", site.scope), None))

    assert all(isinstance(d, Discovered) and isinstance(d.candidate, Candidate) for d in found)
    by_location = {d.candidate.location: d.candidate for d in found}
    assert set(by_location) == set(site.locations.values())
    for role, location in site.locations.items():
        listed = by_location[location]
        assert listed.source == site.crawler and listed.revision, listed
        described = crawler.describe(listed)
        assert (described.source, described.location, described.revision) == \
            (listed.source, listed.location, listed.revision)
        assert described.files and all(f.size is not None for f in described.files), described
        path, data = site.files[role]
        (weights,) = [f for f in described.files if f.path == path]
        assert weights.size == len(data)
        source = crawler.open(weights)
        try:
            assert isinstance(source, ByteSource) and source.size == len(data)
            assert source.read(0, 8) == data[:8]
            assert source.read(len(data) - 1001, 1000) == data[-1001:-1]
            assert source.read(0, len(data)) == data
        finally:
            source.close()


def test_a_sweep_finds_the_derivative_and_a_second_sweep_costs_nothing(site: Site, crawler, registry):
    sweep = Sweep(registry, crawler, OwnedModels.load(registry), Thresholds(), actor="test",
                  concurrency=2)
    scopes = {"contract": crawler.scope("contract", site.scope)}

    (run,) = sweep.run(scopes)

    assert (run.seen, run.new, run.failed, run.skipped, run.errors) == (3, 3, 0, 0, []), run
    rows = {r["location"]: r for r in registry.candidates(source=site.crawler)}
    assert set(rows) == set(site.locations.values())
    derivative, independent, exact = (rows[site.locations[r]] for r in ROLES)
    assert (derivative["status"], derivative["verdict"]) == ("matched", "derivative")
    assert (independent["status"], independent["verdict"]) == ("no_match", "none")
    assert (exact["status"], exact["verdict"]) == ("matched", site.exact_verdict)
    if site.exact_costs_nothing:
        assert exact["bytes_read"] == 0
    events = {e.location: e for e in registry.list_events()}
    assert set(events) == {site.locations["derivative"], site.locations["exact"]}
    assert events[site.locations["derivative"]].p_value < 1e-9
    # What the sweep says it read is what the server sent, and a small part of what it holds.
    held = sum(len(data) for _, data in site.files.values())
    assert _settles_at(site.weight_bytes_served, run.bytes_read)
    assert 0 < run.bytes_read <= 0.02 * held

    before = site.weight_bytes_served()
    again = Sweep(registry, crawler, OwnedModels.load(registry), Thresholds(), actor="test",
                  concurrency=2).run(scopes)

    assert [(r.new, r.bytes_read, r.failed, r.errors) for r in again] == [(0, 0, 0, [])]
    assert site.weight_bytes_served() == before
    assert len(registry.list_events()) == 2
    crawler.close()  # and once more by the fixture: closing twice must be harmless


def _settles_at(counter: Callable[[], int], expected: int, wait_s: float = 2.0) -> bool:
    """Whether `counter` reaches `expected`: FileServer counts a write after the client may
    already hold the bytes, so its count can trail the client's by a moment."""
    deadline = time.monotonic() + wait_s
    while counter() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return counter() == expected
