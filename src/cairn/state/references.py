"""Which blobs state versions reference: every state version row, whatever its status (a
pending version's bytes may be about to be finalized; a discarded one is deleted with its row),
through both its state and its JSON state digest (``blobs.references``)."""

from __future__ import annotations

from cairn.blobs.references import ColumnReferences
from cairn.db.engine import Database
from cairn.state.model import StateVersion


def state_blob_references(db: Database) -> ColumnReferences:
    return ColumnReferences(db, StateVersion.sha256, StateVersion.json_sha256)
