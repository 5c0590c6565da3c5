"""Settings: one TOML file plus MONITOR_* environment overrides, validated once at start.

Precedence: defaults < TOML file (--config, MONITOR_CONFIG, or the XDG config file if present)
< environment (MONITOR_<SECTION>_<KEY>, e.g. MONITOR_MATCH_P_VALUE_THRESHOLD) < command-line
flags (--db). Unknown keys are errors, so a typo never silently falls back to a default. Every key
is documented in config/monitor.example.toml (a test keeps the two in step).

Secrets (tokens, webhook URLs, routing keys) are never config-file values: `read_secret` takes
them from the environment or from a file named by `<NAME>_FILE` (systemd LoadCredential,
Kubernetes Secret volumes), and they are held as SecretStr so they never print.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from monitor.errors import ConfigError

APP = "provenance-monitor"


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / APP


def default_db_path() -> Path:
    """$XDG_DATA_HOME/provenance-monitor/registry.db (~/.local/share/... by default)."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "registry.db"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrySettings(_Section):
    path: Path | None = None  # None: default_db_path()
    busy_timeout_s: float = Field(5.0, gt=0, le=600)


class MatchSettings(_Section):
    repackaged_coverage: float = Field(0.95, gt=0, le=1)
    p_value_threshold: float = Field(1e-6, gt=0, lt=1)


class ScanSettings(_Section):
    record_events: bool = True


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "warning"
    format: Literal["text", "json"] = "text"


