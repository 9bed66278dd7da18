"""Blob stores: bytes are hashed while written, made durable and only then given their content
address; an aborted, oversized or disk-full write leaves nothing behind; a writer that finds
its blob stored refreshes its last-written time; deletion is conditional on that time; the
temporaries of killed writers are purged. Every store in `harness.HARNESSES` runs every case."""

from __future__ import annotations

import errno
import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from cairn.blobs.filesystem import FilesystemBlobStore
from cairn.blobs.store import CHUNK, BlobRef, BlobStore, Hasher
from cairn.errors import ConfigError, InsufficientStorage, PayloadTooLarge
from tests.unit.blobs.harness import (  # the fixtures every store runs under
    START,
    Harness,
    blob_database,
    blob_postgres,
    harness,
    store,
    tiny_tmpfs,
)

__all__ = ["blob_database", "blob_postgres", "harness", "store"]

DATA = b"".join(i.to_bytes(4, "big") for i in range(700_000))  # 2.8 MB: several 1 MiB chunks
SHA = hashlib.sha256(DATA).hexdigest()


def write(store: BlobStore, data: bytes, *, piece: int = 300_000, max_size: int = 10**9) -> BlobRef:
    writer = store.writer(max_size=max_size)
    for i in range(0, len(data), piece):
        writer.write(data[i : i + piece])
    return writer.commit()


def written_at(store: BlobStore, sha256: str) -> object:
    return dict(store.iter_stored()).get(sha256)


def test_write_commit_read_back(harness: Harness) -> None:
    store = harness.store
    blob = write(store, DATA)
    assert blob.sha256 == SHA
    assert blob.md5 == hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    assert blob.size == len(DATA)
    assert store.exists(blob.sha256)
    chunks = list(store.iter_chunks(blob.sha256))
    assert b"".join(chunks) == DATA
    assert all(len(c) <= CHUNK for c in chunks)
    assert harness.leftovers() == []
    assert harness.stored() == 1


def test_one_large_write_hashes_in_parallel_the_same(harness: Harness) -> None:
    # One write far above PARALLEL_MIN (the inline upload path): MD5 on the pool, SHA-256 here.
    ref = write(harness.store, DATA, piece=len(DATA))
    assert ref == BlobRef(SHA, hashlib.md5(DATA, usedforsecurity=False).hexdigest(), len(DATA))
    assert b"".join(harness.store.iter_chunks(SHA)) == DATA


def test_local_path_only_for_the_filesystem(store: BlobStore) -> None:
    ref = write(store, b"hello")
    path = store.local_path(ref.sha256)
    if isinstance(store, FilesystemBlobStore):
        assert path is not None and path.read_bytes() == b"hello"
        assert path.parent.name == ref.sha256[:2]
    else:
        assert path is None


def test_empty_blob(store: BlobStore) -> None:
    ref = store.writer(max_size=10).commit()
    assert ref.size == 0 and ref.sha256 == hashlib.sha256(b"").hexdigest()
    assert b"".join(store.iter_chunks(ref.sha256)) == b""


def test_same_content_twice_is_stored_once(harness: Harness) -> None:
    first = write(harness.store, DATA)
    second = write(harness.store, DATA)
    assert first == second
    assert harness.stored() == 1
    assert harness.leftovers() == []
    assert b"".join(harness.store.iter_chunks(SHA)) == DATA


