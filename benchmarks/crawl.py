"""A Hub sweep at scale: does `monitor run-once` find every stolen copy, cheaply and quickly?

    .venv/bin/python benchmarks/crawl.py --repos 2000 --derivatives 20 --delay-ms 50 --seed 0

Targets (docs/BENCHMARKS.md): every derivative found and no false match; weight bytes read
≤ 1 % of what the candidates hold; ≥ 1,000 candidates triaged a minute on 2 cores; peak RSS
< 300 MB; a second sweep with nothing changed reads 0 weight bytes.

The local Hub (monitor.sandbox.hub, with `delay_s` added to every request) runs in a process of
its own, so its CPU time and memory are not the monitor's; it builds its repos from a small
picklable `Population` and answers "stats" over a pipe (the CDN's body bytes are the weight
bytes the monitor read). The owned model is a LLaMA-shaped F16 checkpoint; its derivatives are
real bytes (monitor.derive, benchmarks.zoo.camouflage and .quantize on the real tensors); every
other candidate is a `SyntheticSafetensors` generated on demand — most of the owned
architecture (they pass the header prefilter and cost range reads), some of other widths and
sizes up to a few GB, plus .bin-only, .gguf-only and weightless repos. `monitor register` and
`monitor --json run-once` run as child processes of the installed entry point; peak RSS is
the run-once child's ru_maxrss from wait4().
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.sandbox.blobs import SizedBlob, SyntheticSafetensors, llama_layout  # noqa: E402

OWNED_NAME = "owned"
OWNED_REPO = "acme-ai/owned"  # what some derivatives name as base_model


@dataclass(frozen=True)
class Arch:
    """A LLaMA-shaped checkpoint's sizes (kv < hidden: grouped-query attention)."""

    vocab: int
    hidden: int
    ffn: int
    layers: int
    heads: int = 8
    kv: int | None = None
    dtype: str = "F16"

    def layout(self) -> list[tuple[str, str, tuple[int, ...]]]:
        return llama_layout(vocab=self.vocab, hidden=self.hidden, ffn=self.ffn, layers=self.layers,
                            dtype=self.dtype, kv_hidden=self.kv)


OWNED = Arch(vocab=16000, hidden=512, ffn=1376, layers=6)  # 35M parameters, 71 MB in F16
OTHERS = (  # widths the prefilter rejects from the header, tens of MB to a few GB
    Arch(16000, 384, 1024, 6), Arch(32000, 768, 2048, 12), Arch(32000, 1024, 2816, 24),
    Arch(32000, 2048, 5632, 22, heads=32, kv=256))

# Derivative recipes: name -> (steps applied to the owned state dict in order, packaging).
# "bytes": the owned file itself; "single": model.safetensors; "shards": names prefixed with
# "base.", two shards plus model.safetensors.index.json.
RECIPES: dict[str, tuple[tuple[str, ...], str]] = {
    "exact re-upload": ((), "bytes"), "bf16": (("bf16",), "single"),
    "renamed + 2 shards": ((), "shards"), "noise 1 %": (("noise 1 %",), "single"),
    "noise 5 %": (("noise 5 %",), "single"), "int8 round trip": (("int8",), "single"),
    "prune 50 %": (("prune 50 %",), "single"), "permute residual": (("permute residual",), "single"),
    "rotate residual": (("rotate residual",), "single"), "permute MLP": (("permute MLP",), "single"),
    "scale MLP ×4": (("scale MLP ×4",), "single"), "permute heads": (("permute heads",), "single"),
    "permute MLP + noise 2 %": (("permute MLP", "noise 2 %"), "single"),
    "rotate residual + bf16": (("rotate residual", "bf16"), "single"),
    "int8 + permute residual": (("int8", "permute residual"), "single"),
    "prune 50 % + permute heads": (("prune 50 %", "permute heads"), "single"),
    "scale MLP ×4 + 2 shards": (("scale MLP ×4",), "shards"),
    "noise 3 % + renamed + 2 shards": (("noise 3 %",), "shards"),
    "permute residual + MLP + bf16": (("permute residual", "permute MLP", "bf16"), "single"),
    "rotate residual + noise 1 %": (("rotate residual", "noise 1 %"), "single"),
}


