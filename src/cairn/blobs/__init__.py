"""Content-addressed blob storage (state files, configuration tarballs, plan files).

A blob is written to a temporary place while its SHA-256 and MD5 are computed (in parallel),
flushed to stable storage, and only then given its content address. Callers commit the database
row that points at a blob only after ``BlobWriter.commit`` returned, so a crash never leaves a
row without its bytes. Blobs no row references are reclaimed after a grace period by
``blobs.collector`` (mark-and-sweep; domains register what their rows reference).
"""

from __future__ import annotations

from cairn.blobs.database import DatabaseBlobStore
from cairn.blobs.filesystem import FilesystemBlobStore
from cairn.blobs.store import BlobRef, BlobStore, BlobWriter
from cairn.clock import Clock
from cairn.config import Settings
from cairn.db.engine import Database

__all__ = ["BlobRef", "BlobStore", "BlobWriter", "open_blob_store"]


def open_blob_store(settings: Settings, db: Database, clock: Clock | None = None) -> BlobStore:
    """The configured store (``CAIRN_BLOB_STORE``), checked: a store that cannot be used is a
    startup error, never a silent fallback. ``clock`` stamps blobs' last-written times."""
    store: BlobStore
    if settings.blob_store == "database":
        store = DatabaseBlobStore(db, clock)
    elif settings.blob_store == "s3":
        # Imported here: boto3 costs start-up time that only an S3 deployment should pay.
        from cairn.blobs.s3 import S3BlobStore, S3Location

        assert settings.s3_bucket is not None  # Settings.validate requires it
        store = S3BlobStore(
            S3Location(settings.s3_bucket, settings.s3_endpoint, settings.s3_prefix),
            clock=clock,
        )
    else:
        store = FilesystemBlobStore(settings.data_dir / "blobs", clock)
    store.check()
    return store
