"""Peak memory of `monitor register` on a large model (target: < 512 MB RSS for a 2 GB model).

Writes a synthetic safetensors model of --gib GiB (4096x4096 fp32 matrices, 64 MiB each, plus
norms), streamed to disk so the generator itself stays small, then runs the installed `monitor`
entry point in a child process and reads the child's peak RSS from wait4(). Prints one markdown
table row per run, as recorded in docs/BENCHMARKS.md.

    .venv/bin/python benchmarks/register_memory.py --gib 2

The .bin row loads through torch.load(weights_only=True, mmap=True), tensor by tensor.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MATRIX = (4096, 4096)


def write_model(path: Path, gib: float, seed: int = 0) -> int:
    """A safetensors file of about `gib` GiB, written one tensor at a time."""
    n_mats = max(1, round(gib * (1 << 30) / (MATRIX[0] * MATRIX[1] * 4)))
    header, offset, layout = {}, 0, []
    for i in range(n_mats):
        for name, shape in ((f"layers.{i}.w", MATRIX), (f"layers.{i}.norm", (MATRIX[1],))):
            size = int(np.prod(shape)) * 4
            header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
            layout.append(shape)
            offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for shape in layout:
            for _ in range(shape[0] // 1024 if len(shape) == 2 else 1):
                rows = (1024, shape[1]) if len(shape) == 2 else shape
                f.write(rng.standard_normal(rows, dtype=np.float32).tobytes())
    return path.stat().st_size


def write_bin(source: Path, dest: Path) -> None:
    """The same weights as a PyTorch zip checkpoint, converted in a child process of its own."""
    subprocess.run([sys.executable, "-c", "import sys, torch; from safetensors.torch import load_file;"
                    "torch.save(load_file(sys.argv[1]), sys.argv[2])", str(source), str(dest)], check=True)


def peak_rss_of(cmd: list[str]) -> tuple[int, float, int]:
    """(exit code, seconds, peak RSS in bytes) of a child process."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.monotonic() - start, usage.ru_maxrss * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--limit-mb", type=float, default=512)
    args = ap.parse_args()
    monitor = str(Path(sys.executable).with_name("monitor"))
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.safetensors"
        size = write_model(model, args.gib)
        binary = Path(tmp) / "pytorch_model.bin"
        write_bin(model, binary)
        rows = []
        for label, cmd in (
            ("register", [monitor, "--db", f"{tmp}/r.db", "register", str(model), "--name", "big"]),
            ("scan (exact copy)", [monitor, "--db", f"{tmp}/r.db", "scan", str(model)]),
            ("register (.bin)", [monitor, "--db", f"{tmp}/b.db", "register", str(binary), "--name", "b"]),
        ):
            code, secs, rss = peak_rss_of(cmd)
            rows.append((label, code, secs, rss))
    print("| command | model size | exit | wall time | throughput | peak RSS | limit |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for label, code, secs, rss in rows:
        ok &= rss < args.limit_mb * 1e6 and code in (0, 1)
        print(f"| `monitor {label}` | {size / 1e9:.2f} GB | {code} | {secs:.1f} s | "
              f"{size / secs / 1e6:.0f} MB/s | {rss / 1e6:.0f} MB | {args.limit_mb:.0f} MB |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
