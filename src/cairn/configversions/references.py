"""Which blobs configuration versions reference: every row's archive, whatever its status
(``blobs.references``)."""

from __future__ import annotations

from cairn.blobs.references import ColumnReferences
from cairn.configversions.model import ConfigurationVersion
from cairn.db.engine import Database


def config_blob_references(db: Database) -> ColumnReferences:
    return ColumnReferences(db, ConfigurationVersion.blob_sha256)
