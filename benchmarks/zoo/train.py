"""Make the zoo's language models: pretrain, fully fine-tune, LoRA-and-merge, and cache them.

The robustness benchmark asks "does the fingerprint still match after the thief changed the
weights the way thieves do?" — so the derived models must come from real optimisation on real
text, not synthetic noise: pretraining on the train topics, then full fine-tuning or a peft
LoRA adapter (merged back, as published merges are) on the disjoint held-out topics.

Every run is seeded (initialisation AND data order), runs on CPU with 2 threads, and returns a
plain `{name: tensor}` state dict in Hugging Face LLaMA names. The `*_run` functions also return
loss figures so callers and tests can check training really happened; `cached` stores results
as safetensors under `benchmarks/.cache/` so the benchmark trains each seed once.

Measured on the 2-core build machine with nothing else running: pretraining at the defaults
~55 s, a 1000-step fine-tune ~45 s, a 300-step LoRA ~20 s. With another process busy on a core
these stretch 3-15x (threads wait on each other), so warm the cache on a quiet machine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.zoo.llama import LMConfig, TinyLlama, forward
from benchmarks.zoo.text import corpus

__all__ = [
    "CACHE_DIR", "LORA_TARGETS", "Run", "adamw_loop", "cached", "finetune_lm", "finetune_run",
    "lm_loss", "lora_merge_lm", "lora_run", "pretrain_run", "train_lm",
]

log = logging.getLogger(__name__)

CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache"
LORA_TARGETS = ("q_proj", "v_proj", "up_proj", "down_proj")
_THREADS = 2
# Below this many multiply-adds per weight row per step (tokens x width) a second thread buys
# nothing, and when another process holds a core it made a 300-step tiny-config run 17x slower
# (33 s vs 2 s, measured) as the two threads wait on each other. Default configs are far above.
_ONE_THREAD_BELOW = 2**15
_WARMUP_FRACTION = 0.05


@dataclass(frozen=True)
class Run:
    """A trained state dict and the evidence that training did something."""

    sd: dict[str, torch.Tensor]
    """Detached weights in Hugging Face LLaMA names."""
    first_loss: float
    """Training cross-entropy (nats/token) of the first optimizer step."""
    final_loss: float
    """Mean training cross-entropy over the last 10% of steps (smooths batch noise)."""
    seconds: float
    """Wall-clock time of the optimisation loop."""


def _windows(ids: torch.Tensor, length: int, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless random (batch, length + 1) windows; the +1 supplies next-token targets."""
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(length + 1)
    while True:
        starts = torch.randint(0, len(ids) - length, (batch,), generator=gen)
        yield ids[starts[:, None] + offsets]


def _lr_factor(step: int, steps: int) -> float:
    """Linear warmup over the first 5% of steps, then cosine decay to 10% of the peak LR."""
    warm = max(1, int(_WARMUP_FRACTION * steps))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def adamw_loop(model: torch.nn.Module, next_loss: Callable[[], torch.Tensor], *, steps: int,
               lr: float, weight_decay: float, seed: int, threads: int = _THREADS,
               betas: tuple[float, float] = (0.9, 0.95),
               lr_factor: Callable[[int, int], float] | None = None) -> tuple[float, float, float]:
    """`steps` AdamW updates (default betas 0.9/0.95, grad-norm clip 1.0, warmup + cosine) of the
    model's trainable parameters on the losses `next_loss()` yields; (first, final, seconds).

    Runs on `threads` intra-op threads inside `fork_rng` seeded by `seed` (so anything drawing
    from the global RNG, e.g. dropout, is reproducible), restoring the caller's thread count
    and RNG state."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)
    factor = lr_factor or _lr_factor
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(s, steps))
    losses: list[float] = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.train()
            start = time.perf_counter()
            for _ in range(steps):
                loss = next_loss()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(loss.item())
            seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    model.eval()
    tail = losses[-max(1, steps // 10):]
    return losses[0], sum(tail) / len(tail), seconds


def _fit_text(model: torch.nn.Module, ids: torch.Tensor, cfg: LMConfig, *, steps: int,
              batch: int, lr: float, seed: int, weight_decay: float) -> tuple[float, float, float]:
    """Next-token training on random `cfg.max_len` windows of `ids`, drawn in a seeded order."""
    batches = _windows(ids, cfg.max_len, batch, seed)

    def next_loss() -> torch.Tensor:
        window = next(batches)
        return _next_token_loss(model(window[:, :-1]), window[:, 1:])

    threads = 1 if batch * cfg.max_len * cfg.d < _ONE_THREAD_BELOW else _THREADS
    return adamw_loop(model, next_loss, steps=steps, lr=lr, weight_decay=weight_decay, seed=seed,
                      threads=threads)


def _detached(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _full_run(kind: str, model: TinyLlama, ids: torch.Tensor, *, steps: int, batch: int,
              lr: float, seed: int, weight_decay: float) -> Run:
    """Train every tensor of `model` on `ids`, log the losses, and package the result."""
    first, final, secs = _fit_text(model, ids, model.cfg, steps=steps, batch=batch, lr=lr,
                                   seed=seed, weight_decay=weight_decay)
    log.info("%s seed=%d: loss %.3f -> %.3f in %.1fs", kind, seed, first, final, secs)
    return Run(_detached(model), first, final, secs)


def pretrain_run(cfg: LMConfig, seed: int, steps: int = 350, batch: int = 32,
                 lr: float = 3e-3) -> Run:
    """Train a fresh `TinyLlama` (init seeded by `seed`) on the train topics.

    350 steps (not 600): one step at batch 32 costs ~0.16 s on 2 idle cores, and a run must
    stay under ~60 s; ~8 passes over the 86 K training tokens already beat unigram clearly."""
    train_ids, _, _ = corpus(cfg.vocab)
    return _full_run("pretrain", TinyLlama(cfg, seed=seed), train_ids, steps=steps,
                     batch=batch, lr=lr, seed=seed, weight_decay=0.1)


def train_lm(cfg: LMConfig, seed: int, steps: int = 350, batch: int = 32,
             lr: float = 3e-3) -> dict[str, torch.Tensor]:
    """State dict of `pretrain_run` — a trained, independent model per seed."""
    return pretrain_run(cfg, seed, steps=steps, batch=batch, lr=lr).sd


def finetune_run(sd: dict[str, torch.Tensor], cfg: LMConfig, steps: int = 1000,
                 lr: float = 3e-4, seed: int = 0, batch: int = 8) -> Run:
    """Full fine-tuning of every tensor on the held-out topics (data never seen in pretraining).

    Batch 8 keeps 1000 steps near 45 s on 2 idle cores; 1000 steps x 512 tokens is ~47 passes
    over the 11 K held-out tokens — a strong, over-fitted fine-tune, the hard case for
    fingerprints."""
    _, heldout_ids, _ = corpus(cfg.vocab)
    return _full_run("finetune", TinyLlama(cfg, sd=sd), heldout_ids, steps=steps, batch=batch,
                     lr=lr, seed=seed, weight_decay=0.01)


def finetune_lm(sd: dict[str, torch.Tensor], cfg: LMConfig, steps: int = 1000,
                lr: float = 3e-4, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of `finetune_run`."""
    return finetune_run(sd, cfg, steps=steps, lr=lr, seed=seed).sd


