"""Blobs in the database itself, in 1 MiB chunks: several replicas, no shared disk needed.

Chunks are written under a temporary key ``tmp-<start time>-<random>`` as they arrive (each in
its own short transaction, hashed on the way), then renamed to the content address in one
transaction that also inserts the ``blobs`` row. ``blobs.created_at`` is the blob's last-written
time: a writer that finds the blob already stored refreshes it in that same transaction. A
sweep deletes the ``blobs`` row only while it is still older than the grace period (one
conditional DELETE, which a concurrent refresh either precedes or follows), then its chunks in
small batches, never a chunk of a blob that was stored again meanwhile.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, exists, select, text, update
from sqlalchemy.exc import IntegrityError

from cairn.blobs.filesystem import BlobCorrupted
from cairn.blobs.model import Blob, BlobChunk
from cairn.blobs.store import CHUNK, BlobRef, Hasher, disk_full_error, is_disk_full
from cairn.clock import Clock, SystemClock
from cairn.db.engine import Database, affected
from cairn.errors import ConfigError

log = logging.getLogger("cairn")

_TMP = "tmp-"
# Chunks deleted per transaction (8 MiB): SQLite has one writer, so none is held for long.
_DELETE_BATCH = 8
# Blobs listed per query by iter_stored.
_LIST_BATCH = 1000


class DatabaseBlobWriter:
    def __init__(self, store: DatabaseBlobStore, max_size: int) -> None:
        self._store = store
        self._db = store.db
        started = int(store.clock.now().timestamp())
        self._key = f"{_TMP}{started}-{secrets.token_hex(16)}"
        self._hasher = Hasher(max_size)
        self._buf = bytearray()
        self._seq = 0
        self._done = False

    def write(self, data: bytes) -> None:
        try:
            self._hasher.update(data, then=self._append)
        except BaseException as exc:
            self.abort()
            if is_disk_full(exc):
                raise disk_full_error() from None
            raise

    def _append(self, data: bytes) -> None:
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
        # The chunks were hashed as they were received and each committed by the database:
        # reading them back would prove nothing more, so nothing is read back.
        try:
            if self._buf or self._seq == 0:
                self._flush(bytes(self._buf))
                self._buf.clear()
            ref = self._hasher.ref()
            try:
                self._publish(ref)
            except IntegrityError:
                # Another writer published the same bytes at the same moment: theirs is as good.
                self._store.drop_chunks(self._key)
                if not self._store.exists(ref.sha256):
                    raise
            self._done = True
            return ref
        except BaseException as exc:
            self.abort()
            if is_disk_full(exc):
                raise disk_full_error() from None
            raise

    def _publish(self, ref: BlobRef) -> None:
        """Refresh the stored blob, or give these chunks its content address, in one
        transaction."""
        now = self._store.clock.now()
        with self._db.unit_of_work(write=True) as s:
            refreshed = affected(
                s.execute(update(Blob).where(Blob.sha256 == ref.sha256).values(created_at=now))
            )
            if refreshed:
                s.execute(delete(BlobChunk).where(BlobChunk.sha256 == self._key))
            else:
                # Chunks under this address without a blobs row are what a sweep deleting it
                # has not reached yet (or an interrupted sweep left): replaced by these.
                s.execute(delete(BlobChunk).where(BlobChunk.sha256 == ref.sha256))
                moved = affected(
                    s.execute(
                        update(BlobChunk)
                        .where(BlobChunk.sha256 == self._key)
                        .values(sha256=ref.sha256)
                    )
                )
                if moved != self._seq:
                    raise BlobCorrupted(
                        f"blob {ref.sha256}: {self._seq - moved} of its {self._seq} chunks "
                        "vanished before it was published (removed as an abandoned upload?)"
                    )
                s.add(Blob(sha256=ref.sha256, size=ref.size, chunks=self._seq, created_at=now))
            s.commit()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._store.drop_chunks(self._key)
        except Exception as exc:  # e.g. the disk is full: housekeeping removes them later
            log.warning(
                "could not remove the chunks of an aborted upload; housekeeping will",
                extra={"error": type(exc).__name__},
            )


class DatabaseBlobStore:
    name = "database"

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()

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

    # ---- reclaiming ---------------------------------------------------------------------------

    def iter_stored(self) -> Iterator[tuple[str, datetime]]:
        after = ""
        while True:
            with self.db.unit_of_work() as s:
                rows = s.execute(
                    select(Blob.sha256, Blob.created_at)
                    .where(Blob.sha256 > after)
                    .order_by(Blob.sha256)
                    .limit(_LIST_BATCH)
                ).all()
            yield from ((sha256, written) for sha256, written in rows)
            if len(rows) < _LIST_BATCH:
                return
            after = rows[-1][0]

    def delete(self, sha256: str, *, older_than: datetime) -> bool:
        with self.db.unit_of_work(write=True) as s:
            gone = affected(
                s.execute(delete(Blob).where(Blob.sha256 == sha256, Blob.created_at < older_than))
            )
            s.commit()
        if gone:
            self.drop_chunks(sha256, only_orphans=True)
        return bool(gone)

    def drop_chunks(self, key: str, *, only_orphans: bool = False) -> int:
        """Delete the chunks stored under ``key``, a few per transaction. ``only_orphans``: stop
        as soon as a ``blobs`` row names the key again (a writer stored the bytes anew)."""
        dropped = 0
        while True:
            batch = (
                select(BlobChunk.seq)
                .where(BlobChunk.sha256 == key)
                .order_by(BlobChunk.seq)
                .limit(_DELETE_BATCH)
            )
            stmt = delete(BlobChunk).where(BlobChunk.sha256 == key, BlobChunk.seq.in_(batch))
            if only_orphans:
                stmt = stmt.where(~exists().where(Blob.sha256 == key))
            with self.db.unit_of_work(write=True) as s:
                n = affected(s.execute(stmt.execution_options(synchronize_session=False)))
                s.commit()
            dropped += n
            if n == 0:
                return dropped

    def purge_temporaries(self, older_than: datetime) -> int:
        cutoff = older_than.timestamp()
        with self.db.unit_of_work() as s:
            # LIKE, not a key range: under a PostgreSQL locale collation "-" may not sort
            # where ASCII puts it. (The chunk data is stored out of line: the scan is small.)
            keys = list(
                s.scalars(
                    select(BlobChunk.sha256).where(BlobChunk.sha256.like(_TMP + "%")).distinct()
                )
            )
        removed = 0
        for key in keys:
            stamp = key[len(_TMP) :].split("-", 1)[0]
            # Keys without a start time come from before cairn recorded one: old enough.
            if stamp.isdigit() and "-" in key[len(_TMP) :] and float(stamp) >= cutoff:
                continue
            if self.drop_chunks(key):
                removed += 1
        return removed
