"""Blobs in the database itself, in 1 MiB chunks: several replicas, no shared disk needed.

Chunks are written under a temporary key as they arrive (each in its own short transaction),
verified by reading them back, then renamed to the content address in one transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError

from cairn.blobs.filesystem import BlobCorrupted
from cairn.blobs.model import Blob, BlobChunk
from cairn.blobs.store import CHUNK, BlobRef, Hasher
from cairn.db.engine import Database
from cairn.errors import ConfigError


class DatabaseBlobWriter:
    def __init__(self, store: DatabaseBlobStore, max_size: int) -> None:
        self._db = store.db
        self._key = "tmp-" + secrets.token_hex(16)
        self._hasher = Hasher(max_size)
        self._buf = bytearray()
        self._seq = 0
        self._done = False

    def write(self, data: bytes) -> None:
        try:
            self._hasher.update(data)
        except Exception:
            self.abort()
            raise
        self._buf += data
        while len(self._buf) >= CHUNK:
            self._flush(bytes(self._buf[:CHUNK]))
            del self._buf[:CHUNK]

    def _flush(self, chunk: bytes) -> None:
        with self._db.unit_of_work(write=True) as s:
            s.add(BlobChunk(sha256=self._key, seq=self._seq, data=chunk))
            s.commit()
        self._seq += 1

    def commit(self) -> BlobRef:
        try:
            if self._buf or self._seq == 0:
                self._flush(bytes(self._buf))
                self._buf.clear()
            ref = self._hasher.ref()
            digest, size = hashlib.sha256(), 0
            with self._db.unit_of_work() as s:
                for (data,) in s.execute(
                    select(BlobChunk.data)
                    .where(BlobChunk.sha256 == self._key)
                    .order_by(BlobChunk.seq)
                    .execution_options(yield_per=4)
                ):
                    digest.update(data)
                    size += len(data)
            if size != ref.size or digest.hexdigest() != ref.sha256:
                raise BlobCorrupted(f"blob {ref.sha256} did not read back as written")
            try:
                self._publish(ref)
            except IntegrityError:
                # Another writer stored the same bytes at the same moment: theirs is as good.
                with self._db.unit_of_work(write=True) as s:
                    s.execute(delete(BlobChunk).where(BlobChunk.sha256 == self._key))
                    found = s.get(Blob, ref.sha256) is not None
                    s.commit()
                if not found:
                    raise
            self._done = True
            return ref
        except BaseException:
            self.abort()
            raise

    def _publish(self, ref: BlobRef) -> None:
        """Give the verified chunks their content address, in one transaction."""
        with self._db.unit_of_work(write=True) as s:
            if s.get(Blob, ref.sha256) is None:
                s.execute(
                    update(BlobChunk).where(BlobChunk.sha256 == self._key).values(sha256=ref.sha256)
                )
                s.add(
                    Blob(
                        sha256=ref.sha256,
                        size=ref.size,
                        chunks=self._seq,
                        created_at=datetime.now(UTC),
                    )
                )
            else:
                s.execute(delete(BlobChunk).where(BlobChunk.sha256 == self._key))
            s.commit()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with self._db.unit_of_work(write=True) as s:
            s.execute(delete(BlobChunk).where(BlobChunk.sha256 == self._key))
            s.commit()


class DatabaseBlobStore:
    name = "database"

    def __init__(self, db: Database) -> None:
        self.db = db

    def check(self) -> None:
        try:
            with self.db.unit_of_work() as s:
                s.execute(text("SELECT 1"))
        except Exception as exc:  # the database is the store: it must answer
            raise ConfigError(f"the database blob store is unreachable: {exc}") from None

    def writer(self, *, max_size: int) -> DatabaseBlobWriter:
        return DatabaseBlobWriter(self, max_size)

    def iter_chunks(self, sha256: str) -> Iterator[bytes]:
        with self.db.unit_of_work() as s:
            blob = s.get(Blob, sha256)
            if blob is None:
                raise FileNotFoundError(sha256)
            count = blob.chunks
        for seq in range(count):
            with self.db.unit_of_work() as s:
                chunk = s.get(BlobChunk, (sha256, seq))
                if chunk is None:
                    raise FileNotFoundError(f"{sha256} chunk {seq}")
                data = chunk.data
            yield data

    def local_path(self, sha256: str) -> Path | None:
        return None

    def exists(self, sha256: str) -> bool:
        with self.db.unit_of_work() as s:
            return s.get(Blob, sha256) is not None
