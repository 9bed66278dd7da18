"""The blob store interface, the stream hasher, and what a full disk looks like to a store.

A blob's life: a writer receives bytes (hashed as they arrive: SHA-256 and MD5 in parallel),
makes them durable under a temporary name, then publishes them under their SHA-256; only then
does the caller commit the row that points at the blob. Blobs are shared (content-addressed), so
they are reclaimed by mark-and-sweep (``blobs.collector``): a blob no row references and last
written before a grace period is deleted. A writer that finds its bytes already published
refreshes their last-written time instead of writing them again: that is what keeps a sweep from
deleting a blob a new row is about to reference.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cairn.errors import InsufficientStorage, PayloadTooLarge

CHUNK = 1024 * 1024

# Below this size a thread hand-off costs more than hashing MD5 beside SHA-256 saves.
PARALLEL_MIN = 256 * 1024
# MD5 of large pieces runs here while the writer's own thread computes SHA-256 (and writes):
# hashlib releases the GIL for buffers over 2 KiB, so the two digests use two CPUs.
_md5_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cairn-md5")

DISK_FULL = (
    "the server's disk is full: nothing was stored. Free space on the disk holding cairn's "
    "data directory (or database), then retry"
)


@dataclass(frozen=True)
class BlobRef:
    """What a stored blob is: its content address, its MD5 (Terraform's checksum) and size."""

    sha256: str
    md5: str
    size: int


class BlobWriter(Protocol):
    def write(self, data: bytes) -> None:
        """Append bytes. Raises PayloadTooLarge past the writer's limit, InsufficientStorage
        when the disk is full (and aborts in both cases)."""

    def commit(self) -> BlobRef:
        """Make the bytes durable and store them under their SHA-256. When that blob is
        already stored, refresh its last-written time instead (and drop these bytes)."""

    def abort(self) -> None:
        """Throw away what was written. Safe to call more than once."""


class BlobStore(Protocol):
    name: str

    def writer(self, *, max_size: int) -> BlobWriter: ...

    def iter_chunks(self, sha256: str) -> Iterator[bytes]:
        """Stream a blob's bytes. Raises FileNotFoundError when it is missing."""

    def local_path(self, sha256: str) -> Path | None:
        """A file holding the blob, when the store has one (lets the server use sendfile)."""

    def exists(self, sha256: str) -> bool: ...

    def check(self) -> None:
        """Raise ConfigError when the store cannot be used (at start, never silently)."""

    # ---- reclaiming (blobs.collector) -----------------------------------------------------

    def iter_stored(self) -> Iterator[tuple[str, datetime]]:
        """Every published blob as (sha256, last written, UTC), in batches: no transaction or
        listing is held open between batches."""

    def delete(self, sha256: str, *, older_than: datetime) -> bool:
        """Delete a blob if it was last written before ``older_than``, atomically with respect
        to a writer refreshing it (either the refresh wins and the blob stays, or the blob is
        gone and the writer publishes its own copy). True when it was deleted."""

    def purge_temporaries(self, older_than: datetime) -> int:
        """Remove what writers started before ``older_than`` left behind (killed mid-write);
        returns how many temporaries were removed."""


class Hasher:
    """SHA-256, MD5 and size of a stream, with a size limit. Large pieces are hashed in
    parallel: MD5 on a pool thread, SHA-256 on the caller's; ``then`` (e.g. the file write)
    runs on the caller's thread meanwhile. ``data`` must not change until ``update`` returns."""

    def __init__(self, max_size: int) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.max_size = max_size

    def update(self, data: bytes, then: Callable[[bytes], object] | None = None) -> None:
        """Hash ``data``; ``then(data)`` (the write) runs meanwhile on this thread."""
        self.size += len(data)
        if self.size > self.max_size:
            raise PayloadTooLarge(
                f"the upload exceeds the limit of {self.max_size // (1024 * 1024)} MiB "
                "(CAIRN_MAX_STATE_MB raises it)"
            )
        if len(data) < PARALLEL_MIN:
            self.sha256.update(data)
            self.md5.update(data)
            if then is not None:
                then(data)
            return
        md5 = _md5_pool.submit(self.md5.update, data)
        try:
            self.sha256.update(data)
            if then is not None:
                then(data)
        finally:
            md5.result()  # never return while the pool still reads the caller's buffer

    def ref(self) -> BlobRef:
        return BlobRef(self.sha256.hexdigest(), self.md5.hexdigest(), self.size)


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means the disk (or quota) is full: ENOSPC/EDQUOT from the OS, SQLite's
    SQLITE_FULL ("database or disk is full"), PostgreSQL's disk_full (SQLSTATE 53100)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.Error) and (
            getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "database or disk is full" in str(current)
        ):
            return True
        if (
            getattr(current, "sqlstate", None) == "53100"
            or getattr(current, "pgcode", None) == "53100"
        ):
            return True
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return False


def disk_full_error() -> InsufficientStorage:
    return InsufficientStorage(DISK_FULL)
