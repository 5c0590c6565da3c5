"""One error tree for the whole daemon.

Every failure the user can act on is a ``MonitorError`` whose ``str()`` is one line naming the
thing (a file, a config key, a model) and the problem. The CLI maps the two branches to exit codes
and prints that line; anything outside the tree is a bug (exit 3, traceback only with --debug)::

    MonitorError                  (exit 2 unless a subclass says otherwise)
    ├── InputError                bad input the user handed us
    │   ├── WeightFormatError     a weight file that is corrupt, lies in its header, or is unsafe
    │   │   └── FetchError        a remote one could not be fetched (timeout, refused, HTTP error):
    │   │                         worth retrying, unlike a file that lies
    │   ├── NoWeightsError        a path with no weight file we can read
    │   ├── ConfigError           a config key with a bad value (names key, value, what is allowed)
    │   └── NotFoundError         a model or event id that is not in the registry
    ├── RegistryError             the SQLite registry is locked, corrupt, or from a newer version
    ├── SourceError               a crawled source (Hub, GitHub, a URL) failed, refused or timed out
    └── DeliveryError             (monitor.alert.base) a channel did not accept an alert:
        ├── Transient             retried by the outbox with backoff / Retry-After
        └── Permanent             the row is marked failed with the reason

Layers below (safetensors, torch, gguf, sqlite3) raise their own exceptions; each is translated
at exactly one boundary (the format reader, the store) so callers only see this tree.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_MATCH = 1
EXIT_INPUT = 2
EXIT_INTERNAL = 3


class MonitorError(Exception):
    """Base of every error the user can act on; ``str()`` is a single line."""

    exit_code = EXIT_INPUT


class InputError(MonitorError):
    """Input handed to us (paths, files, arguments) is unusable."""


class WeightFormatError(InputError):
    """A weight file is corrupt, truncated, lies in its header, or would run code if loaded."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class FetchError(WeightFormatError):
    """A remote weight file could not be fetched: connection, timeout, an HTTP error status.

    Separate from its parent because a sweep treats it differently: a file that lies is skipped
    for good at that revision, one that could not be fetched is retried next sweep.
    """


class NoWeightsError(InputError):
    """A file or folder holds no weight file in a format we read."""

    def __init__(self, path: str | Path, problem: str = "no weight files found "
                 "(.safetensors, .bin, .pt, .pth, .gguf)") -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}")


class ConfigError(InputError):
    """A configuration key has a value we cannot use."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config {key}={value!r}: {allowed}")


class NotFoundError(InputError):
    """A model or event named by the user is not in the registry."""


class RegistryError(MonitorError):
    """The registry database cannot be opened or written (locked, corrupt, newer schema)."""


class SourceError(MonitorError):
    """A source we crawl failed: HTTP error, rate limit past our patience, timeout, bad answer.

    Raised by crawlers at their boundary (huggingface_hub and httpx2 errors translated); a sweep
    records it against the candidate or scope and goes on, so it only ends a run when the user
    asked for one thing (`monitor scan hf://...`).
    """

    def __init__(self, source: str, problem: str) -> None:
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}")
