"""Content-addressed blob storage (state files; later configuration tarballs and logs).

A blob is written to a temporary place while its SHA-256 and MD5 are computed, flushed to
stable storage, read back and verified, and only then given its content address. Callers
commit the database row that points at a blob only after ``BlobWriter.commit`` returned, so a
crash never leaves a row without its bytes.
"""

from __future__ import annotations

from cairn.blobs.database import DatabaseBlobStore
from cairn.blobs.filesystem import FilesystemBlobStore
from cairn.blobs.store import BlobRef, BlobStore, BlobWriter
from cairn.config import Settings
from cairn.db.engine import Database

__all__ = ["BlobRef", "BlobStore", "BlobWriter", "open_blob_store"]


def open_blob_store(settings: Settings, db: Database) -> BlobStore:
    """The configured store (``CAIRN_BLOB_STORE``), checked: a store that cannot be used is a
    startup error, never a silent fallback."""
    store: BlobStore
    if settings.blob_store == "database":
        store = DatabaseBlobStore(db)
    else:
        store = FilesystemBlobStore(settings.data_dir / "blobs")
    store.check()
    return store
