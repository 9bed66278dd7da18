"""One suite for every blob store: the `harness` fixture is parametrized over `HARNESSES`.

A harness wraps a store built on a `FrozenClock` (blobs' last-written times come from it) with
what a test needs to look *under* the store: the temporaries it holds, how many blobs it holds,
whether any stored byte contains a marker, and a way to make its disk (or database) full.

To run the suite on another store (say S3 in `cairn.blobs.s3`), write a factory
`def s3_harness(request, tmp_path) -> Harness` (it may `request.getfixturevalue("s3_store")`
or any other fixture of `conftest.py`) and add it to `HARNESSES` under its name; every test of
`test_blobs.py` then runs on it too. A store that cannot be filled for real may make
`fill_disk` call `pytest.skip(reason)`; marks its tests need (`postgres`, `slow`) go in
`MARKS`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import event, func, select, text

from cairn.blobs.database import DatabaseBlobStore
from cairn.blobs.filesystem import FilesystemBlobStore
from cairn.blobs.model import Blob, BlobChunk
from cairn.blobs.store import BlobStore
from cairn.clock import FrozenClock
from cairn.db.engine import Database, make_engine
from cairn.migrations.migrate import upgrade
from tests.unit.blobs.s3_harness import s3_harness

# Where every harness's clock starts.
START = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class Harness(Protocol):
    store: BlobStore
    clock: FrozenClock

    def leftovers(self) -> list[str]:
        """Temporary bytes the store holds, one name per temporary (files in tmp/, tmp- chunk
        keys, …)."""

    def stored(self) -> int:
        """How many published blobs the store holds."""

    def holds(self, needle: bytes) -> bool:
        """Whether any byte the store keeps (published or temporary) contains `needle`."""

    def fill_disk(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, storing more bytes fails the way a full disk fails."""


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """A real, small filesystem (root only; PermissionError otherwise): writes past its size
    fail with ENOSPC."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["/bin/mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise PermissionError(done.stderr.decode(errors="replace").strip())
    try:
        yield where
    finally:
        subprocess.run(["/bin/umount", "-l", str(where)], check=False)


class FilesystemHarness:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = FrozenClock(START)
        self.fs = FilesystemBlobStore(root, self.clock)
        self.fs.check()
        self.store: BlobStore = self.fs
        self._monkeypatch = monkeypatch

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.fs.tmp_dir.iterdir())

    def stored(self) -> int:
        return sum(1 for p in self.fs.root.glob("??/*") if p.is_file())

    def holds(self, needle: bytes) -> bool:
        return any(needle in p.read_bytes() for p in self.fs.root.rglob("*") if p.is_file())

    @contextlib.contextmanager
    def fill_disk(self) -> Iterator[None]:
        # The store moves onto a 1 MiB tmpfs when we may mount one (root); otherwise each
        # writer's file is opened on /dev/full, where the kernel answers every write with
        # ENOSPC.
        real_root, real_tmp = self.fs.root, self.fs.tmp_dir
        with contextlib.ExitStack() as stack:
            try:
                mounted = stack.enter_context(tiny_tmpfs(real_root.parent / "full-disk"))
            except PermissionError:
                mounted = None
            if mounted is not None:
                self.fs.root, self.fs.tmp_dir = mounted, mounted / "tmp"
                self.fs.tmp_dir.mkdir()
                try:
                    yield
                finally:
                    self.fs.root, self.fs.tmp_dir = real_root, real_tmp
                left = [p.name for p in mounted.rglob("*") if p.is_file()]
                assert left == [], f"left on the full disk: {left}"
                return
        real_fdopen = os.fdopen

        def full_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            os.close(fd)
            return real_fdopen(os.open("/dev/full", os.O_WRONLY), *args, **kwargs)

        with self._monkeypatch.context() as m:
            m.setattr(os, "fdopen", full_fdopen)
            yield


class DatabaseHarness:
    def __init__(self, db: Database) -> None:
        self.clock = FrozenClock(START)
        self.db = db
        self.dbs = DatabaseBlobStore(db, self.clock)
        self.dbs.check()
        self.store: BlobStore = self.dbs

    def leftovers(self) -> list[str]:
        with self.db.unit_of_work() as s:
            return sorted(
                s.scalars(select(BlobChunk.sha256).where(BlobChunk.sha256.like("tmp-%")).distinct())
            )

    def stored(self) -> int:
        with self.db.unit_of_work() as s:
            return s.scalar(select(func.count()).select_from(Blob)) or 0

    def holds(self, needle: bytes) -> bool:
        with self.db.unit_of_work() as s:
            return any(needle in bytes(data) for data in s.scalars(select(BlobChunk.data)))

    @contextlib.contextmanager
    def fill_disk(self) -> Iterator[None]:
        # SQLite's own limit on the database's size: past it every write fails with
        # SQLITE_FULL ("database or disk is full"), exactly as on a full disk.
        with self.db.unit_of_work() as s:
            pages = s.execute(text("PRAGMA page_count")).scalar_one()
        limit = f"PRAGMA max_page_count = {int(pages) + 8}"

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(limit)

        event.listen(self.db.engine, "connect", on_connect)
        self.db.engine.dispose()
        try:
            yield
        finally:
            event.remove(self.db.engine, "connect", on_connect)
            self.db.engine.dispose()


def filesystem_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return FilesystemHarness(tmp_path / "blobs", request.getfixturevalue("monkeypatch"))


def database_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return DatabaseHarness(request.getfixturevalue("blob_database"))


def postgres_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return PostgresHarness(request.getfixturevalue("blob_postgres"))


class PostgresHarness(DatabaseHarness):
    """The database store on PostgreSQL (its concurrency is the one replicas rely on)."""

    @contextlib.contextmanager
    def fill_disk(self) -> Iterator[None]:
        pytest.skip("a full disk under PostgreSQL cannot be made without root on its server")
        yield


HARNESSES: dict[str, Callable[[pytest.FixtureRequest, Path], Harness]] = {
    "filesystem": filesystem_harness,
    "database": database_harness,
    "postgres": postgres_harness,
    "s3": s3_harness,  # moto's S3 server: tests/unit/blobs/s3_harness.py
}
# Marks of a harness's tests (see pyproject.toml's markers).
MARKS: dict[str, list[pytest.MarkDecorator]] = {"postgres": [pytest.mark.postgres]}


@pytest.fixture
def blob_database(tmp_path: Path) -> Iterator[Database]:
    """A fresh SQLite database migrated with cairn's own migrations."""
    db = Database(make_engine(f"sqlite:///{tmp_path / 'blobs.db'}"))
    upgrade(db.engine)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def blob_postgres(request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh database on the session's PostgreSQL, migrated."""
    cluster = request.getfixturevalue("pg")
    db = Database(make_engine(cluster.create_database("blobs")))
    upgrade(db.engine)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture(params=[pytest.param(name, marks=MARKS.get(name, [])) for name in HARNESSES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return HARNESSES[request.param](request, tmp_path)


@pytest.fixture
def store(harness: Harness) -> BlobStore:
    return harness.store
