"""Content-addressed blob storage (state files; later configuration tarballs and logs).

A blob is written to a temporary place while its SHA-256 and MD5 are computed, flushed to
stable storage, read back and verified, and only then given its content address. Callers
commit the database row that points at a blob only after ``BlobWriter.commit`` returned, so a
crash never leaves a row without its bytes.
"""

from cairn.blobs.store import BlobRef, BlobStore, BlobWriter, open_blob_store

__all__ = ["BlobRef", "BlobStore", "BlobWriter", "open_blob_store"]
