"""Crawler lookup through real entry points (a dist-info folder on sys.path), and the records."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from crawlers import base
from monitor.errors import ConfigError


@pytest.fixture()
def plugin_dist(tmp_path, monkeypatch):
    """Install a third-party crawler package the way pip would leave it: a module + dist-info."""
    (tmp_path / "acme_crawlers.py").write_text(textwrap.dedent('''
        from crawlers.base import Crawler, Discovered, Candidate, RemoteFile

        class AcmeCrawler(Crawler):
            name = "acme"

            def discover(self, scope, cursor):
                start = int(cursor or 0)
                for i in range(start, scope["count"]):
                    f = RemoteFile("model.safetensors", f"https://acme.invalid/{i}", 10, None)
                    yield Discovered(Candidate(self.name, f"acme://{i}", f"r{i}", (f,)), str(i + 1))

            def open(self, file):
                raise NotImplementedError

        class NotACrawler:
            pass

    '''))
    dist = tmp_path / "acme_crawlers-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-crawlers\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"""
        [{base.GROUP}]
        acme = acme_crawlers:AcmeCrawler
        wrong = acme_crawlers:NotACrawler
        missing = acme_crawlers_gone:Nothing
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("acme_crawlers", None)


def test_installed_crawler_is_found_and_resumes_from_its_cursor(plugin_dist):
    assert base.available()["acme"] == "acme_crawlers:AcmeCrawler"
    crawler = base.load("acme")()
    seen = list(crawler.discover({"count": 5}, cursor="3"))
    assert [d.candidate.location for d in seen] == ["acme://3", "acme://4"]
    assert seen[-1].cursor == "5" and seen[0].candidate.files[0].size == 10


def test_unknown_wrong_and_broken_plugins_are_config_errors(plugin_dist):
    with pytest.raises(ConfigError, match="no such crawler .*acme"):
        base.load("nope")
    with pytest.raises(ConfigError, match="is not a crawlers.base.Crawler"):
        base.load("wrong")
    with pytest.raises(ConfigError, match="cannot be imported"):
        base.load("missing")


def test_the_interface_is_abstract():
    with pytest.raises(TypeError):
        base.Crawler()  # type: ignore[abstract]
