"""Orchestration of one unit of work: register a model, scan a suspect.

Ties readers, fingerprints, the matcher and the registry together; it never prints or exits
(the CLI does) and never names a concrete crawler or notifier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path


from crawlers.base import Candidate, Crawler
from monitor.errors import InputError, SourceError

from monitor import fingerprint as fp
from monitor.fingerprint import ModelFingerprint
from monitor.formats.discover import open_weights
from monitor.match import Thresholds
from monitor.owned import OwnedModels
from monitor.triage import Outcome, summarise, triage
from monitor.records import EventRecord, Match, ModelRecord, NewEvent
from monitor.registry import Registry

log = logging.getLogger(__name__)

Channels = Sequence[str] | Callable[[Match], Sequence[str]]
"""Where a match's alert goes: the same channels for every match, or a router per match
(monitor.alert.policy.Routes: by verdict)."""

ProgressFactory = Callable[[str, int], Callable[[int], None]]
"""Given a description and a total in bytes, returns an `advance(nbytes)` callback."""


def _no_progress(_desc: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def fingerprint_path(path: Path, progress: ProgressFactory = _no_progress, *,
                     owned: bool = True) -> ModelFingerprint:
    """Open every weight file under `path` and fingerprint them as one model.

    `owned=False` reads a suspect's hidden units as sparingly as a remote scan would.
    """
    with ExitStack() as stack:
        readers = [stack.enter_context(r) for r in open_weights(path)]
        return fp.fingerprint(readers, progress(f"fingerprinting {path.name}", fp.total_work(readers)),
                              owned=owned)


def register(registry: Registry, path: Path, *, name: str, owner: str | None, actor: str,
             progress: ProgressFactory = _no_progress) -> ModelRecord:
    """Fingerprint a model the user owns and store it, in one transaction."""
    fingerprint = fingerprint_path(path, progress)
    model = registry.add_model(name=name, owner=owner, source=str(path.resolve()),
                               files=fingerprint.files, tensors=fingerprint.tensors,
                               fingerprints=fingerprint.blobs(), actor=actor)
    log.info("registered model", extra={"model": model.name, "model_id": model.id,
                                        "tensors": model.n_tensors, "bytes": model.total_bytes})
    return model


@dataclass(frozen=True)
class ScanResult:
    """What one suspect matched, and the events those matches became."""

    target: str
    matches: tuple[Match, ...]
    events: tuple[EventRecord, ...]


def match_against_registry(registry: Registry, suspect: ModelFingerprint,
                           thresholds: Thresholds) -> list[Match]:
    """Judge the suspect against every registered model, strongest verdicts first."""
    return OwnedModels.load(registry).judge(suspect, thresholds)


def record_matches(registry: Registry, location: str, matches: list[Match], *, actor: str,
                   record_events: bool, channels: Channels = ()) -> tuple[EventRecord, ...]:
    """Log each match and store it as a detection event (deduplicated by model and location)."""
    events = []
    for m in matches:
        log.info("match", extra={"model": m.model_name, "location": location,
                                 "verdict": m.verdict.value, "score": m.score})
        if record_events:
            event, _created = registry.record_event(
                NewEvent(m.model_id, m.model_name, location, m.verdict, m.score, m.confidence,
                         m.p_value, m.evidence), actor=actor,
                channels=channels(m) if callable(channels) else channels)
            events.append(event)
    return tuple(events)


def scan(registry: Registry, target: Path, *, thresholds: Thresholds, actor: str,
         record_events: bool = True, channels: Channels = (),
         progress: ProgressFactory = _no_progress) -> ScanResult:
    """Fingerprint a local suspect, match it, and store every match as a detection event."""
    suspect = fingerprint_path(target, progress, owned=False)
    matches = match_against_registry(registry, suspect, thresholds)
    location = str(target.resolve())
    events = record_matches(registry, location, matches, actor=actor,
                            record_events=record_events, channels=channels)
    return ScanResult(location, tuple(matches), events)


def scan_candidate(registry: Registry, crawler: Crawler, candidate: Candidate, *,
                   thresholds: Thresholds, actor: str, record_events: bool = True,
                   channels: Channels = ()) -> tuple[ScanResult, Outcome]:
    """Triage one crawled candidate now (`monitor scan hf://...`) and record it as a sweep would.

    A candidate that cannot be read raises its reason: asked about one thing, the user gets
    an error, not an empty answer.
    """
    outcome = triage(candidate, crawler.open, OwnedModels.load(registry), thresholds)
    where = f"{candidate.location}@{candidate.revision[:12]}"
    if outcome.status == "failed":
        raise SourceError(crawler.name, f"{where}: {outcome.reason}")
    if outcome.status == "skipped":
        raise InputError(f"{where}: {outcome.reason}")
    events = record_matches(registry, candidate.location, list(outcome.matches), actor=actor,
                            record_events=record_events, channels=channels)
    registry.record_candidate(candidate.source, candidate.location, candidate.revision,
                              status=outcome.status, bytes_read=outcome.bytes_read,
                              reason=outcome.reason,
                              verdict=summarise(outcome.matches) or "none")
    return ScanResult(candidate.location, outcome.matches, events), outcome
