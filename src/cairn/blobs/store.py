"""The blob store interface, and the factory that picks an implementation from settings."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cairn.errors import PayloadTooLarge

if TYPE_CHECKING:
    pass

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BlobRef:
    """What a stored blob is: its content address, its MD5 (Terraform's checksum) and size."""

    sha256: str
    md5: str
    size: int


class BlobWriter(Protocol):
    def write(self, data: bytes) -> None:
        """Append bytes. Raises PayloadTooLarge past the writer's limit (and aborts)."""

    def commit(self) -> BlobRef:
        """Make the bytes durable, verify them, and store them under their SHA-256."""

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


class Hasher:
    """SHA-256, MD5 and size of a stream, with a size limit."""

    def __init__(self, max_size: int) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.max_size = max_size

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_size:
            raise PayloadTooLarge(
                f"the upload exceeds the limit of {self.max_size // (1024 * 1024)} MiB "
                "(CAIRN_MAX_STATE_MB raises it)"
            )
        self.sha256.update(data)
        self.md5.update(data)

    def ref(self) -> BlobRef:
        return BlobRef(self.sha256.hexdigest(), self.md5.hexdigest(), self.size)
