"""The registered models, loaded once per sweep and indexed the ways a crawler asks about them.

A sweep triages thousands of candidates; decoding every registered model's fingerprints for each
one (as a single `monitor scan` may) would dominate the cost. `OwnedModels` decodes them once and
answers the two cheap questions before any weight byte is read: which models own a file with
this SHA-256 (exact copies), and which models a header's architecture can be compared with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monitor.fingerprint import ModelFingerprint, units
from monitor.match import Thresholds, judge
from monitor.records import Match, ModelRecord, TensorInfo
from monitor.registry import Registry

_ORDER = ("exact", "repackaged", "derivative")


@dataclass(frozen=True)
class OwnedModel:
    record: ModelRecord
    fingerprint: ModelFingerprint
    compatibility: tuple[str, int, int] | None  # units.compatibility of its tensors


class OwnedModels:
    """Immutable snapshot of the registry's models; safe to share between worker threads."""

    def __init__(self, models: Sequence[OwnedModel]) -> None:
        self.models = tuple(models)
        self._by_sha = {f.sha256: m for m in self.models for f in m.fingerprint.files}

    @classmethod
    def load(cls, registry: Registry) -> OwnedModels:
        models = []
        for record in registry.list_models():
            fp = ModelFingerprint.from_stored(registry.model_files(record.id),
                                              registry.model_tensors(record.id),
                                              registry.model_fingerprints(record.id))
            shapes = [TensorInfo(n, d, s, "", 0, 0) for n, s, d in fp.architecture.entries]
            models.append(OwnedModel(record, fp, units.compatibility(shapes)))
        return cls(models)

    def __len__(self) -> int:
        return len(self.models)

    def with_file_sha256(self, sha256s: Iterable[str | None]) -> list[OwnedModel]:
        """Models owning a file with one of these digests (an exact copy, 0 bytes read)."""
        found = {id(self._by_sha[s]): self._by_sha[s] for s in sha256s if s in self._by_sha}
        return list(found.values())

    def comparable(self, tensors: Sequence[TensorInfo]) -> list[OwnedModel]:
        """Models whose robust fingerprint can be compared with a model of these tensors."""
        key = units.compatibility(tensors)
        return [m for m in self.models if key is not None and m.compatibility == key]

    def judge(self, suspect: ModelFingerprint, thresholds: Thresholds,
              among: Sequence[OwnedModel] | None = None) -> list[Match]:
        """Verdicts against `among` (default: every model), strongest first."""
        matches = [m for o in (self.models if among is None else among)
                   if (m := judge(o.record, o.fingerprint, suspect, thresholds)) is not None]
        return sorted(matches, key=lambda m: (_ORDER.index(m.verdict.value), -m.score))
