"""Migration 0011 on a SQLite database that holds data: adding ``workspaces.agent_pool_id``
(with its foreign key) keeps every row that references a workspace. (A batch migration
would recreate ``workspaces``; dropping the old table, with foreign keys on, would cascade
to them.) Then down to 0010 and up again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Connection, Engine, text

from cairn.db.engine import make_engine
from cairn.migrations.migrate import alembic_config


def _migrate(engine: Engine, verb: str, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def _insert(conn: Connection, table: str, **values: Any) -> None:
    """A row with ``values`` and a placeholder in every other NOT NULL column."""
    row = dict(values)
    for _, name, kind, notnull, default, pk in conn.execute(text(f"PRAGMA table_info({table})")):
        if name in row or not (notnull or pk) or default is not None:
            continue
        kind = kind.upper()
        if "INT" in kind or "BOOL" in kind:
            row[name] = 0
        elif "DATE" in kind or "TIME" in kind:
            row[name] = "2026-01-01 00:00:00.000000"
        else:
            row[name] = f"{name}-x"
    cols = ", ".join(row)
    marks = ", ".join(f":{c}" for c in row)
    conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({marks})"), row)


def _children(conn: Connection) -> tuple[int, int]:
    tags = conn.execute(text("SELECT count(*) FROM workspace_tags")).scalar()
    states = conn.execute(text("SELECT count(*) FROM state_versions")).scalar()
    return int(tags or 0), int(states or 0)


def test_0011_keeps_the_rows_that_reference_workspaces(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cairn.db'}")
    try:
        _migrate(engine, "upgrade", "0010")
        with engine.begin() as conn:
            _insert(conn, "organizations", id="org-1", name="acme")
            _insert(conn, "projects", id="prj-1", organization_id="org-1", name="Default")
            _insert(
                conn,
                "workspaces",
                id="ws-1",
                organization_id="org-1",
                project_id="prj-1",
                name="app",
            )
            _insert(conn, "tags", id="tag-1", organization_id="org-1", name="t")
            _insert(conn, "workspace_tags", workspace_id="ws-1", tag_id="tag-1")
            _insert(conn, "state_versions", id="sv-1", workspace_id="ws-1", serial=1)
            assert _children(conn) == (1, 1)
        _migrate(engine, "upgrade", "0011")
        with engine.begin() as conn:
            assert _children(conn) == (1, 1)
            cols = {r[1] for r in conn.execute(text("PRAGMA table_info(workspaces)"))}
            assert "agent_pool_id" in cols
            fks = list(conn.execute(text("PRAGMA foreign_key_list(workspaces)")))
            assert any(fk[2] == "agent_pools" and fk[3] == "agent_pool_id" for fk in fks)
        _migrate(engine, "downgrade", "0010")
        with engine.begin() as conn:
            assert _children(conn) == (1, 1)
            cols = {r[1] for r in conn.execute(text("PRAGMA table_info(workspaces)"))}
            assert "agent_pool_id" not in cols
        _migrate(engine, "upgrade", "0011")
        with engine.begin() as conn:
            assert _children(conn) == (1, 1)
    finally:
        engine.dispose()