@dataclass(frozen=True)
class RepoSpec:
    """One candidate repo, small enough to pickle; the Hub process builds its files."""

    repo_id: str
    kind: str  # "derivative", "synthetic", "bin", "gguf" or "no-weights"
    seed: int
    age_s: int  # last modified this long before the Hub starts
    arch: Arch | None = None  # synthetic only
    recipe: str | None = None  # derivative only: a key of RECIPES
    base_model: str | None = None


@dataclass(frozen=True)
class Population:
    owned: Arch
    owned_seed: int
    repos: tuple[RepoSpec, ...]
    delay_s: float = 0.0
    page_size: int = 100

    @property
    def expected(self) -> set[str]:
        return {f"hf://{r.repo_id}" for r in self.repos if r.kind == "derivative"}


def population(repos: int, derivatives: int, seed: int, *, owned: Arch = OWNED,
               others: tuple[Arch, ...] = OTHERS) -> Population:
    """`repos` candidates, `derivatives` of them copies of the owned model, the same for a seed.

    Of the rest: ~2 % .bin-only, ~1 % .gguf-only, ~2 % without weights; of the safetensors
    ones, 55 % exactly the owned architecture (F16 or BF16), 10 % the same widths with 2-4× the
    layers, 35 % another width.
    """
    rng = random.Random(seed)
    kinds = ["derivative"] * derivatives
    n_other = repos - derivatives
    odd = [("bin", 0.02), ("gguf", 0.01), ("no-weights", 0.02)]
    for kind, share in odd:
        kinds += [kind] * max(1 if n_other >= 10 else 0, round(share * n_other))
    kinds += ["synthetic"] * (repos - len(kinds))
    rng.shuffle(kinds)
    recipes = list(RECIPES)
    specs, d = [], 0
    for i, kind in enumerate(kinds):
        arch, recipe, base = None, None, None
        if kind == "derivative":
            recipe = recipes[d % len(recipes)]
            base = OWNED_REPO if d % 2 == 0 else None
            d += 1
        elif kind == "synthetic":
            roll = rng.random()
            if roll < 0.55:
                arch = Arch(owned.vocab, owned.hidden, owned.ffn, owned.layers, owned.heads, owned.kv,
                            rng.choice(["F16", "BF16"]))
            elif roll < 0.65:
                arch = Arch(owned.vocab, owned.hidden, owned.ffn, owned.layers * rng.choice([2, 4]),
                            owned.heads, owned.kv, owned.dtype)
            else:
                arch = rng.choice(others)
        user = f"user{rng.randrange(10_000):04d}"
        specs.append(RepoSpec(f"{user}/model-{i:05d}", kind, rng.randrange(2**31),
                              rng.randrange(3 * 86400), arch, recipe, base))
    return Population(owned, seed, tuple(specs))


# --- the owned model and its derivatives (built with torch, in the Hub process) -------------------


def owned_blob(pop: Population) -> SyntheticSafetensors:
    """The owned checkpoint: N(0, 0.02) matrices and ~1 gains, materialised to real bytes."""
    return SyntheticSafetensors(pop.owned.layout(), pop.owned_seed, {"owner": OWNED_NAME})


Files = dict[str, bytes]


def _steps() -> dict[str, Callable]:
    """The steps RECIPES name: (state dict, LMConfig, seed) -> state dict (imports torch)."""
    import torch

    from benchmarks.zoo import camouflage as cf
    from benchmarks.zoo.quantize import prune_magnitude
    from monitor import derive

    def noise(relative: float) -> Callable:
        return lambda sd, cfg, s: derive.perturb(sd, relative, seed=s)

    return {
        "bf16": lambda sd, cfg, s: derive.cast(sd, torch.bfloat16),
        "noise 1 %": noise(0.01), "noise 2 %": noise(0.02), "noise 3 %": noise(0.03),
        "noise 5 %": noise(0.05),
        "int8": lambda sd, cfg, s: derive.quantize_int8(sd),
        "prune 50 %": lambda sd, cfg, s: prune_magnitude(sd, 0.5),
        "permute residual": lambda sd, cfg, s: cf.permute_residual(sd, s),
        "rotate residual": lambda sd, cfg, s: cf.rotate_residual(sd, s),
        "permute MLP": lambda sd, cfg, s: cf.permute_mlp(sd, s),
        "scale MLP ×4": lambda sd, cfg, s: cf.scale_mlp(sd, 4.0),
        "permute heads": lambda sd, cfg, s: cf.permute_heads(sd, cfg, s),
    }


