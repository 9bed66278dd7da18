"""Reclaiming blobs: mark-and-sweep over a content-addressed store.

Blobs are shared (two state versions with the same bytes point at one blob), so a blob is never
deleted with a row: a periodic sweep deletes every blob that no row references and that was last
written before a grace period. The grace period exists because an upload writes and publishes
its blob *before* the row that references it commits (so a crash never leaves a row without
bytes): a younger blob may be an upload whose row is about to commit.

The blob floor knows nothing of the rows above it: domains register *reference providers*
(state versions today; configuration versions and logs later), wired in ``app.py``. A provider
answers which of a batch of digests some row references.

Why this is safe while uploads go on, on any number of replicas. A sweep (1) lists blobs last
written before ``now - grace``, (2) asks the providers which of them are referenced, and (3)
deletes each unreferenced one only if it is *still* older than the cutoff (``BlobStore.delete``
decides that atomically against a writer's refresh). A writer (a) publishes its blob or, when
it is already stored, refreshes its last-written time, then (b) commits its row. If (b) commits
before (2) reads, the blob is referenced and kept. Otherwise (a) happened after (1) listed it
(a blob refreshed before (1) is not a candidate), so either (a) precedes (3), and (3) sees a
fresh blob and keeps it, or (a) follows (3), and the writer finds no blob and publishes its own
bytes. The only assumption: no row commits longer than the grace period after its blob was
written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cairn.blobs.store import BlobStore
from cairn.clock import Clock

log = logging.getLogger("cairn")

ReferenceProvider = Callable[[Collection[str]], Iterable[str]]
"""Given candidate digests (at most a batch), the ones some row still references."""

DEFAULT_GRACE = timedelta(hours=24)
# Candidates checked against the providers at once (one query per provider per batch).
BATCH = 500


@dataclass
class Sweep:
    """What one sweep did."""

    examined: int = 0
    deleted: int = 0
    kept_referenced: int = 0
    temporaries: int = 0


class BlobCollector:
    """Deletes blobs no registered provider references once they are older than ``grace``."""

    def __init__(self, store: BlobStore, clock: Clock, *, grace: timedelta = DEFAULT_GRACE) -> None:
        if grace <= timedelta(0):
            raise ValueError("the grace period must be positive")
        self.store = store
        self.clock = clock
        self.grace = grace
        self._providers: list[tuple[str, ReferenceProvider]] = []

    def add_references(self, name: str, provider: ReferenceProvider) -> None:
        """Register what some rows reference (``name`` for the log: "state versions")."""
        self._providers.append((name, provider))

    def sweep(self, now: datetime | None = None) -> Sweep:
        """One mark-and-sweep pass at ``now`` (default: the clock's time)."""
        if not self._providers:
            # Without a provider every old blob would look unreferenced.
            raise RuntimeError("no reference provider is registered; refusing to sweep")
        cutoff = (now or self.clock.now()) - self.grace
        result = Sweep()
        result.temporaries = self.store.purge_temporaries(cutoff)
        batch: list[str] = []
        for sha256, written in self.store.iter_stored():
            result.examined += 1
            if written < cutoff:
                batch.append(sha256)
                if len(batch) >= BATCH:
                    self._collect(batch, cutoff, result)
                    batch = []
        if batch:
            self._collect(batch, cutoff, result)
        if result.deleted or result.temporaries:
            log.info(
                "reclaimed blob storage",
                extra={
                    "blobs_deleted": result.deleted,
                    "temporaries_removed": result.temporaries,
                    "blobs_examined": result.examined,
                },
            )
        return result

    def _collect(self, candidates: list[str], cutoff: datetime, result: Sweep) -> None:
        referenced: set[str] = set()
        for _name, provider in self._providers:
            referenced.update(provider(candidates))
        for sha256 in candidates:
            if sha256 in referenced:
                result.kept_referenced += 1
            elif self.store.delete(sha256, older_than=cutoff):
                result.deleted += 1
