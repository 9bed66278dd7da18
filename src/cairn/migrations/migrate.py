"""Alembic migrations, applied at start (and by ``cairn db upgrade``).

Several replicas may start at once on one PostgreSQL: the upgrade runs under a
transaction-level advisory lock so exactly one of them migrates and the others wait.

Alembic itself is imported only when there is something to migrate: importing it costs about
a third of ``cairn serve``'s start (``bench/startup.py``), while knowing that a database is
current takes one ``SELECT`` and the revision lines of the version files (read once).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

_HERE = Path(__file__).parent
_ADVISORY_KEY = 0x6361_6972  # "cair"
_REVISION = re.compile(r"^revision(?:\s*:[^=]*)?=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]*)?=(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"[\"']([^\"']+)[\"']")


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["engine"] = engine
    return cfg


@functools.cache
def _head_from_files() -> str | None:
    """The one revision no other revises, from the version files' ``revision`` and
    ``down_revision`` lines; None when that is not exactly one (Alembic then decides)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (_HERE / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        revised.update(_QUOTED.findall(down.group(1)))
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def head_revision(engine: Engine) -> str | None:
    head = _head_from_files()
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision recorded in the database (None: not migrated yet, or several heads)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision(engine)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision.

    A database with no tables at all is created from the models and stamped at the head
    revision in one transaction (what running every migration in order would give: a test
    compares the two schemas on both databases), without importing Alembic — a third of a
    first start. Migrations therefore only change schemas and existing rows; rows a new
    installation needs are made by the application (``build_services``), never by a migration.
    """
    head = _head_from_files()
    if head is not None and current_revision(engine) == head:
        return
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # Neither the wait for another replica's migration nor a long migration is cut by
            # the statement timeout of request work (CAIRN_DB_STATEMENT_TIMEOUT).
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
            if head is not None and _create_if_empty(conn, head):
                return
            from alembic import command

            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return
    # SQLite: one server per data directory (``datadir.lock``), so nothing races here.
    if head is not None:
        with engine.connect().execution_options(cairn_write=True) as conn, conn.begin():
            created = _create_if_empty(conn, head)
        if created:
            return
    from alembic import command

    # The environment opens its own connection, so that foreign keys can be turned off
    # before its transaction begins (``migrations/env.py``).
    command.upgrade(alembic_config(engine), "head")


def _create_if_empty(conn: Connection, head: str) -> bool:
    """Create every table and record ``head`` when the database holds no table at all."""
    if inspect(conn).get_table_names():
        return False
    from cairn.migrations.schema import metadata

    metadata.create_all(conn)
    conn.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": head})
    return True
