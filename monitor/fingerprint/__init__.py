"""Fingerprints of a model, cheapest evidence first: file digests, tensor digests, architecture,
anchored hidden units (the robust family). Pure over readers: no database, no sockets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitor.fingerprint import architecture, units
from monitor.fingerprint.architecture import ArchitectureSignature
from monitor.fingerprint.exact import tensor_digest, weight_file
from monitor.fingerprint.units import UnitsFingerprint
from monitor.formats.base import WeightReader
from monitor.records import FingerprintBlob, TensorDigest, WeightFile

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ModelFingerprint:
    """Everything we know about one model's weights, ready to store or to match."""

    files: tuple[WeightFile, ...]
    tensors: tuple[TensorDigest, ...]
    architecture: ArchitectureSignature
    units: UnitsFingerprint | None  # None: no layout we can anchor (see units.layout)

    def blobs(self) -> list[FingerprintBlob]:
        """The versioned, per-algorithm fingerprints the registry stores."""
        return [self.architecture.to_blob()] + ([self.units.to_blob()] if self.units else [])

    @classmethod
    def from_stored(cls, files: Sequence[WeightFile], tensors: Sequence[TensorDigest],
                    blobs: Sequence[FingerprintBlob]) -> ModelFingerprint:
        """Rebuild from registry rows; a blob of an unknown algorithm/version is ignored."""
        found = {(b.algorithm, b.version): b for b in blobs}
        arch = found.get((architecture.ALGORITHM, architecture.VERSION))
        unit_blob = found.get((units.ALGORITHM, units.VERSION))
        return cls(tuple(files), tuple(tensors),
                   ArchitectureSignature.from_blob(arch) if arch else architecture.signature([]),
                   UnitsFingerprint.from_blob(unit_blob) if unit_blob else None)


def total_work(readers: Sequence[WeightReader]) -> int:
    """Bytes `fingerprint` will stream, for a progress bar: each file once, each tensor once."""
    return sum(os.path.getsize(r.path) + sum(t.nbytes for t in r.tensors()) for r in readers)


def fingerprint(readers: Sequence[WeightReader], progress: Progress | None = None, *,
                owned: bool = True) -> ModelFingerprint:
    """Fingerprint a model spread over `readers`, streaming: memory stays at a few chunks.

    `owned` fingerprints every hidden unit (registration); a suspect's robust fingerprint reads
    only the rows `units.plan` lists, as a remote scan would.
    """
    files = tuple(weight_file(r, progress) for r in readers)
    digests = []
    for r in readers:
        for t in r.tensors():
            digests.append(tensor_digest(r, t))
            if progress:
                progress(t.nbytes)
    infos = [t for r in readers for t in r.tensors()]
    return ModelFingerprint(files, tuple(digests), architecture.signature(infos),
                            units.compute(readers, owned=owned))
