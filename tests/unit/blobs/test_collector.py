"""The blob collector (mark-and-sweep) on every store: unreferenced blobs older than the grace
period go, referenced or young ones stay, and a writer storing the same bytes while a sweep
runs (the interleavings `blobs.collector` reasons about) never loses them."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Collection
from datetime import timedelta

import pytest

from cairn.blobs.collector import BlobCollector
from cairn.blobs.store import CHUNK, BlobRef, BlobStore
from tests.unit.blobs.harness import Harness, blob_database, blob_postgres, harness, store

__all__ = ["blob_database", "blob_postgres", "harness", "store"]

GRACE = timedelta(hours=24)


def put(store: BlobStore, data: bytes) -> BlobRef:
    writer = store.writer(max_size=10**9)
    writer.write(data)
    return writer.commit()


def content(store: BlobStore, sha256: str) -> bytes:
    return b"".join(store.iter_chunks(sha256))


class Rows:
    """Stands in for the rows of a domain: the digests they reference, and what the
    collector asked."""

    def __init__(self) -> None:
        self.referenced: set[str] = set()
        self.asked: list[set[str]] = []

    def __call__(self, digests: Collection[str]) -> set[str]:
        self.asked.append(set(digests))
        return self.referenced & set(digests)


def test_sweep_deletes_only_unreferenced_blobs_past_the_grace_period(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    rows = Rows()
    collector = BlobCollector(store, clock, grace=GRACE)
    collector.add_references("rows", rows)
    kept = put(store, b"referenced")
    gone = put(store, b"SECRET unreferenced" * 100_000)
    rows.referenced.add(kept.sha256)
    clock.advance(GRACE - timedelta(minutes=1))
    young = put(store, b"young and unreferenced")

    early = collector.sweep()  # nothing is past the grace period yet
    assert (early.deleted, early.examined) == (0, 3)
    assert rows.asked == []

    clock.advance(timedelta(minutes=2))
    result = collector.sweep()
    assert result.deleted == 1 and result.kept_referenced == 1
    assert rows.asked == [{kept.sha256, gone.sha256}]  # only the candidates are looked up
    assert not store.exists(gone.sha256)
    assert not harness.holds(b"SECRET unreferenced")
    assert content(store, kept.sha256) == b"referenced"
    assert content(store, young.sha256) == b"young and unreferenced"


def test_sweep_purges_temporaries_of_killed_writers(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    collector = BlobCollector(store, clock, grace=GRACE)
    collector.add_references("rows", Rows())
    killed = store.writer(max_size=10**9)
    killed.write(b"half an upload " * 100_000)
    clock.advance(GRACE + timedelta(seconds=1))
    assert collector.sweep().temporaries == 1
    assert harness.leftovers() == []
    killed.abort()  # releases what this test process still holds


def test_a_blob_stored_again_during_the_sweep_survives(harness: Harness) -> None:
    """Listed as an old candidate, then a writer stores the same bytes (its row not committed
    yet, so no provider knows it): the conditional delete sees the refreshed time."""
    store, clock = harness.store, harness.clock
    data = b"the same state, uploaded again " * 50_000
    put(store, data)
    clock.advance(GRACE * 2)

    def concurrent_upload(digests: Collection[str]) -> set[str]:
        put(store, data)  # the writer's refresh, between listing and deleting
        return set()  # its row commits only after the sweep

    collector = BlobCollector(store, clock, grace=GRACE)
    collector.add_references("uncommitted rows", concurrent_upload)
    assert collector.sweep().deleted == 0
    assert content(store, hashlib.sha256(data).hexdigest()) == data


def test_a_writer_after_the_delete_publishes_its_own_copy(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    data = b"deleted, then uploaded again " * 50_000
    put(store, data)
    clock.advance(GRACE * 2)
    collector = BlobCollector(store, clock, grace=GRACE)
    collector.add_references("rows", Rows())
    assert collector.sweep().deleted == 1
    put(store, data)
    assert content(store, hashlib.sha256(data).hexdigest()) == data
    assert collector.sweep().deleted == 0  # young again


def test_many_candidates_are_checked_in_batches(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cairn.blobs.collector.BATCH", 3)
    store, clock = harness.store, harness.clock
    refs = [put(store, f"blob {i}".encode()) for i in range(7)]
    rows = Rows()
    rows.referenced = {refs[0].sha256, refs[6].sha256}
    clock.advance(GRACE * 2)
    collector = BlobCollector(store, clock, grace=GRACE)
    collector.add_references("rows", rows)
    result = collector.sweep()
    assert [len(a) for a in rows.asked] == [3, 3, 1]
    assert (result.deleted, result.kept_referenced) == (5, 2)
    assert sorted(sha for sha, _ in store.iter_stored()) == sorted(rows.referenced)


def test_sweeping_without_a_reference_provider_is_refused(store: BlobStore) -> None:
    from cairn.clock import FrozenClock

    collector = BlobCollector(store, FrozenClock(), grace=GRACE)
    with pytest.raises(RuntimeError, match="no reference provider"):
        collector.sweep()
    with pytest.raises(ValueError, match="positive"):
        BlobCollector(store, FrozenClock(), grace=timedelta(0))


def test_uploads_racing_a_sweep_never_lose_their_blob(harness: Harness) -> None:
    """Two replicas: one sweeps while the other stores old, unreferenced bytes again and then
    commits the row that references them. Whatever the interleaving, every blob stored again
    is whole afterwards; the others are gone."""
    store, clock = harness.store, harness.clock
    blobs = [bytes([i]) * (2 * CHUNK + i if i < 4 else 1000 + i) for i in range(24)]
    for data in blobs:
        put(store, data)
    clock.advance(GRACE * 2)  # every blob is old and unreferenced now
    committed: set[str] = set()
    lock = threading.Lock()

    def rows(digests: Collection[str]) -> set[str]:
        with lock:
            return committed & set(digests)

    collector = BlobCollector(store, clock, grace=GRACE)
    collector.add_references("rows", rows)
    again = blobs[::2]
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            for data in again:
                ref = put(store, data)
                with lock:
                    committed.add(ref.sha256)  # the row commits after the blob
        except BaseException as exc:  # reported below
            errors.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    while uploader.is_alive():
        collector.sweep()
    uploader.join()
    collector.sweep()
    assert errors == []
    for i, data in enumerate(blobs):
        sha256 = hashlib.sha256(data).hexdigest()
        if i % 2 == 0:
            assert content(store, sha256) == data, f"blob {i} was stored again but is lost"
        else:
            assert not store.exists(sha256)
    assert harness.leftovers() == []