def _single(sd) -> Files:
    from safetensors.torch import save
    return {"model.safetensors": save({k: v.contiguous() for k, v in sd.items()})}


def _sharded(sd) -> Files:
    """Names prefixed "base.", two shards and model.safetensors.index.json (transformers' layout)."""
    from monitor import derive
    with tempfile.TemporaryDirectory() as tmp:
        folder = derive.save_sharded(derive.rename(sd, "base."), Path(tmp), 2)
        return {p.name: p.read_bytes() for p in folder.iterdir()}


def owned_state_dict(pop: Population):
    from safetensors.torch import load
    blob = owned_blob(pop)
    return load(blob.read(0, blob.size))


def lm_config(arch: Arch):
    from benchmarks.zoo.llama import LMConfig
    return LMConfig(vocab=arch.vocab, d=arch.hidden, n_heads=arch.heads, ffn=arch.ffn, n_layers=arch.layers)


def derivative_files(pop: Population, repo: RepoSpec, sd=None) -> Files:
    """The weight files a thief applying `repo.recipe` to the owned model would publish."""
    steps, packaging = RECIPES[repo.recipe]
    if packaging == "bytes":
        blob = owned_blob(pop)
        return {"model.safetensors": blob.read(0, blob.size)}
    sd = sd if sd is not None else owned_state_dict(pop)
    functions, cfg = _steps(), lm_config(pop.owned)
    for step in steps:
        sd = functions[step](sd, cfg, repo.seed % 10_000)
    return _single(sd) if packaging == "single" else _sharded(sd)


def candidate_files(repo: RepoSpec):
    """Files of a non-derivative repo: lazy blobs, nothing generated until it is read."""
    config = json.dumps({"architectures": ["LlamaForCausalLM"], "seed": repo.seed}).encode()
    size = 50_000_000 + repo.seed % 400_000_000
    if repo.kind == "synthetic":
        return {"config.json": config, "model.safetensors": SyntheticSafetensors(repo.arch.layout(), repo.seed)}
    if repo.kind == "bin":
        return {"config.json": config, "pytorch_model.bin": SizedBlob(size, b"\x00", b"PK\x03\x04")}
    if repo.kind == "gguf":
        return {"model-q4_0.gguf": SizedBlob(size, b"\x00", b"GGUF\x03\x00\x00\x00")}
    return {"config.json": config, "README.md": b"# a model card and nothing else\n"}


# --- the Hub process ---------------------------------------------------------------------------------


def _is_weight(name: str) -> bool:
    return name.endswith((".safetensors", ".bin", ".gguf"))


def serve(pop: Population, conn) -> None:
    """Entry point of the Hub process: build, report, then answer commands until "stop"."""
    from monitor.sandbox.hub import HubServer

    hub = HubServer(page_size=pop.page_size).start()
    now = datetime.now(timezone.utc)
    held = {"all": 0, "owned-architecture": 0, "derivatives": 0}
    owned_shapes = {(n, s) for n, _, s in pop.owned.layout()}
    sd = owned_state_dict(pop) if any(r.kind == "derivative" for r in pop.repos) else None
    for repo in pop.repos:
        if repo.kind == "derivative":
            files = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}',
                     **derivative_files(pop, repo, sd)}
        else:
            files = candidate_files(repo)
        hub.add_model(repo.repo_id, files, base_model=repo.base_model,
                      last_modified=now - timedelta(seconds=repo.age_s))
        weight = sum(len(v) if isinstance(v, bytes) else v.size for k, v in files.items() if _is_weight(k))
        held["all"] += weight
        if repo.kind == "derivative":
            held["derivatives"] += weight
        elif repo.arch is not None and owned_shapes <= {(n, s) for n, _, s in repo.arch.layout()}:
            held["owned-architecture"] += weight
    del sd
    hub.delay_s = pop.delay_s  # building is not timed; serving is
    conn.send({"url": hub.url, "held": held})
    while True:
        command = conn.recv()
        if command == "stats":
            log = hub.requests
            conn.send({"cdn_bytes": sum(r.bytes_served for r in log if r.server == "cdn"),
                       "requests": {s: sum(r.server == s for r in log) for s in ("hub", "cdn")}})
        elif command == "clear":
            hub.clear_log()
            conn.send("ok")
        else:
            hub.stop()
            conn.send("stopped")
            return


