"""Which blobs state versions reference: the state domain's reference provider for the blob
collector (``blobs.collector``), registered in ``app.py``.

Every state version row counts, whatever its status (a pending version's bytes may be about to
be finalized; a discarded one is deleted with its row), through both its state and its JSON
state digest. Deleting a workspace or an organization deletes its state version rows (foreign
keys cascade), so their blobs become unreferenced and the next sweep past the grace period
reclaims them, unless another version anywhere has the same bytes.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select, union

from cairn.db.engine import Database
from cairn.state.model import StateVersion


class StateBlobReferences:
    """``(digests) -> the referenced ones``, one statement per batch."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __call__(self, digests: Collection[str]) -> set[str]:
        wanted = list(digests)
        if not wanted:
            return set()
        stmt = union(
            select(StateVersion.sha256.label("d")).where(StateVersion.sha256.in_(wanted)),
            select(StateVersion.json_sha256.label("d")).where(StateVersion.json_sha256.in_(wanted)),
        )
        with self._db.unit_of_work() as s:
            return {d for (d,) in s.execute(stmt) if d is not None}
