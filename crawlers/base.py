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
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

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
    files: tuple[RemoteFile, ...]


@dataclass(frozen=True)
class Discovered:
    """A candidate and the cursor to store once it has been handled."""

    candidate: Candidate
    cursor: str | None


class Crawler(ABC):
    """A source of candidates. Subclasses set `name` and translate their source's errors."""

    name: ClassVar[str]

    @abstractmethod
    def discover(self, scope: Mapping[str, Any], cursor: str | None) -> Iterator[Discovered]:
        """Candidates in `scope` (the crawler's own config table) newer than `cursor`."""

    @abstractmethod
    def open(self, file: RemoteFile) -> ByteSource:
        """Random access to one file's bytes (HTTP range requests for remote sources)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""


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
