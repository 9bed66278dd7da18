"""Blobs as files under ``<data-dir>/blobs/ab/abcdef…`` (the default)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cairn.blobs.store import CHUNK, BlobRef, Hasher
from cairn.errors import ConfigError


class BlobCorrupted(OSError):
    """The bytes read back after writing are not the bytes that were received."""


class FilesystemBlobWriter:
    def __init__(self, store: FilesystemBlobStore, max_size: int) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        self._hasher = Hasher(max_size)
        self._done = False

    def write(self, data: bytes) -> None:
        try:
            self._hasher.update(data)
        except Exception:
            self.abort()
            raise
        self._file.write(data)

    def commit(self) -> BlobRef:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            ref = self._hasher.ref()
            _verify(self._tmp, ref)
            final = self._store.path(ref.sha256)
            final.parent.mkdir(exist_ok=True)
            if final.exists():
                self._tmp.unlink()
            else:
                os.replace(self._tmp, final)
                _fsync_dir(final.parent)
            self._done = True
            return ref
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


def _verify(path: Path, ref: BlobRef) -> None:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size != ref.size or digest.hexdigest() != ref.sha256:
        raise BlobCorrupted(f"blob {ref.sha256} did not read back as written")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    name = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def check(self) -> None:
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            probe = self.tmp_dir / ".write-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"blob directory {self.root} is not writable ({exc.strerror}); "
                "fix its permissions or choose another --data-dir"
            ) from None

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
