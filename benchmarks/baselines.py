"""Baselines the robust fingerprint is measured against.

Raw per-tensor cosine: pair tensors by name (after dropping a shared prefix), take the cosine of
their flattened values, call it a match when the mean over paired matrices is at least 0.5. It
is what a naive tool does, and it fails as soon as a hidden dimension is permuted or rotated.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from monitor.fingerprint.architecture import normalise_names
from monitor.formats.discover import open_weights

THRESHOLD = 0.5


def raw_cosine_match(owned: dict[str, torch.Tensor], suspect: Path) -> bool:
    ours = {v: owned[k] for k, v in normalise_names(list(owned)).items()}
    cosines = []
    with ExitStack() as stack:
        readers = [stack.enter_context(r) for r in open_weights(suspect)]
        infos = [(r, t) for r in readers for t in r.tensors()]
        names = normalise_names([t.name for _, t in infos])
        for r, t in infos:
            mine = ours.get(names[t.name])
            if mine is None or mine.dim() < 2 or tuple(mine.shape) != t.shape:
                continue
            a = mine.float().flatten().numpy().astype(np.float64)
            b = r.values(t, 0, t.numel).astype(np.float64)
            denom = np.linalg.norm(a) * np.linalg.norm(b)
            cosines.append(float(a @ b / denom) if denom else 0.0)
    return bool(cosines) and float(np.mean(cosines)) >= THRESHOLD
