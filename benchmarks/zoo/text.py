"""Real English text with no download: the help topics bundled with CPython (`pydoc_data`).

`pydoc_data.topics.topics` maps ~80 topic names to the language reference's prose (~465 KB,
~65 K words) and is present in every CPython install, so the zoo trains language models on
real text on an offline machine, reproducibly across runs and hosts of the same Python version.

Tokenisation is deliberately simple and deterministic: lower-cased words (identifiers with
underscores stay whole), numbers, and punctuation (a run of the same punctuation character,
like reST underlines `*****`, is one token so it does not dominate the loss). The vocabulary is
`<unk>`, `<eos>`, then the most frequent tokens, ordered by descending count with ties broken
by the string — no hash or dict-order dependence.

The topics, sorted by key, are split by characters: the last ~10% form the held-out text that
fine-tuning and LoRA use, so a "stolen then fine-tuned" model has seen data its parent never
trained on.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import torch

__all__ = ["UNK", "EOS", "HELDOUT_FRACTION", "tokenize", "split_topics", "vocabulary", "corpus"]

UNK, EOS = "<unk>", "<eos>"
HELDOUT_FRACTION = 0.10
_TOKEN = re.compile(r"[a-z_][a-z0-9_]*|\d+|([^\w\s])\1*")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, numbers and punctuation runs, in order."""
    return [m.group(0) for m in _TOKEN.finditer(text.lower())]


@lru_cache(maxsize=1)
def split_topics() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train keys, held-out keys): sorted topic keys, the tail holding >= 10% of characters."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    total = sum(len(topics[k]) for k in keys)
    tail, chars = len(keys), 0
    while chars < HELDOUT_FRACTION * total:
        tail -= 1
        chars += len(topics[keys[tail]])
    return tuple(keys[:tail]), tuple(keys[tail:])


@lru_cache(maxsize=1)
def _tokens_by_topic() -> dict[str, tuple[str, ...]]:
    from pydoc_data.topics import topics

    return {k: tuple(tokenize(v)) for k, v in topics.items()}


@lru_cache(maxsize=8)
def vocabulary(vocab: int) -> tuple[str, ...]:
    """itos: `<unk>`, `<eos>`, then the `vocab - 2` most frequent tokens of all topics.

    Built over all topics so pretraining and fine-tuning share one tokenizer, as a fine-tuned
    copy of a real model keeps its parent's tokenizer."""
    if vocab < 3:
        raise ValueError(f"vocab must be >= 3, got {vocab}")
    counts = Counter(t for toks in _tokens_by_topic().values() for t in toks)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return (UNK, EOS, *(t for t, _ in ranked[: vocab - 2]))


def _encode(keys: tuple[str, ...], stoi: dict[str, int]) -> torch.Tensor:
    """Token ids of the given topics in order, each topic followed by `<eos>`."""
    by_topic = _tokens_by_topic()
    ids: list[int] = []
    for k in keys:
        ids.extend(stoi.get(t, 0) for t in by_topic[k])
        ids.append(stoi[EOS])
    return torch.tensor(ids, dtype=torch.long)


def corpus(vocab: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(train_ids, heldout_ids, itos) for a vocabulary of `vocab` ids (1-D int64 tensors).

    The two id streams come from disjoint topic sets (see `split_topics`)."""
    itos = vocabulary(vocab)
    stoi = {t: i for i, t in enumerate(itos)}
    train_keys, heldout_keys = split_topics()
    return _encode(train_keys, stoi), _encode(heldout_keys, stoi), list(itos)
