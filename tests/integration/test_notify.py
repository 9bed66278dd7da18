"""`cairn.db.notify` on a real PostgreSQL: one listening connection serves several channels,
hears a channel subscribed after it started, delivers only what committed, and reconnects
(telling subscribers so) after its connection is killed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import text

from cairn.db.engine import Database, make_engine
from cairn.db.notify import Listener, check_channel, notify
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres


class Heard:
    """What one subscriber received, thread-safe, with a wait."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.connects = 0
        self._cond = threading.Condition()

    def on_notify(self, payload: str) -> None:
        with self._cond:
            self.payloads.append(payload)
            self._cond.notify_all()

    def on_connect(self) -> None:
        with self._cond:
            self.connects += 1
            self._cond.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(done, timeout)


@pytest.fixture
def url(pg: PostgresCluster) -> str:
    return pg.create_database("notify")


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database(make_engine(url))
    yield database
    database.dispose()


@pytest.fixture
def listener(url: str) -> Iterator[Listener]:
    instance = Listener(url, reconnect_seconds=0.2, poll=0.2)
    yield instance
    instance.stop()


def send(db: Database, channel: str, payload: str, *, commit: bool = True) -> None:
    with db.unit_of_work(write=True) as s:
        notify(s, channel, payload)
        if commit:
            s.commit()


def test_one_connection_serves_several_channels(db: Database, listener: Listener) -> None:
    keys, runs = Heard(), Heard()
    listener.subscribe("cairn_test_keys", keys.on_notify, on_connect=keys.on_connect)
    listener.start()
    assert listener.connected.wait(5)
    # Subscribed after the start: heard on the same connection within the poll interval.
    listener.subscribe("cairn_test_runs", runs.on_notify)
    time.sleep(0.5)
    send(db, "cairn_test_keys", "k1")
    send(db, "cairn_test_runs", "r1")
    send(db, "cairn_test_runs", "lost", commit=False)  # rolled back: never delivered
    send(db, "cairn_test_runs", "r2")
    assert keys.wait(lambda: keys.payloads == ["k1"])
    assert runs.wait(lambda: runs.payloads == ["r1", "r2"])
    assert keys.connects == 1
    with db.unit_of_work() as s:
        listening = s.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
        )
    assert listening == 1, "one LISTEN connection for every channel"


def test_reconnects_and_tells_subscribers(db: Database, url: str, listener: Listener) -> None:
    heard = Heard()
    listener.subscribe("cairn_test_keys", heard.on_notify, on_connect=heard.on_connect)
    listener.start()
    assert heard.wait(lambda: heard.connects == 1)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
        )
    assert heard.wait(lambda: heard.connects == 2), "no reconnect after the connection died"
    send(db, "cairn_test_keys", "after")
    assert heard.wait(lambda: heard.payloads == ["after"])


def test_a_failing_subscriber_does_not_silence_the_others(db: Database, listener: Listener) -> None:
    heard = Heard()

    def broken(payload: str) -> None:
        raise RuntimeError("a bug in one subscriber")

    listener.subscribe("cairn_test_keys", broken)
    listener.subscribe("cairn_test_keys", heard.on_notify)
    listener.start()
    assert listener.connected.wait(5)
    send(db, "cairn_test_keys", "one")
    send(db, "cairn_test_keys", "two")
    assert heard.wait(lambda: heard.payloads == ["one", "two"])


def test_channel_names_are_identifiers() -> None:
    assert check_channel("cairn_oidc_keys") == "cairn_oidc_keys"
    for bad in ("", "Keys", "a-b", "x; DROP TABLE t", "a" * 64):
        with pytest.raises(ValueError):
            check_channel(bad)