def test_storing_existing_bytes_refreshes_their_last_written_time(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    write(store, DATA)
    assert written_at(store, SHA) == START
    clock.advance(timedelta(hours=30))
    write(store, DATA)
    assert written_at(store, SHA) == START + timedelta(hours=30)
    # A sweep that listed it as old before the refresh must not delete it now.
    assert store.delete(SHA, older_than=START + timedelta(hours=6)) is False
    assert b"".join(store.iter_chunks(SHA)) == DATA
    assert harness.leftovers() == []


def test_abort_leaves_nothing(harness: Harness) -> None:
    writer = harness.store.writer(max_size=len(DATA))
    writer.write(DATA)
    writer.abort()
    writer.abort()  # safe twice
    assert harness.leftovers() == []
    assert harness.stored() == 0
    assert not harness.store.exists(SHA)


def test_size_limit_is_payload_too_large_and_leaves_nothing(harness: Harness) -> None:
    writer = harness.store.writer(max_size=2 * CHUNK)
    writer.write(DATA[: 2 * CHUNK])  # exactly at the limit: fine
    with pytest.raises(PayloadTooLarge) as caught:
        writer.write(b"x")
    assert caught.value.status == 413
    assert "CAIRN_MAX_STATE_MB" in caught.value.detail
    writer.abort()  # what the caller does on any error; must be harmless now
    assert harness.leftovers() == []
    assert harness.stored() == 0


def test_missing_blob_is_file_not_found(store: BlobStore) -> None:
    missing = "0" * 64
    assert not store.exists(missing)
    with pytest.raises(FileNotFoundError):
        b"".join(store.iter_chunks(missing))


def test_iter_stored_lists_published_blobs_with_their_times(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    assert list(store.iter_stored()) == []
    a = write(store, b"a" * 10)
    clock.advance(timedelta(minutes=5))
    b = write(store, DATA)
    pending = store.writer(max_size=10**9)
    pending.write(b"not published yet")
    assert sorted(store.iter_stored()) == sorted(
        [(a.sha256, START), (b.sha256, START + timedelta(minutes=5))]
    )
    pending.abort()


def test_delete_only_what_is_older_than_asked(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    old = write(store, DATA)
    clock.advance(timedelta(hours=2))
    young = write(store, b"young")
    cutoff = START + timedelta(hours=1)
    assert store.delete(young.sha256, older_than=cutoff) is False
    assert store.delete(old.sha256, older_than=cutoff) is True
    assert store.delete(old.sha256, older_than=cutoff) is False  # already gone
    assert store.delete("f" * 64, older_than=cutoff) is False  # never stored
    assert not store.exists(old.sha256)
    with pytest.raises(FileNotFoundError):
        b"".join(store.iter_chunks(old.sha256))
    assert store.exists(young.sha256)
    assert not harness.holds(DATA[1000:1100])  # its bytes are gone, not only its name
    assert harness.leftovers() == []
    assert harness.stored() == 1


def test_bytes_stored_again_after_a_delete_are_published_anew(harness: Harness) -> None:
    store = harness.store
    write(store, DATA)
    assert store.delete(SHA, older_than=START + timedelta(seconds=1))
    write(store, DATA)
    assert b"".join(store.iter_chunks(SHA)) == DATA
    assert harness.leftovers() == []


def test_purge_temporaries_of_writers_killed_long_ago(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    killed = store.writer(max_size=10**9)  # never committed nor aborted: its process died
    killed.write(DATA)
    clock.advance(timedelta(hours=3))
    alive = store.writer(max_size=10**9)
    alive.write(DATA[: CHUNK + 10])
    assert len(harness.leftovers()) == 2
    assert store.purge_temporaries(START + timedelta(hours=1)) == 1
    assert len(harness.leftovers()) == 1
    assert not harness.holds(DATA[-100:])
    ref = alive.commit()  # the live writer was left alone
    assert b"".join(store.iter_chunks(ref.sha256)) == DATA[: CHUNK + 10]
    assert harness.leftovers() == []
    assert store.purge_temporaries(clock.now() + timedelta(days=1)) == 0
    killed.abort()  # only releases what this test process still holds (its open file)


def test_disk_full_is_507_and_leaves_nothing(harness: Harness) -> None:
    with harness.fill_disk():
        writer = harness.store.writer(max_size=10**9)
        with pytest.raises(InsufficientStorage) as caught:
            for i in range(0, len(DATA), 300_000):
                writer.write(DATA[i : i + 300_000])
            writer.commit()
        writer.abort()
        assert caught.value.status == 507
        assert "disk is full" in caught.value.detail
        assert "nothing was stored" in caught.value.detail
    assert harness.leftovers() == []
    assert harness.stored() == 0
    # Once space is back, the same bytes store fine.
    assert write(harness.store, DATA).sha256 == SHA


def test_hasher_matches_hashlib_for_every_piece_size() -> None:
    for piece in (1, 1000, 256 * 1024 - 1, 256 * 1024, CHUNK + 7):
        h = Hasher(10**9)
        for i in range(0, len(DATA), piece if piece > 1000 else 100_003):
            h.update(DATA[i : i + (piece if piece > 1000 else 100_003)])
        assert h.ref() == BlobRef(
            SHA, hashlib.md5(DATA, usedforsecurity=False).hexdigest(), len(DATA)
        )


def test_filesystem_paths_refuse_anything_but_a_sha256(tmp_path: Path) -> None:
    fs = FilesystemBlobStore(tmp_path)
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63, ""):
        with pytest.raises(ValueError):
            fs.path(bad)


def test_unusable_blob_directory_is_a_config_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        FilesystemBlobStore(not_a_dir / "blobs").check()


def fill(path: Path) -> None:
    """Write until the disk refuses (ENOSPC)."""
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 1024)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_full_disk_at_start_warns_and_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """L7: a restart on a full disk is not "fix its permissions": cairn starts (reads work),
    says the disk is full and how much is free."""
    try:
        with tiny_tmpfs(tmp_path / "small", "64k") as small:
            fill(small / "filler")
            FilesystemBlobStore(small / "blobs").check()
    except PermissionError:
        # Not root: the probe's write meets ENOSPC from the OS boundary instead.
        def full(self: Path, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Path, "write_bytes", full)
        FilesystemBlobStore(tmp_path / "blobs").check()
    warned = [r.getMessage() for r in caplog.records if "full" in r.getMessage()]
    assert warned and "free space" in warned[0] and "fix its permissions" not in warned[0]
