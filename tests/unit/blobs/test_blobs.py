"""Blob stores: bytes are written, verified and only then given their content address; an
aborted or oversized write leaves nothing behind. The filesystem store and the database store
(on an SQLite engine migrated with cairn's own migrations) must behave the same."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cairn.blobs.database import DatabaseBlobStore
from cairn.blobs.filesystem import FilesystemBlobStore
from cairn.blobs.model import Blob, BlobChunk
from cairn.blobs.store import CHUNK, BlobStore
from cairn.db.engine import Database, make_engine
from cairn.errors import ConfigError, PayloadTooLarge
from cairn.migrations.migrate import upgrade

DATA = b"".join(i.to_bytes(4, "big") for i in range(700_000))  # 2.8 MB: several 1 MiB chunks


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(make_engine(f"sqlite:///{tmp_path / 'blobs.db'}"))
    upgrade(db.engine)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture(params=["filesystem", "database"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "filesystem":
        fs = FilesystemBlobStore(tmp_path / "blobs")
        fs.check()
        return fs
    db: Database = request.getfixturevalue("database")
    dbs = DatabaseBlobStore(db)
    dbs.check()
    return dbs


def leftovers(store: BlobStore) -> list[str]:
    """Temporary bytes the store still holds (files in tmp/, or tmp- chunk rows)."""
    if isinstance(store, FilesystemBlobStore):
        return sorted(p.name for p in store.tmp_dir.iterdir())
    assert isinstance(store, DatabaseBlobStore)
    with store.db.unit_of_work() as s:
        return sorted(s.scalars(select(BlobChunk.sha256).where(BlobChunk.sha256.like("tmp-%"))))


def stored_blobs(store: BlobStore) -> int:
    if isinstance(store, FilesystemBlobStore):
        return sum(1 for p in store.root.glob("??/*") if p.is_file())
    assert isinstance(store, DatabaseBlobStore)
    with store.db.unit_of_work() as s:
        return s.scalar(select(func.count()).select_from(Blob)) or 0


def write(store: BlobStore, data: bytes, *, piece: int = 300_000, max_size: int = 10**9) -> object:
    writer = store.writer(max_size=max_size)
    for i in range(0, len(data), piece):
        writer.write(data[i : i + piece])
    return writer.commit()


def test_write_commit_read_back(store: BlobStore) -> None:
    ref = store.writer(max_size=len(DATA))
    for i in range(0, len(DATA), 300_000):
        ref.write(DATA[i : i + 300_000])
    blob = ref.commit()
    assert blob.sha256 == hashlib.sha256(DATA).hexdigest()
    assert blob.md5 == hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    assert blob.size == len(DATA)
    assert store.exists(blob.sha256)
    chunks = list(store.iter_chunks(blob.sha256))
    assert b"".join(chunks) == DATA
    assert all(len(c) <= CHUNK for c in chunks)
    assert leftovers(store) == []
    assert stored_blobs(store) == 1


def test_local_path_only_for_the_filesystem(store: BlobStore) -> None:
    blob = store.writer(max_size=100)
    blob.write(b"hello")
    ref = blob.commit()
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


def test_same_content_twice_is_stored_once(store: BlobStore) -> None:
    first = write(store, DATA)
    second = write(store, DATA)
    assert first == second
    assert stored_blobs(store) == 1
    assert leftovers(store) == []
    assert b"".join(store.iter_chunks(hashlib.sha256(DATA).hexdigest())) == DATA


def test_abort_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer(max_size=len(DATA))
    writer.write(DATA)
    writer.abort()
    writer.abort()  # safe twice
    assert leftovers(store) == []
    assert stored_blobs(store) == 0
    assert not store.exists(hashlib.sha256(DATA).hexdigest())


def test_size_limit_is_payload_too_large_and_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer(max_size=2 * CHUNK)
    writer.write(DATA[: 2 * CHUNK])  # exactly at the limit: fine
    with pytest.raises(PayloadTooLarge) as caught:
        writer.write(b"x")
    assert caught.value.status == 413
    assert "CAIRN_MAX_STATE_MB" in caught.value.detail
    writer.abort()  # what the caller does on any error; must be harmless now
    assert leftovers(store) == []
    assert stored_blobs(store) == 0


def test_missing_blob_is_file_not_found(store: BlobStore) -> None:
    missing = "0" * 64
    assert not store.exists(missing)
    with pytest.raises(FileNotFoundError):
        b"".join(store.iter_chunks(missing))


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
