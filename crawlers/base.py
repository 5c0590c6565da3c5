"""The one interface every source of candidates implements, and how crawlers are found.

A crawler answers three questions, cheapest first (DESIGN.md, "cheapest evidence first"):

1. `discover(scope, cursor)` — which candidates exist in this scope since the cursor? Each comes
   with the cursor to store once it has been handled, so a sweep that dies resumes where it
   stopped, and with a revision, so an unchanged candidate is never fetched again.
2. each candidate's `files` — path, size and SHA-256 where the source publishes them (the Hub's
   LFS pointers, GitHub release asset digests): an exact copy is matched with zero weight bytes.
3. `open(file)` — a `ByteSource` over the file's bytes, pinned to the revision, for the header
   and the planned ranges only.

Crawlers are looked up by name in the entry-point group ``provenance_monitor.crawlers`` (the
built-ins are declared in our own pyproject.toml), so a third party adds a source by installing a
package. Lookup is lazy and checks the class, as APScheduler 3 does for its plugins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from monitor.errors import ConfigError
from monitor.formats.base import ByteSource

GROUP = "provenance_monitor.crawlers"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a candidate as its source describes it, before any of it is read."""

    path: str  # path inside the candidate, e.g. "model-00001-of-00002.safetensors"
    url: str  # where its bytes are, pinned to the candidate's revision
    size: int | None  # bytes, when the source says
    sha256: str | None  # content digest, when the source publishes one


@dataclass(frozen=True)
class Candidate:
    """A published model that might be a copy of one of ours."""

    source: str  # the crawler's name
    location: str  # hf://owner/repo, a release page, a URL: what an alert links to
    revision: str  # commit sha, release id + update time, ETag: same revision = nothing new
    files: tuple[RemoteFile, ...] | None  # None: not listed yet, `Crawler.describe` lists them


@dataclass(frozen=True)
class Discovered:
    """A candidate and the cursor to store once it has been handled."""

    candidate: Candidate
    cursor: str | None


class Settings(BaseModel):
    """Base of a crawler's `Options` and `Scope` models: unknown keys are config errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(Settings):
    """For crawlers with no crawler-wide settings."""


class AnyScope(Settings):
    """A scope that accepts any keys, for plugins that validate their own."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True)
class CrawlContext:
    """What the daemon hands every crawler: where secrets are, timeouts and politeness limits.

    Secrets (HF_TOKEN, GITHUB_TOKEN) are read from `env` with `monitor.config.read_secret`,
    which also honours `<NAME>_FILE`; a crawler never takes them from its config table.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0  # per request: connect, read, write, pool
    concurrency: int = 8  # requests one crawler may have in flight
    user_agent: str = "provenance-monitor"


class SkipCandidate(Exception):
    """Raised by `open` or a crawler's own checks: this candidate cannot be read, and why.

    Not a `MonitorError`: it never reaches the user as a failure; the sweep records the reason
    as the candidate's skip and goes on.
    """


class Crawler(ABC):
    """A source of candidates. Subclasses set `name`, `Scope` (and `Options` if they have any)
    and translate their source's errors into ours at their boundary."""

    name: ClassVar[str]
    Options: ClassVar[type[Settings]] = NoOptions  # the [crawlers.<name>] keys of the crawler
    Scope: ClassVar[type[Settings]] = AnyScope  # one [crawlers.<name>.scopes.<scope>] table

    def __init__(self, options: Settings | None = None, context: CrawlContext | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.context = context or CrawlContext()

    @classmethod
    def create(cls, options: Mapping[str, Any], context: CrawlContext) -> Crawler:
        """Validate the crawler's own config table and build it."""
        return cls(_validate(cls.Options, options, f"crawlers.{cls.name}"), context)

    @classmethod
    def scope(cls, name: str, table: Mapping[str, Any]) -> Settings:
        """Validate one scope table (ConfigError names crawlers.<name>.scopes.<scope>.<key>)."""
        return _validate(cls.Scope, table, f"crawlers.{cls.name}.scopes.{name}")

    @abstractmethod
    def discover(self, scope: Any, cursor: str | None) -> Iterator[Discovered]:
        """Candidates in `scope` (a validated `Scope`) newer than `cursor`, in cursor order.

        A candidate's `cursor` is stored once it and every candidate before it are handled, so
        crawlers listing newest-first yield None until the last one (which carries the new
        high-water mark). Errors of the listing itself are raised as `MonitorError`s: the sweep
        records them against the scope and goes on with the next.
        """

    def describe(self, candidate: Candidate) -> Candidate:
        """The candidate with its files listed, for crawlers whose listing gives revisions only.

        The Hub's listing carries each repo's commit sha but not its files (those cost one
        request per repo), so `discover` yields files=None and the sweep calls this only for
        revisions it has not seen: an unchanged repo costs nothing beyond its listing entry.
        """
        if candidate.files is None:
            raise NotImplementedError(f"{self.name} yielded a candidate without files")
        return candidate

    def refresh(self, location: str) -> Candidate | None:
        """The candidate at `location` as it is now, to retry one that failed last sweep.

        None: this crawler cannot look one up (it will be rediscovered, or not, by `discover`).
        """
        return None

    @abstractmethod
    def open(self, file: RemoteFile) -> ByteSource:
        """Random access to one file's bytes (HTTP range requests for remote sources)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""


def _validate(model: type[Settings], table: Mapping[str, Any], where: str) -> Settings:
    try:
        return model.model_validate(dict(table))
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join([where, *(str(p) for p in err["loc"])])
        if err["type"] == "extra_forbidden":
            raise ConfigError(key, err["input"], "unknown key (see config/monitor.example.toml)") from None
        raise ConfigError(key, err.get("input"), err["msg"]) from None


def available() -> dict[str, str]:
    """Installed crawlers: name -> "module:attribute" (for `monitor plugins` and errors)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load(name: str) -> type[Crawler]:
    """The crawler class registered under `name`; ConfigError if missing or not a Crawler."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        known = ", ".join(sorted(available())) or "none installed"
        raise ConfigError(f"crawlers.{name}", name, f"no such crawler (available: {known})")
    try:
        cls = found[0].load()
    except Exception as e:  # a broken plugin must not take the daemon down with a traceback
        raise ConfigError(f"crawlers.{name}", found[0].value,
                          f"cannot be imported ({type(e).__name__}: {e})") from None
    if not (isinstance(cls, type) and issubclass(cls, Crawler)):
        raise ConfigError(f"crawlers.{name}", found[0].value, "is not a crawlers.base.Crawler")
    return cls