@dataclass
class HubProcess:
    """The Hub in a spawned process; `with HubProcess(pop) as hub: hub.url, hub.stats()`."""

    pop: Population
    url: str = ""
    held: dict[str, int] = field(default_factory=dict)

    def __enter__(self) -> HubProcess:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=serve, args=(self.pop, child), daemon=True)
        self._proc.start()
        ready = self._conn.recv()
        self.url, self.held = ready["url"], ready["held"]
        return self

    def ask(self, command: str):
        self._conn.send(command)
        return self._conn.recv()

    def stats(self) -> dict:
        return self.ask("stats")

    def __exit__(self, *exc) -> None:
        try:
            self.ask("stop")
        finally:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()


# --- the monitor side ----------------------------------------------------------------------------------

CONFIG = """\
[crawlers.hf_hub]
concurrency = {concurrency}
timeout_s = 30
[crawlers.hf_hub.options]
endpoint = "{endpoint}"
[crawlers.hf_hub.scopes.recent]
recent = true
"""


def monitor_env(home: Path) -> dict[str, str]:
    """The child's environment: loopback only, no token, no telemetry, a private HF cache."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "MONITOR_DB", "MONITOR_CONFIG")}
    env.update(HF_HOME=str(home / "hf"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


@dataclass(frozen=True)
class Run:
    """One `monitor --json run-once`: its exit, time, peak RSS, output and what the CDN served."""

    exit: int
    seconds: float
    peak_rss: int
    stdout: str
    stderr: str
    cdn_bytes: int

    @property
    def report(self) -> dict | None:
        """The JSON summary, or None when the output is not the run-once contract."""
        try:
            doc = json.loads(self.stdout)
        except ValueError:
            return None
        if not (isinstance(doc, dict) and {"runs", "totals", "matches"} <= doc.keys()):
            return None
        return doc


def run_child(cmd: list[str], env: dict[str, str], work: Path) -> tuple[int, float, int, str, str]:
    """(exit, seconds, peak RSS bytes, stdout, stderr); output goes to files so wait4 reaps it."""
    out, err = work / "stdout", work / "stderr"
    start = time.monotonic()
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (proc.returncode, time.monotonic() - start, usage.ru_maxrss * 1024,
            out.read_text(errors="replace"), err.read_text(errors="replace"))


class Bench:
    """A registry with the owned model in it, and run-once against a running HubProcess."""

    def __init__(self, pop: Population, hub: HubProcess, work: Path, concurrency: int = 8,
                 monitor: list[str] | None = None) -> None:
        self.pop, self.hub, self.work = pop, hub, work
        self.monitor = monitor or [str(Path(sys.executable).with_name("monitor"))]
        self.env = monitor_env(work)
        self.db = work / "registry.db"
        self.config = work / "monitor.toml"
        self.config.write_text(CONFIG.format(concurrency=concurrency, endpoint=hub.url))

    def register(self) -> None:
        path = self.work / "owned" / "model.safetensors"
        path.parent.mkdir(exist_ok=True)
        blob = owned_blob(self.pop)
        path.write_bytes(blob.read(0, blob.size))
        code, _, _, out, err = run_child([*self.monitor, "--db", str(self.db), "register", str(path),
                                          "--name", OWNED_NAME], self.env, self.work)
        if code != 0:
            raise RuntimeError(f"monitor register failed ({code}): {err.strip() or out.strip()}")

    def run_once(self) -> Run:
        before = self.hub.stats()["cdn_bytes"]
        code, seconds, rss, out, err = run_child(
            [*self.monitor, "--db", str(self.db), "--config", str(self.config), "--json", "run-once"],
            self.env, self.work)
        return Run(code, seconds, rss, out, err, self.hub.stats()["cdn_bytes"] - before)


def summarise(pop: Population, held: dict[str, int], first: Run, second: Run) -> dict:
    """Everything the table and the JSON line show, and whether each target is met."""
    report = first.report or {}
    totals = report.get("totals", {})
    found = {m["location"] for m in report.get("matches", []) if m.get("model") == OWNED_NAME}
    verdicts = {m["location"]: m.get("verdict") for m in report.get("matches", [])}
    missed = sorted(pop.expected - found)
    false = sorted({m["location"] for m in report.get("matches", [])} - pop.expected)
    seen = totals.get("seen", 0)
    per_min = seen / (first.seconds / 60) if first.seconds else 0.0
    by_recipe = {r.recipe: verdicts.get(f"hf://{r.repo_id}", "missed")
                 for r in pop.repos if r.kind == "derivative"}
    return {
        "repos": len(pop.repos), "derivatives": len(pop.expected), "delay_ms": round(pop.delay_s * 1000),
        "seen": seen, "fingerprinted": totals.get("fingerprinted"), "skipped": totals.get("skipped"),
        "failed": totals.get("failed"), "found": len(pop.expected) - len(missed), "missed": missed,
        "false_matches": false, "verdicts": by_recipe,
        "held_bytes": held["all"], "held_owned_arch_bytes": held["owned-architecture"],
        "read_bytes": first.cdn_bytes, "read_share": first.cdn_bytes / held["all"] if held["all"] else 0.0,
        "seconds": round(first.seconds, 1), "candidates_per_min": round(per_min),
        "peak_rss": first.peak_rss, "second_read_bytes": second.cdn_bytes,
        "second_seconds": round(second.seconds, 1), "second_peak_rss": second.peak_rss,
        "exit": [first.exit, second.exit],
        "ok": {"all found, no false match": not missed and not false,
               "read ≤ 1 % of held": first.cdn_bytes <= 0.01 * held["all"],
               "≥ 1,000 candidates/min": per_min >= 1000,
               "peak RSS < 300 MB": first.peak_rss < 300e6 and second.peak_rss < 300e6,
               "second sweep reads 0 bytes": second.cdn_bytes == 0},
    }


def table(s: dict) -> str:
    def mark(key: str) -> str:
        return "met" if s["ok"][key] else "**missed**"

    rows = [
        ("derivatives found", f"{s['found']} / {s['derivatives']}, false matches {len(s['false_matches'])}",
         "all, none", mark("all found, no false match")),
        ("weight bytes read", f"{s['read_bytes'] / 1e9:.2f} GB of {s['held_bytes'] / 1e9:,.0f} GB held "
         f"({100 * s['read_share']:.3f} %)", "≤ 1 %", mark("read ≤ 1 % of held")),
        ("candidates triaged", f"{s['seen']} in {s['seconds']} s = {s['candidates_per_min']:,}/min",
         "≥ 1,000/min", mark("≥ 1,000 candidates/min")),
        ("peak RSS (run-once)", f"{s['peak_rss'] / 1e6:.0f} MB (second sweep {s['second_peak_rss'] / 1e6:.0f} MB)",
         "< 300 MB", mark("peak RSS < 300 MB")),
        ("second sweep, nothing changed", f"{s['second_read_bytes']} weight bytes in {s['second_seconds']} s",
         "0 bytes", mark("second sweep reads 0 bytes")),
    ]
    lines = ["| measure | result | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "| derivative | verdict |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["verdicts"].items()]
    return "\n".join(lines)


def bench(pop: Population, work: Path, concurrency: int = 8,
          monitor: list[str] | None = None) -> tuple[Run, Run, dict]:
    with HubProcess(pop) as hub:
        b = Bench(pop, hub, work, concurrency, monitor)
        b.register()
        first = b.run_once()
        second = b.run_once()
        return first, second, summarise(pop, hub.held, first, second)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repos", type=int, default=2000)
    ap.add_argument("--derivatives", type=int, default=20)
    ap.add_argument("--delay-ms", type=float, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--monitor", help="command to run instead of the installed `monitor` (another build)")
    args = ap.parse_args()
    pop = population(args.repos, args.derivatives, args.seed)
    pop = Population(pop.owned, pop.owned_seed, pop.repos, delay_s=args.delay_ms / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        first, second, s = bench(pop, Path(tmp), args.concurrency,
                                 shlex.split(args.monitor) if args.monitor else None)
    for run in (first, second):
        if run.report is None:
            print(f"run-once did not print the JSON summary (exit {run.exit}):\n{run.stderr[-2000:]}",
                  file=sys.stderr)
            return 2
    print(table(s))
    print(json.dumps(s))
    return 0 if all(s["ok"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
