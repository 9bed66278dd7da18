"""Finding H2, second half: on PostgreSQL every statement of request work is bounded by
``CAIRN_DB_STATEMENT_TIMEOUT`` (default 5 s), enforced by the server even after the client has
gone, and a statement cut by it is answered as a 503 JSON:API error instead of a hang. Migrations
(which may wait for another replica's) and background maintenance are not bounded by it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from cairn.config import from_environment
from cairn.db import engine as db_engine
from cairn.errors import ConfigError, Unavailable
from tests.support.app import InProcessCairn, build, create_organization, document
from tests.support.postgres import PostgresCluster

SECRET_KEY = "cairn-test-secret-key-0123456789abcdef"
MIGRATION_LOCK = 0x6361_6972  # cairn.migrations.migrate's advisory key


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)


@contextmanager
def held(url: str, statement: str, *, for_seconds: float) -> Iterator[None]:
    """Another session holds a lock (``statement``) until ``for_seconds`` have passed (or the
    block ends, whichever is later): what keeps a statement of cairn's waiting meanwhile."""
    conn = psycopg.connect(url)
    conn.execute(statement)
    release = threading.Timer(for_seconds, conn.rollback)
    release.start()
    try:
        yield
    finally:
        release.join()
        conn.close()


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_the_setting(clean_env: None) -> None:
    assert from_environment(data_dir="/tmp/x").db_statement_timeout == timedelta(seconds=5)


def test_the_setting_from_the_environment(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_DB_STATEMENT_TIMEOUT", "30s")
    assert from_environment(data_dir="/tmp/x").db_statement_timeout == timedelta(seconds=30)
    monkeypatch.setenv("CAIRN_DB_STATEMENT_TIMEOUT", "0")
    assert not from_environment(data_dir="/tmp/x").db_statement_timeout
    monkeypatch.setenv("CAIRN_DB_STATEMENT_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="CAIRN_DB_STATEMENT_TIMEOUT"):
        from_environment(data_dir="/tmp/x")


@pytest.fixture
def pg_app(
    tmp_path: Path,
    admin_token: str,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    pg: PostgresCluster,
) -> Iterator[InProcessCairn]:
    """An in-process cairn on a fresh PostgreSQL database, statement timeout 1 s (set as an
    operator would: in the environment)."""
    monkeypatch.setenv("CAIRN_DB_STATEMENT_TIMEOUT", "1s")
    instance = build(
        tmp_path / "data", admin_token, database_url=pg.create_database(), secret_key=SECRET_KEY
    )
    try:
        yield instance
    finally:
        instance.close()


@pytest.mark.postgres
@pytest.mark.anyio
async def test_a_statement_past_the_timeout_is_a_503(
    pg_app: InProcessCairn, anyio_backend: str
) -> None:
    url = _libpq(pg_app.settings.database_url)
    async with pg_app.client(pg_app.admin_token) as admin:
        org = await create_organization(admin)
        listing = f"/api/v2/organizations/{org}/workspaces"
        document(await admin.get(listing), 200)
        # The list's statement waits for a lock held for 8 s: cut after 1 s, not answered in 8.
        with held(url, "LOCK TABLE workspaces IN ACCESS EXCLUSIVE MODE", for_seconds=8):
            started = time.monotonic()
            answered = await admin.get(listing)
            took = time.monotonic() - started
            error = document(answered, 503)["errors"][0]
            assert took < 6, took
            assert error["status"] == "503"
            assert "CAIRN_DB_STATEMENT_TIMEOUT" in error["detail"]
            # The server gave up on it too: no statement of cairn's is still running.
            with psycopg.connect(url, autocommit=True) as probe:
                running = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query ILIKE '%FROM workspaces%' AND pid <> pg_backend_pid()"
                ).fetchone()
            assert running == (0,)
        # Nothing is left broken: the next request is answered.
        document(await admin.get(listing), 200)


@pytest.mark.postgres
def test_maintenance_and_migrations_are_not_cut(pg: PostgresCluster) -> None:
    from cairn.migrations.migrate import current_revision, head_revision, upgrade

    url = pg.create_database()
    db = db_engine.Database(
        db_engine.make_engine(url, statement_timeout=timedelta(milliseconds=300))
    )
    try:
        # Migrations wait for another replica's (the advisory lock) as long as it takes.
        with held(url, f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})", for_seconds=1.5):
            upgrade(db.engine)
        assert current_revision(db.engine) == head_revision(db.engine)
        # Request work is cut (and answered as Unavailable) ...
        started = time.monotonic()
        with (
            pytest.raises(Unavailable, match="CAIRN_DB_STATEMENT_TIMEOUT"),
            db.unit_of_work() as s,
        ):
            s.execute(text("SELECT pg_sleep(2)"))
        assert time.monotonic() - started < 1.5
        with pytest.raises(Unavailable), db.read_transaction() as conn:
            conn.execute(text("SELECT pg_sleep(2)"))
        # ... maintenance is not, also after a commit begins its next transaction.
        with db_engine.no_statement_timeout(), db.unit_of_work(write=True) as s:
            assert s.scalar(text("SELECT 1 FROM pg_sleep(0.6)")) == 1
            s.commit()
            assert s.scalar(text("SELECT 1 FROM pg_sleep(0.6)")) == 1
        # And the lifted limit does not leak into the pool's connections.
        with pytest.raises(Unavailable), db.unit_of_work() as s:
            s.execute(text("SELECT pg_sleep(2)"))
    finally:
        db.dispose()


def test_sqlite_is_not_affected(tmp_path: Path) -> None:
    db = db_engine.Database(
        db_engine.make_engine(
            f"sqlite:///{tmp_path / 'c.db'}", statement_timeout=timedelta(seconds=1)
        )
    )
    try:
        with db.unit_of_work() as s:
            assert s.scalar(text("SELECT 1")) == 1
    finally:
        db.dispose()
