"""PostgreSQL connections without a ping per transaction (``cairn.db.engine``): a connection
that died while resting in the pool is replaced at checkout, unseen by the request; one that
dies while in use fails that request with a 503 saying to try again, and the next request
works."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from cairn.db import engine as engine_module
from cairn.db.engine import Database, make_engine
from cairn.errors import Unavailable
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def url(pg: PostgresCluster) -> str:
    return pg.create_database("pool")


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database(make_engine(url, pool_size=1))
    yield database
    database.dispose()


def _backend_pid(db: Database) -> int:
    with db.transaction() as current:
        return int(current.conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(url: str, pid: int) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_dead_idle_connection_is_replaced_at_checkout(
    db: Database, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "IDLE_PING", 0.0)  # every rested connection is pinged
    first = _backend_pid(db)
    _kill(url, first)
    second = _backend_pid(db)  # no error: the dead connection was found and replaced
    assert second != first


def test_no_ping_for_a_connection_in_steady_use(db: Database, url: str) -> None:
    """Within IDLE_PING a pooled connection is used as it is: its death shows in the request
    (503, try again), and the pool is renewed for the next one."""
    first = _backend_pid(db)
    _kill(url, first)
    with pytest.raises(Unavailable, match="lost its connection to the database"):
        _backend_pid(db)
    assert _backend_pid(db) != first


def test_no_round_trip_of_a_ping_in_a_busy_transaction(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialect = db.engine.dialect
    real_ping = dialect.do_ping
    pings: list[object] = []

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return bool(real_ping(dbapi_connection))  # type: ignore[arg-type]

    _backend_pid(db)  # the pool holds a connection
    monkeypatch.setattr(dialect, "do_ping", counted)
    for _ in range(3):
        _backend_pid(db)
    assert pings == []
