"""What the robust fingerprint costs a suspect: bytes planned and seconds once they are read.

    .venv/bin/python benchmarks/fingerprint_cost.py

1. A LLaMA-7B header built from its config (32 layers, d 4096, ffn 11008, vocab 32000, fp16):
   the byte-range plan's size — no download, no weights.
2. A ~100M-parameter LLaMA-shaped safetensors file written here (random weights): the owned
   fingerprint once, then the suspect path — fetch the planned ranges into memory, fingerprint
   from them (targets: ≤ 1 % of bytes; ≤ 2 s on 2 cores once read), compare.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from monitor.fingerprint import units  # noqa: E402
from monitor.formats.base import LocalFile  # noqa: E402
from monitor.formats.ranges import PrefetchedSource, coalesce  # noqa: E402
from monitor.formats.safetensors import SafetensorsReader  # noqa: E402
from monitor.records import TensorInfo  # noqa: E402


def llama_shapes(layers: int, d: int, ffn: int, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    out = [("model.embed_tokens.weight", (vocab, d))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,))]
        out += [(p + f"self_attn.{n}_proj.weight", (d, d)) for n in "qkvo"]
        out += [(p + "post_attention_layernorm.weight", (d,)), (p + "mlp.gate_proj.weight", (ffn, d)),
                (p + "mlp.up_proj.weight", (ffn, d)), (p + "mlp.down_proj.weight", (d, ffn))]
    return out + [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]


def header_infos(shapes, dtype: str, width: int) -> list[TensorInfo]:
    infos, offset = [], 0
    for name, shape in shapes:
        size = math.prod(shape) * width
        infos.append(TensorInfo(name, dtype, shape, "model.safetensors", offset, offset + size))
        offset += size
    return infos


def plan_7b() -> str:
    infos = header_infos(llama_shapes(32, 4096, 11008, 32000), "F16", 2)
    total = sum(t.nbytes for t in infos)
    ranges = coalesce(s.byte_range for s in units.plan(infos))
    read = sum(e - b for b, e in ranges)
    return (f"| LLaMA-7B (synthetic header, fp16) | {total / 1e9:.2f} GB | {read / 2**20:.2f} MiB "
            f"({100 * read / total:.3f} %) | {len(ranges)} ranges | - | - |")


def write_model(path: Path, shapes) -> None:
    header, offset = {}, 0
    for name, shape in shapes:
        size = math.prod(shape) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in shapes:
            scale = 0.02 if len(shape) == 2 else 0.1
            data = rng.standard_normal(shape, dtype=np.float32) * scale + (1.0 if len(shape) == 1 else 0.0)
            f.write(data.tobytes())


def suspect_100m(tmp: Path) -> str:
    shapes = llama_shapes(8, 768, 3072, 32000)
    params = sum(math.prod(s) for _, s in shapes)
    path = tmp / "model.safetensors"
    write_model(path, shapes)
    with SafetensorsReader.open(path) as r:
        started = time.perf_counter()
        owned = units.compute([r], owned=True)
        own_s = time.perf_counter() - started
        header_end = r.header.data_start
        specs = units.plan(r.tensors())
    source = LocalFile(path)
    started = time.perf_counter()
    prefetched = PrefetchedSource.fetch(source, [(0, header_end)] + [s.byte_range for s in specs])
    fetch_s = time.perf_counter() - started
    with SafetensorsReader(prefetched) as remote:
        started = time.perf_counter()
        suspect = units.compute([remote], owned=False)
        fp_s = time.perf_counter() - started
    started = time.perf_counter()
    result = units.compare(owned, suspect)
    cmp_s = time.perf_counter() - started
    source.close()
    total = path.stat().st_size
    return (f"| {params / 1e6:.0f}M params (fp32, written here) | {total / 1e9:.2f} GB | "
            f"{suspect.bytes_read / 2**20:.2f} MiB ({100 * suspect.bytes_read / total:.3f} %) | "
            f"read {fetch_s:.2f} s | fingerprint {fp_s:.2f} s, compare {cmp_s:.2f} s "
            f"(log10 p {result.log10_p:.0f}) | owned fingerprint {own_s:.1f} s |")


def main() -> int:
    print("| model | size | planned read | fetch | suspect side | registration |")
    print("|---|---|---|---|---|---|")
    print(plan_7b())
    with tempfile.TemporaryDirectory() as tmp:
        print(suspect_100m(Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
