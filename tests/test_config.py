"""Config: every key documented, env overrides, errors that name the key, secrets kept secret."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from crawlers import base
from monitor import config
from monitor.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "monitor.example.toml"


def _documented_keys(text: str) -> set[str]:
    """Keys of the example, counting commented-out `# key = value` lines as documented."""
    keys, section = set(), ""
    for raw in text.splitlines():
        line = raw.lstrip("# ").strip()
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif "=" in line and line.split("=")[0].strip().isidentifier() and section:
            keys.add(f"{section}.{line.split('=')[0].strip()}")
    return keys


def test_every_setting_is_documented_in_the_example():
    expected = {f"{s}.{k}" for s, keys in config._fields().items() for k in keys}
    documented = _documented_keys(EXAMPLE.read_text())
    assert {k for k in documented if not k.startswith("crawlers.")} == expected


@pytest.mark.parametrize("name", sorted(base.available()))
def test_every_builtin_crawler_key_is_documented_in_the_example(name):
    """[crawlers.<name>], its options and one scope table per crawler, every key shown."""
    cls = base.load(name)
    documented = _documented_keys(EXAMPLE.read_text())
    scopes = {k.split(".")[3] for k in documented if k.startswith(f"crawlers.{name}.scopes.")}
    assert scopes, f"no [crawlers.{name}.scopes.<scope>] example"
    expected = ({f"crawlers.{name}.{k}" for k in config.CrawlerSettings.model_fields
                 if k not in ("options", "scopes")}
                | {f"crawlers.{name}.options.{k}" for k in cls.Options.model_fields})
    scoped = {k.split(".", 4)[4] for k in documented if k.startswith(f"crawlers.{name}.scopes.")}
    assert expected <= documented
    assert set(cls.Scope.model_fields) <= scoped


def test_example_values_are_the_defaults():
    loaded = config.load(EXAMPLE, env={})
    assert loaded == config.Settings()
    assert tomllib.loads(EXAMPLE.read_text())  # valid TOML


def test_env_overrides_file_and_flag_overrides_env(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('[match]\np_value_threshold = 1e-7\n[registry]\npath = "/from/file.db"\n')
    s = config.load(f, env={"MONITOR_MATCH_P_VALUE_THRESHOLD": "1e-8", "MONITOR_DB": "/from/env.db"})
    assert s.match.p_value_threshold == 1e-8 and s.db_path == Path("/from/env.db")
    assert config.load(f, env={"MONITOR_DB": "/e.db"}, db=Path("/flag.db")).db_path == Path("/flag.db")


def test_default_db_is_under_xdg_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert config.load(env={}).db_path == tmp_path / "provenance-monitor" / "registry.db"


@pytest.mark.parametrize("toml,key", [
    ("[match]\np_value_threshold = 3\n", "match.p_value_threshold"),
    ("[match]\np_value_treshold = 0.5\n", "match.p_value_treshold"),
    ("[log]\nlevel = 'loud'\n", "log.level"),
    ("[nonsense]\nx = 1\n", "nonsense"),
])
def test_bad_values_name_the_key_and_value(tmp_path, toml, key):
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        config.load(f, env={})
    assert e.value.key == key and "\n" not in str(e.value)


def test_bad_env_value_is_an_error():
    with pytest.raises(ConfigError, match="repackaged_coverage"):
        config.load(env={"MONITOR_MATCH_REPACKAGED_COVERAGE": "all"})


def test_unreadable_or_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml", env={})
    (tmp_path / "x.toml").write_text("[[[")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(tmp_path / "x.toml", env={})


def test_secrets_from_env_or_file_never_print(tmp_path):
    (tmp_path / "tok").write_text("s3cret-from-file\n")
    from_file = config.read_secret("HF_TOKEN", {"HF_TOKEN_FILE": str(tmp_path / "tok")})
    assert from_file.get_secret_value() == "s3cret-from-file"
    assert "s3cret" not in repr(from_file) and "s3cret" not in str(from_file)
    assert config.read_secret("HF_TOKEN", {"HF_TOKEN": "abc"}).get_secret_value() == "abc"
    assert config.read_secret("HF_TOKEN", {}) is None


def test_missing_systemd_credentials_and_empty_secret_files_mean_not_set(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "empty").write_text("\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert config.read_secret("HF_TOKEN", {**env, "HF_TOKEN_FILE": str(creds / "hf_token")}) is None
    assert config.read_secret("HF_TOKEN", {**env, "HF_TOKEN_FILE": str(creds / "empty")}) is None
    with pytest.raises(ConfigError, match="HF_TOKEN_FILE"):  # a typo outside the credentials dir
        config.read_secret("HF_TOKEN", {"HF_TOKEN_FILE": str(tmp_path / "nope")})


def test_severity_and_repeats_lie_over_the_defaults_but_routes_are_the_whole_table(tmp_path):
    toml = tmp_path / "m.toml"
    toml.write_text('[alerts]\nrepeat_every_h = { exact = 6.0 }\nseverity = { derivative = "info" }\n'
                    'routes = { exact = ["log"] }\n')
    alerts = config.load(toml, env={}).alerts
    assert alerts.repeat_every_h["exact"] == 6.0 and alerts.repeat_every_h["source_unreachable"] == 24.0
    assert alerts.severity["derivative"] == "info" and alerts.severity["exact"] == "critical"
    assert alerts.routes == {"exact": ["log"]}


def test_every_verdict_and_condition_kind_can_be_routed():
    from typing import get_args

    from monitor.records import ConditionKind, Verdict
    kinds = {v.value for v in Verdict if v is not Verdict.NONE} | {k.value for k in ConditionKind}
    assert set(get_args(config.AlertKind)) == kinds
    defaults = config.AlertSettings()
    assert set(defaults.severity) == set(defaults.repeat_every_h) == set(defaults.routes) == kinds
