"""Partial indexes (``cairn.db.base.partial_index``) carry their condition for SQLite at once
and for PostgreSQL once a PostgreSQL engine is made, so that importing the models (every
start on SQLite) does not import SQLAlchemy's PostgreSQL dialect."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import Column, Integer, MetaData, String, Table, create_mock_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex

from cairn.db.base import partial_index, with_postgresql_options


def test_importing_the_app_does_not_import_the_postgresql_dialect() -> None:
    code = "import sys, cairn.app; print('sqlalchemy.dialects.postgresql' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", (
        "a module imports sqlalchemy.dialects.postgresql when the app is imported: declare "
        "partial indexes with cairn.db.base.partial_index(..., where=...) instead of "
        "postgresql_where=, and import dialect inserts inside the function that uses them"
    )


def dialect(name: str) -> Dialect:
    return create_mock_engine(f"{name}://", executor=None).dialect


def test_both_dialects_get_the_condition() -> None:
    metadata = MetaData()
    before = partial_index("ix_before", "a", unique=True, where="s = 'x'")
    Table("t1", metadata, Column("a", Integer), Column("s", String), before)
    with_postgresql_options()
    with_postgresql_options()  # idempotent
    after = partial_index("ix_after", "a", where="s = 'y'")
    Table("t2", metadata, Column("a", Integer), Column("s", String), after)
    for index, where in ((before, "s = 'x'"), (after, "s = 'y'")):
        for name in ("sqlite", "postgresql"):
            ddl = str(CreateIndex(index).compile(dialect=dialect(name)))
            assert ddl.endswith(f"WHERE {where}"), (name, ddl)
    assert str(CreateIndex(before).compile(dialect=dialect("postgresql"))).startswith(
        "CREATE UNIQUE INDEX ix_before"
    )