def lora_run(sd: dict[str, torch.Tensor], cfg: LMConfig, steps: int = 300, r: int = 8,
             lr: float = 1e-3, seed: int = 0, batch: int = 16) -> Run:
    """Train a real peft LoRA adapter on the held-out topics, then `merge_and_unload()`.

    Targets q/v/up/down projections (a common LoRA recipe). The adapter's random init uses the
    global RNG, so it runs inside `fork_rng` seeded by `seed`: reproducible, and the caller's
    RNG state is left untouched."""
    from peft import LoraConfig, get_peft_model  # heavy import; only LoRA callers pay for it

    _, heldout_ids, _ = corpus(cfg.vocab)
    base = TinyLlama(cfg, sd=sd)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(base, LoraConfig(
            r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(LORA_TARGETS)))
    first, final, secs = _fit_text(peft_model, heldout_ids, cfg, steps=steps, batch=batch,
                                   lr=lr, seed=seed, weight_decay=0.0)
    merged = peft_model.merge_and_unload()
    out = {_strip_peft(k): v for k, v in _detached(merged).items()}
    if set(out) != set(sd):
        raise AssertionError(f"merged names differ: {sorted(set(out) ^ set(sd))[:5]}")
    changed = [k for k in out if not torch.equal(out[k], sd[k])]
    if not changed:
        raise AssertionError("LoRA merge left every weight unchanged")
    log.info("lora seed=%d r=%d: loss %.3f -> %.3f in %.1fs, %d tensors changed",
             seed, r, first, final, secs, len(changed))
    return Run(out, first, final, secs)


def lora_merge_lm(sd: dict[str, torch.Tensor], cfg: LMConfig, steps: int = 300, r: int = 8,
                  lr: float = 1e-3, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of `lora_run`: the base with the trained adapter merged in, original names."""
    return lora_run(sd, cfg, steps=steps, r=r, lr=lr, seed=seed).sd


def _strip_peft(name: str) -> str:
    """Undo peft's wrapping prefixes should any survive unloading (`base_model.model.`,
    `.base_layer.`), so the merged dict is keyed like the original."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


@torch.no_grad()
def lm_loss(sd: dict[str, torch.Tensor], cfg: LMConfig, ids: torch.Tensor,
            max_windows: int = 64) -> float:
    """Mean next-token cross-entropy over consecutive non-overlapping windows of `ids`,
    via the functional `forward` — the yardstick for "the stolen model still works"."""
    n = min(max_windows, (len(ids) - 1) // cfg.max_len)
    if n < 1:
        raise ValueError("ids shorter than one window")
    x = ids[: n * cfg.max_len + 1]
    inputs = x[:-1].view(n, cfg.max_len)
    targets = x[1:].view(n, cfg.max_len)
    return _next_token_loss(forward(sd, cfg, inputs), targets).item()


def cached(name: str, make: Callable[[], dict[str, torch.Tensor]],
           directory: Path = CACHE_DIR) -> dict[str, torch.Tensor]:
    """Load `<directory>/<name>.safetensors` or build it with `make()` and store it.

    The name must encode everything the weights depend on (kind, config, seed, steps) — the
    cache never checks staleness. Written to a temp file then renamed so an interrupted run
    never leaves a truncated entry."""
    from safetensors.torch import load_file, save_file

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad cache name {name!r}")
    path = directory / f"{name}.safetensors"
    if path.exists():
        return load_file(path)
    sd = {k: v.detach().contiguous() for k, v in make().items()}
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(sd, tmp)
    tmp.replace(path)
    return sd
