"""Upgrading a SQLite database that holds data keeps every row: Alembic's batch mode rebuilds
tables (0004 rebuilds ``users``), and with foreign keys on, dropping the old table deleted
every row referencing it ``ON DELETE CASCADE`` — every API token. ``migrations/env.py`` turns
foreign keys off around the migration and checks them before it commits."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

from cairn.db.engine import make_engine
from cairn.migrations.migrate import alembic_config, upgrade


def test_upgrading_from_0003_keeps_api_tokens(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cairn.db'}")
    try:
        command.upgrade(alembic_config(engine), "0003")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, username, email, is_site_admin, created_at) "
                    "VALUES ('user-a', 'alice', 'a@example.com', 0, '2026-01-01 00:00:00')"
                )
            )
            cols = {r[1]: r for r in conn.execute(text("PRAGMA table_info(api_tokens)"))}
            row = {
                "id": "at-1",
                "user_id": "user-a",
                "token_hash": "h" * 64,
                "kind": "user",
                "description": "",
                "created_at": "2026-01-01 00:00:00",
            }
            row = {k: v for k, v in row.items() if k in cols}
            names = ", ".join(row)
            marks = ", ".join(f":{k}" for k in row)
            conn.execute(text(f"INSERT INTO api_tokens ({names}) VALUES ({marks})"), row)
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM api_tokens")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 1
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
