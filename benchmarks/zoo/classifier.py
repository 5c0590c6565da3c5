"""A small real image classifier: an MLP on scikit-learn's bundled 8x8 digits (no download).

The LM zoo covers transformer checkpoints; this covers the other common kind of stolen model,
a plain feed-forward classifier (`nn.Sequential` names `net.0.weight`, `net.0.bias`, ...).

Data: `sklearn.datasets.load_digits` (1797 images, shipped inside scikit-learn), pixels scaled
to [0, 1], split ONCE with a fixed seed into train 60% / fine-tune 20% / test 20%. The split does
not depend on the model seed, so accuracies of different seeds and derivatives compare on the
same test images, and fine-tuning uses images the original never trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LAYERS", "Split", "accuracy", "build", "finetune_classifier", "splits",
           "train_classifier"]

LAYERS = (64, 256, 256, 10)
_SPLIT_SEED = 0
_BATCH = 32
_NOISE_STD = 0.1  # augmentation for fine-tuning: Gaussian pixel noise on [0, 1] images

Split = tuple[torch.Tensor, torch.Tensor]


@lru_cache(maxsize=1)
def splits() -> dict[str, Split]:
    """{"train", "finetune", "test"} -> (x float32 (n, 64) in [0, 1], y int64 (n,))."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    parts = {"train": perm[:a], "finetune": perm[a:b], "test": perm[b:]}
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


def build(seed: int) -> nn.Sequential:
    """64 -> 256 -> 256 -> 10 with ReLUs; PyTorch's default init, drawn from a seeded RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(LAYERS, LAYERS[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(n_in, n_out))
        return nn.Sequential(*layers)


class _Wrapper(nn.Module):
    """Holds the Sequential as `net` so state-dict names read `net.0.weight`, ..."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _model(sd: dict[str, torch.Tensor] | None = None, seed: int = 0) -> _Wrapper:
    model = _Wrapper(build(seed))
    if sd is not None:
        model.load_state_dict(sd, strict=True)
    return model


def _detached(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread, restoring the caller's setting after.

    The matmuls here are tiny (batch 32, width 256): a second thread buys nothing when the
    machine is idle and, measured while another process held a core, made a 1000-step run
    ~8x slower (15 s vs 2 s) from threads waiting on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float,
           seed: int, noise: float) -> None:
    """`steps` Adam updates on minibatches drawn epoch-wise in a seeded order."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    done = 0
    with _one_thread():
        while done < steps:
            for idx in torch.randperm(len(y), generator=gen).split(_BATCH):
                xb = x[idx]
                if noise:
                    xb = (xb + noise * torch.randn(xb.shape, generator=gen)).clamp(0.0, 1.0)
                loss = F.cross_entropy(model(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done == steps:
                    return


def train_classifier(seed: int, epochs: int = 30, lr: float = 1e-3) -> dict[str, torch.Tensor]:
    """Train from a seeded init on the train split (data order seeded too); ~97% test accuracy."""
    x, y = splits()["train"]
    model = _model(seed=seed)
    steps_per_epoch = -(-len(y) // _BATCH)
    _steps(model, x, y, steps=epochs * steps_per_epoch, lr=lr, seed=seed, noise=0.0)
    return _detached(model)


def finetune_classifier(sd: dict[str, torch.Tensor], steps: int = 1000, lr: float = 1e-3,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """1000 Adam steps on the disjoint fine-tune split, with pixel-noise augmentation — the
    "stolen then adapted" classifier."""
    x, y = splits()["finetune"]
    model = _model(sd)
    _steps(model, x, y, steps=steps, lr=lr, seed=seed, noise=_NOISE_STD)
    return _detached(model)


@torch.no_grad()
def accuracy(sd: dict[str, torch.Tensor], split: str = "test") -> float:
    """Fraction of the split's images classified correctly."""
    x, y = splits()[split]
    model = _model(sd).eval()
    return (model(x).argmax(-1) == y).float().mean().item()