def _crontab(value: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as e:
        raise ValueError(f"not a crontab expression ({e})") from None
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_seconds(value: str) -> int | None:
    """Seconds for "every 30m" / "every 6h" / "every 1d" (s, m, h, d), else None."""
    words = value.split()
    if len(words) == 2 and words[0] == "every" and words[1][:-1].isdigit() \
            and words[1][-1] in _UNITS and int(words[1][:-1]) > 0:
        return int(words[1][:-1]) * _UNITS[words[1][-1]]
    return None


def _schedule(value: str) -> str:
    """A crontab, or an interval such as "every 6h"."""
    if value.strip().startswith("every"):
        if interval_seconds(value.strip()) is None:
            raise ValueError("an interval is written 'every <N><s|m|h|d>', e.g. 'every 6h'")
        return value.strip()
    return _crontab(value)


class DaemonSettings(_Section):
    listen: str = Field("127.0.0.1:9108", pattern=r"^[^:\s]+:\d{1,5}$")  # health and metrics
    misfire_grace_s: int = Field(3600, ge=1)  # a run missed by less than this still happens once
    jitter_s: int = Field(60, ge=0)  # random delay per run, so many monitors don't hit at once
    stop_timeout_s: float = Field(30.0, gt=0, le=600)  # SIGTERM → in-flight work must end by then
    deliver_every_s: int = Field(30, ge=1, le=3600)  # how often the alert outbox is drained
    retention_schedule: str = "17 3 * * 0"  # crontab (UTC) of the retention/vacuum job
    candidate_retention_days: int = Field(180, ge=1)  # forget no-match/skipped candidates after

    _crontab = field_validator("retention_schedule")(lambda cls, v: _crontab(v))


class CrawlerSettings(_Section):
    """One [crawlers.<name>] table. `options` and each scope are the crawler's own keys, checked
    by the crawler's `Options` and `Scope` models when it is built (crawlers.base.Crawler)."""

    enabled: bool = True
    schedule: str = "0 */6 * * *"  # crontab (UTC) or "every 6h", for the daemon
    concurrency: int = Field(8, ge=1, le=64)
    timeout_s: float = Field(30.0, gt=0, le=600)
    options: dict[str, Any] = {}
    scopes: dict[str, dict[str, Any]] = {}

    _schedule = field_validator("schedule")(lambda cls, v: _schedule(v))


# What routes, severities and repeat intervals are keyed by: a detection's verdict, or the kind
# of a condition of the monitor itself (monitor.conditions).
AlertKind = Literal["exact", "repackaged", "derivative", "source_unreachable", "scope_failing"]
Channel = Literal["slack", "pagerduty", "log"]


_SEVERITY = {"exact": "critical", "repackaged": "critical", "derivative": "warning",
             "source_unreachable": "error", "scope_failing": "warning"}
_REPEAT_EVERY_H = {"exact": 24.0, "repackaged": 24.0, "derivative": 72.0,
                   "source_unreachable": 24.0, "scope_failing": 0.0}


class AlertSettings(_Section):
    """[alerts]: where each kind of alert (a verdict, a condition) is sent, how hard, how often
    again, and when a condition fires; secrets come from read_secret (SLACK_WEBHOOK_URL or
    SLACK_BOT_TOKEN, PAGERDUTY_ROUTING_KEY)."""

    # The whole routing table: a kind left out is sent nowhere (so a route can be switched off).
    routes: dict[AlertKind, list[Channel]] = {
        "exact": ["pagerduty", "slack"], "repackaged": ["pagerduty", "slack"],
        "derivative": ["slack"], "source_unreachable": ["slack"], "scope_failing": ["slack"]}
    # Per kind, over the defaults: naming one kind leaves the others as they were.
    severity: dict[AlertKind, Literal["critical", "error", "warning", "info"]] = _SEVERITY
    # Alertmanager's repeat_interval: hours before an open, unacknowledged alert is sent again.
    repeat_every_h: dict[AlertKind, float] = _REPEAT_EVERY_H
    # Alertmanager's `for`: failing sweeps in a row before a condition fires.
    fire_after_runs: int = Field(2, ge=1, le=1000)
    slack_channel: str = "#security-alerts"
    slack_api_url: str = "https://slack.com/api/"
    pagerduty_url: str = "https://events.pagerduty.com"
    pagerduty_ca_file: Path | None = None
    timeout_s: float = Field(10.0, gt=0, le=300)
    retry_base_s: float = Field(30.0, gt=0, le=86400)
    retry_max_s: float = Field(3600.0, gt=0, le=7 * 86400)

    @field_validator("repeat_every_h")
    @classmethod
    def _hours(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, hours in value.items():
            if not 0 <= hours <= 24 * 365:
                raise ValueError(f"{kind}: hours must be between 0 (never) and 8760")
        return {**_REPEAT_EVERY_H, **value}

    @field_validator("severity")
    @classmethod
    def _over_defaults(cls, value: dict[str, str]) -> dict[str, str]:
        return {**_SEVERITY, **value}

    def repeat_intervals(self) -> dict[str, timedelta]:
        return {kind: timedelta(hours=h) for kind, h in self.repeat_every_h.items()}

    @field_validator("pagerduty_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("the PagerDuty Events API is only spoken over https://")
        return value


class Settings(_Section):
    registry: RegistrySettings = RegistrySettings()
    match: MatchSettings = MatchSettings()
    scan: ScanSettings = ScanSettings()
    log: LogSettings = LogSettings()
    daemon: DaemonSettings = DaemonSettings()
    alerts: AlertSettings = AlertSettings()
    crawlers: dict[str, CrawlerSettings] = {}  # by crawler name (its entry point)

    @property
    def db_path(self) -> Path:
        return self.registry.path or default_db_path()


def load(config_path: Path | None = None, env: dict[str, str] | None = None,
         db: Path | None = None) -> Settings:
    """Validated settings; ConfigError names the key, the bad value and what is allowed."""
    env = dict(os.environ if env is None else env)
    data: dict[str, Any] = {}
    explicit = config_path or (Path(env["MONITOR_CONFIG"]) if env.get("MONITOR_CONFIG") else None)
    path = explicit or _xdg("XDG_CONFIG_HOME", ".config") / "monitor.toml"
    if explicit or path.is_file():
        data = _read_toml(path)
    for section, fields in _fields().items():
        for key in fields:
            value = env.get(f"MONITOR_{section}_{key}".upper())
            if value is not None:
                data.setdefault(section, {})[key] = value
    if env.get("MONITOR_DB"):
        data.setdefault("registry", {})["path"] = env["MONITOR_DB"]
    if db is not None:
        data.setdefault("registry", {})["path"] = str(db)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(key, err["input"], "unknown key (see config/monitor.example.toml)") from None
        raise ConfigError(key, err["input"], err["msg"]) from None


def _fields() -> dict[str, list[str]]:
    """Sections with fixed keys (what MONITOR_<SECTION>_<KEY> can override); not [crawlers]."""
    return {name: list(f.annotation.model_fields)  # type: ignore[union-attr]
            for name, f in Settings.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config", str(path), f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--config", str(path), f"not valid TOML: {e}") from None


def read_secret(name: str, env: dict[str, str] | None = None) -> SecretStr | None:
    """A secret from $NAME, or from the file named by $NAME_FILE; None when neither is set.

    An empty file, or a file missing from systemd's $CREDENTIALS_DIRECTORY (LoadCredential skips
    a credential whose source is absent), means "not set": the shipped units name every
    credential and an operator provides only those they use. Any other unreadable file is an
    error naming it.
    """
    env = dict(os.environ if env is None else env)
    if env.get(name):
        return SecretStr(env[name])
    if env.get(f"{name}_FILE"):
        path = Path(env[f"{name}_FILE"])
        credentials = env.get("CREDENTIALS_DIRECTORY")
        if credentials and path.parent == Path(credentials) and not path.exists():
            return None
        try:
            value = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{name}_FILE", str(path), f"cannot read: {e.strerror}") from None
        return SecretStr(value) if value else None
    return None
