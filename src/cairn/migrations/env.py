"""Alembic environment: cairn passes its own engine or connection; there is no alembic.ini.

On SQLite, foreign keys are turned off while migrations run: Alembic's batch mode rebuilds a
table (copy, drop, rename), and dropping the old table with foreign keys on deletes every row
that references it ``ON DELETE CASCADE`` (0004's rebuild of ``users`` emptied ``api_tokens``).
The pragma only takes effect outside a transaction, so it is set on the raw connection before
the migration's transaction begins; ``PRAGMA foreign_key_check`` then proves, inside that
transaction, that no reference dangles before it commits.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

from cairn.migrations.schema import metadata

config = context.config


def _migrate(conn: Connection) -> None:
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
        if conn.dialect.name == "sqlite":
            dangling = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if dangling:
                raise RuntimeError(
                    f"the migration would leave {len(dangling)} dangling reference(s) "
                    f"(first: {tuple(dangling[0])}); nothing was changed"
                )


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = config.attributes["engine"]
    # A writing transaction (BEGIN IMMEDIATE on SQLite: ``db/engine.py``).
    with engine.connect().execution_options(cairn_write=True) as conn:
        raw: Any = None
        if conn.dialect.name == "sqlite":
            raw = conn.connection.driver_connection
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            _migrate(conn)
            conn.commit()
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


run()
