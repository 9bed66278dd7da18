"""Blobs as files under ``<data-dir>/blobs/ab/abcdef…`` (the default).

A writer streams into ``blobs/tmp/upload-<start time>-<random>`` while hashing, fsyncs it, and
renames it to its content address (then fsyncs the directory). A blob's last-written time is its
file's mtime, set from the store's clock. Deleting renames the blob into ``tmp/`` first and
only then looks at its mtime: a writer refreshing the same blob either refreshed it before the
rename (the sweep sees the new mtime and puts the file back) or finds no file and publishes its
own copy, so a blob a new row is about to reference is never lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from cairn.blobs.store import CHUNK, BlobRef, Hasher, disk_full_error, is_disk_full
from cairn.clock import Clock, SystemClock
from cairn.errors import ConfigError

log = logging.getLogger("cairn")

_HEX = frozenset("0123456789abcdef")
_UPLOAD = "upload-"
_TOMBSTONE = "gc-"


class BlobCorrupted(OSError):
    """The bytes of a blob are not the bytes that were received."""


class FilesystemBlobWriter:
    def __init__(self, store: FilesystemBlobStore, max_size: int) -> None:
        self._store = store
        started = int(store.clock.now().timestamp())
        self._tmp = store.tmp_dir / f"{_UPLOAD}{started}-{secrets.token_hex(8)}"
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error() from None
            raise
        self._file = os.fdopen(fd, "wb")
        self._hasher = Hasher(max_size)
        self._done = False

    def write(self, data: bytes) -> None:
        try:
            self._hasher.update(data, then=self._file.write)
        except BaseException as exc:
            self.abort()
            if is_disk_full(exc):
                raise disk_full_error() from None
            raise

    def commit(self) -> BlobRef:
        # Hashed while written and fsynced before the rename: reading the bytes back would only
        # re-read the page cache, so nothing is read back.
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            ref = self._hasher.ref()
            final = self._store.path(ref.sha256)
            now = self._store.clock.now().timestamp()
            if not final.parent.is_dir():
                final.parent.mkdir(exist_ok=True)
                _fsync_dir(final.parent.parent)
            try:
                # Already stored: refresh its last-written time (so no sweep deletes it before
                # the caller's row commits) and drop these bytes.
                os.utime(final, (now, now))
            except FileNotFoundError:
                os.utime(self._tmp, (now, now))
                os.replace(self._tmp, final)
                _fsync_dir(final.parent)
            else:
                self._tmp.unlink()
            self._done = True
            return ref
        except BaseException as exc:
            self.abort()
            if is_disk_full(exc):
                raise disk_full_error() from None
            raise

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_sha256(name: str) -> bool:
    return len(name) == 64 and _HEX.issuperset(name)


class FilesystemBlobStore:
    name = "filesystem"

    def __init__(self, root: Path, clock: Clock | None = None) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.clock: Clock = clock or SystemClock()

    def path(self, sha256: str) -> Path:
        if not _is_sha256(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def check(self) -> None:
        """Refuse to start on a directory cairn cannot write (permissions, not a directory);
        a full disk only warns: reads keep working and uploads answer 507 until space is
        freed."""
        probe = self.tmp_dir / ".write-probe"
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
        except OSError as exc:
            if not is_disk_full(exc):
                raise ConfigError(
                    f"blob directory {self.root} is not writable ({exc.strerror}); "
                    "fix its permissions or choose another --data-dir"
                ) from None
            log.warning(
                f"the disk holding {self.root} is full; free space: {self._free()}. cairn "
                "serves reads, but uploads answer 507 until space is freed on that disk",
                extra={"blob_dir": str(self.root)},
            )
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _free(self) -> str:
        where = self.root if self.root.exists() else self.root.parent
        try:
            usage = shutil.disk_usage(where)
        except OSError:
            return "unknown"
        return f"{usage.free // (1024 * 1024)} MiB of {usage.total // (1024 * 1024)} MiB"

    def writer(self, *, max_size: int) -> FilesystemBlobWriter:
        return FilesystemBlobWriter(self, max_size)

    def iter_chunks(self, sha256: str) -> Iterator[bytes]:
        with self.path(sha256).open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def local_path(self, sha256: str) -> Path | None:
        return self.path(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    # ---- reclaiming ---------------------------------------------------------------------------

    def iter_stored(self) -> Iterator[tuple[str, datetime]]:
        # One two-hex-digit directory at a time (at most 1/256 of the blobs listed at once).
        with os.scandir(self.root) as top:
            shards = sorted(e.name for e in top if len(e.name) == 2 and _HEX.issuperset(e.name))
        for shard in shards:
            try:
                with os.scandir(self.root / shard) as it:
                    entries = [(e.name, e.stat().st_mtime) for e in it if _is_sha256(e.name)]
            except FileNotFoundError:
                continue
            for name, mtime in sorted(entries):
                if name[:2] == shard:
                    yield name, datetime.fromtimestamp(mtime, UTC)

    def delete(self, sha256: str, *, older_than: datetime) -> bool:
        final = self.path(sha256)
        tomb = self.tmp_dir / f"{_TOMBSTONE}{sha256}-{secrets.token_hex(4)}"
        try:
            os.rename(final, tomb)
        except FileNotFoundError:
            return False
        # From here on a writer of the same bytes finds no file and publishes its own; a
        # writer that refreshed the file before the rename left its mark on the mtime.
        if os.stat(tomb).st_mtime >= older_than.timestamp():
            os.replace(tomb, final)
            return False
        tomb.unlink()
        return True

    def purge_temporaries(self, older_than: datetime) -> int:
        cutoff = older_than.timestamp()
        removed = 0
        with os.scandir(self.tmp_dir) as it:
            entries = list(it)
        for entry in entries:
            name = entry.name
            try:
                if name.startswith(_TOMBSTONE):
                    # A sweep stopped between its rename and its decision: put the blob back,
                    # the next sweep decides again.
                    sha256 = name[len(_TOMBSTONE) : len(_TOMBSTONE) + 64]
                    if not _is_sha256(sha256):
                        continue
                    final = self.path(sha256)
                    final.parent.mkdir(exist_ok=True)
                    with contextlib.suppress(FileExistsError):
                        os.link(entry.path, final)
                    os.unlink(entry.path)
                elif name.startswith(_UPLOAD) and _started(name, entry) < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # its writer finished (or another sweep took it) meanwhile
        return removed


def _started(name: str, entry: os.DirEntry[str]) -> float:
    """When a writer started: in its file's name (the store's clock), else its mtime."""
    stamp = name[len(_UPLOAD) :].split("-", 1)[0]
    if stamp.isdigit() and "-" in name[len(_UPLOAD) :]:
        return float(stamp)
    return entry.stat().st_mtime
