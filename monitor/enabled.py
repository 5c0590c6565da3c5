"""The crawlers the config enables, each built and its scopes validated before anything runs.

Shared by `monitor run-once` and the daemon's scheduler: a typo in any crawler's table stops the
start with a ConfigError naming the key, instead of failing hours later in one job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crawlers import base
from monitor import __version__
from monitor.config import CrawlerSettings, Settings
from monitor.errors import ConfigError

USER_AGENT = f"provenance-monitor/{__version__}"


@dataclass
class Configured:
    """One enabled crawler, built, with its validated scopes and its [crawlers.<name>] table."""

    name: str
    crawler: base.Crawler
    scopes: dict[str, base.Settings]
    settings: CrawlerSettings


def context(settings: CrawlerSettings, env: Mapping[str, str]) -> base.CrawlContext:
    return base.CrawlContext(env=dict(env), timeout_s=settings.timeout_s,
                             concurrency=settings.concurrency, user_agent=USER_AGENT)


def build(settings: Settings, env: Mapping[str, str], only: Sequence[str] = ()) -> list[Configured]:
    """Every enabled crawler (or those named in `only`), ready to sweep; close them when done."""
    unknown = [n for n in only if n not in settings.crawlers]
    if unknown:
        raise ConfigError(f"crawlers.{unknown[0]}", unknown[0],
                          "not configured (add a [crawlers.<name>] table to the config)")
    built: list[Configured] = []
    try:
        for name, cs in settings.crawlers.items():
            if not (cs.enabled or name in only) or (only and name not in only):
                continue
            cls = base.load(name)
            scopes = {scope: cls.scope(scope, table) for scope, table in cs.scopes.items()}
            if not scopes:
                raise ConfigError(f"crawlers.{name}.scopes", {}, "no scope configured: add a "
                                  f"[crawlers.{name}.scopes.<scope>] table")
            built.append(Configured(name, cls.create(cs.options, context(cs, env)), scopes, cs))
    except BaseException:
        for c in built:
            c.crawler.close()
        raise
    return built


def crawler(settings: Settings, name: str, env: Mapping[str, str]) -> base.Crawler:
    """One crawler from its table (or its defaults when not configured), for ad-hoc scans."""
    cs = settings.crawlers.get(name, CrawlerSettings())
    return base.load(name).create(cs.options, context(cs, env))
