"""Which blobs a table's rows reference: the blob collector's reference provider
(``blobs.collector``) made from the columns that hold blob digests.

Each domain whose rows point at blobs registers one in ``app.py``, naming its digest columns
(state versions: the state and the JSON state; configuration versions: the archive; plans: the
plan file and the JSON plan). Every row counts, whatever its status; deleting rows (a
workspace's, by foreign-key cascade) makes their blobs unreferenced, and the next sweep past
the grace period reclaims them unless another row anywhere holds the same bytes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select, union

from cairn.db.engine import Database


class ColumnReferences:
    """``(digests) -> the referenced ones``: one statement per batch over ``columns``
    (SQLAlchemy column expressions of one or more tables holding SHA-256 digests)."""

    def __init__(self, db: Database, *columns: Any) -> None:
        if not columns:
            raise ValueError("name at least one column holding blob digests")
        self._db = db
        self._columns = columns

    def __call__(self, digests: Collection[str]) -> set[str]:
        wanted = list(digests)
        if not wanted:
            return set()
        selects = [select(c.label("d")).where(c.in_(wanted)) for c in self._columns]
        stmt = union(*selects) if len(selects) > 1 else selects[0].distinct()
        with self._db.unit_of_work() as s:
            return {d for (d,) in s.execute(stmt) if d is not None}
