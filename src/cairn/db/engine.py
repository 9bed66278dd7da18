"""Engines for SQLite (embedded default) and PostgreSQL (replicas), and the unit of work.

SQLite: WAL, a busy timeout, foreign keys on, and ``BEGIN IMMEDIATE`` for units of work that
write, so two writers queue on the database lock instead of failing half-way with
"database is locked" when a read transaction tries to upgrade.

PostgreSQL: every connection has a ``statement_timeout`` (``CAIRN_DB_STATEMENT_TIMEOUT``), so
no request can keep a backend busy after its client has gone; a statement cut by it is
answered 503 (``Unavailable``). Work that may legitimately run longer (background
maintenance) runs inside ``no_statement_timeout()``; migrations lift it in their own
transaction.

PostgreSQL connections are not pinged at every checkout (``pool_pre_ping`` would add a round
trip to every transaction): only one that sat idle in the pool for ``IDLE_PING`` seconds is
checked first (and replaced if dead: what idle timeouts, firewalls and server restarts kill).
A connection that dies while in use fails its statement; SQLAlchemy then recycles every
connection of the pool opened before it, and the request is answered 503 ("try again"),
never with a half-done write.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from cairn.datadir import private_sqlite, sqlite_path
from cairn.db.base import with_postgresql_options
from cairn.errors import Unavailable

_WRITE = "cairn_write"
# PostgreSQL's SQLSTATE for a statement cancelled (by statement_timeout or pg_cancel_backend).
_QUERY_CANCELED = "57014"
# Seconds a PostgreSQL connection may rest in the pool before it is pinged at checkout.
IDLE_PING = 10.0
# Set inside no_statement_timeout(): transactions begun then lift the statement timeout.
_unbounded: ContextVar[bool] = ContextVar("cairn_no_statement_timeout", default=False)


@contextmanager
def no_statement_timeout() -> Iterator[None]:
    """Transactions begun inside this block (in this thread or context) are not bounded by the
    PostgreSQL statement timeout: for background maintenance, never for request work."""
    token = _unbounded.set(True)
    try:
        yield
    finally:
        _unbounded.reset(token)


def statement_timed_out(exc: BaseException) -> bool:
    """Whether a database error is a statement cancelled by the statement timeout."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == _QUERY_CANCELED


@contextmanager
def _timeouts_answered() -> Iterator[None]:
    """A statement cut by the statement timeout becomes a 503 for the client."""
    try:
        yield
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable(
                "cairn lost its connection to the database during this request, so its "
                "changes may not have been saved; check, then try again"
            ) from exc
        if not statement_timed_out(exc):
            raise
        raise Unavailable(
            "the database gave up on this request: one of its statements ran longer than the "
            "statement timeout (CAIRN_DB_STATEMENT_TIMEOUT); narrow the request or try again "
            "later"
        ) from exc


class _Current:
    """The unit of work in progress: its connection, and its Session, made only when something
    asks for one (a request that only runs Core statements, e.g. a token mint, never pays for
    a Session)."""

    def __init__(self, conn: Connection, write: bool, sessions: sessionmaker[Session]) -> None:
        self.conn = conn
        self.write = write
        self._sessions = sessions
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            # "control_fully": the Session owns the connection's transaction even when Core
            # statements began it, so a service's commit() commits the unit of work.
            self._session = self._sessions(bind=self.conn, join_transaction_mode="control_fully")
        return self._session

    def close(self) -> None:
        if self._session is not None:
            # close() ends an uncommitted transaction (rollback) and detaches the objects
            # without expiring them, so services can return what they loaded.
            self._session.close()


# The unit of work this thread (context) is inside: nested units of work join it.
_current: ContextVar[_Current | None] = ContextVar("cairn_unit_of_work", default=None)


def current_session() -> Session | None:
    """The session of the unit of work in progress, if any."""
    cur = _current.get()
    return cur.session if cur is not None else None


def sqlalchemy_url(database_url: str) -> str:
    """Map cairn's documented URL forms onto SQLAlchemy drivers."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    return database_url


def make_engine(
    database_url: str, *, pool_size: int = 10, statement_timeout: timedelta | None = None
) -> Engine:
    """The engine for ``database_url``. ``statement_timeout`` (PostgreSQL; None or zero: no
    limit): the longest any one statement may run, outside ``no_statement_timeout()``."""
    url = sqlalchemy_url(database_url)
    if url.startswith("sqlite"):
        database = sqlite_path(database_url)
        if database is not None:
            # Created 0600 before SQLite opens it: SQLite gives the WAL, SHM and journal the
            # database file's mode, so all of them stay private whatever the umask.
            private_sqlite(database)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=pool_size,
            # Statement parameters (state outputs, token hashes, emails) never appear in an
            # exception's message, so never in a log line.
            hide_parameters=True,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            write = conn.get_execution_options().get(_WRITE, False)
            # On the driver's connection: a statement through SQLAlchemy (exec_driver_sql)
            # would cost as much as the rest of a short transaction. Errors are wrapped as
            # SQLAlchemy would have (e.g. OperationalError for "database is locked").
            statement = "BEGIN IMMEDIATE" if write else "BEGIN"
            try:
                conn.connection.dbapi_connection.execute(statement)
            except sqlite3.Error as exc:
                raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc

        return engine
    # The models' partial indexes get their PostgreSQL spelling (cairn.db.base.partial_index).
    with_postgresql_options()
    millis = int(statement_timeout.total_seconds() * 1000) if statement_timeout else 0
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,  # never statement parameters in exceptions or logs
        # Set at connect time (no round trip per transaction); the server enforces it even
        # when the client has gone.
        connect_args={"options": f"-c statement_timeout={millis}"} if millis > 0 else {},
    )
    _ping_when_idle(engine)
    if millis > 0:

        @event.listens_for(engine, "begin")
        def _on_begin_pg(conn: Any) -> None:
            if _unbounded.get():
                conn.connection.dbapi_connection.execute("SET LOCAL statement_timeout = 0")

    return engine


def _ping_when_idle(engine: Engine, idle: float | None = None) -> None:
    """Ping a pooled connection at checkout only when it rested ``idle`` seconds (default
    ``IDLE_PING``) or more; a dead one is replaced (the pool retries the checkout)."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["cairn_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("cairn_idle_since", None)
        limit = IDLE_PING if idle is None else idle
        if since is None or time.monotonic() - since < limit:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the driver's error for a closed connection
            raise DisconnectionError("a pooled connection to the database was dead") from exc


class Database:
    """The engine and its sessions. ``unit_of_work`` is the way services touch rows;
    ``read_transaction`` / ``write_transaction`` are its Core counterparts for hot paths that
    select or write a few columns (token lookups, audit events of token mints).

    Units of work nest: inside one (the request pipeline opens one per request, see
    ``cairn.tfeapi.http``), ``unit_of_work`` and the Core transactions join it instead of
    opening another transaction, so authentication, the services a handler calls and their
    audit events share one transaction. A service's ``session.commit()`` commits it. A write
    asked for inside a read-only unit of work gets a transaction of its own (on SQLite a read
    transaction must not turn into a writer: it could fail at once on a stale snapshot)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=True)
        # SQLite's busy handler sleeps in growing steps instead of waking when the lock frees:
        # writers of this process queue on a lock first (busy_timeout still covers others).
        self._sqlite_writer = threading.RLock()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def unit_of_work(self, *, write: bool = False) -> Iterator[Session]:
        """A transaction that rolls back unless the body calls ``session.commit()`` (or, when
        nested, the unit of work it joins)."""
        with self.transaction(write=write) as current:
            yield current.session

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[_Current]:
        """The unit of work without a Session up front (the request pipeline's job): nested
        units of work and Core transactions join it; a Session is made on first use."""
        outer = _current.get()
        if outer is not None and (outer.write or not write or not self.is_sqlite):
            yield outer
            return
        serialise = write and self.is_sqlite
        if serialise:
            self._sqlite_writer.acquire()
        try:
            # One connection for the whole unit of work, so every transaction it begins (after
            # a service's commit, too) is BEGIN IMMEDIATE on SQLite when it writes.
            with _timeouts_answered(), self.engine.connect() as conn:
                if serialise:
                    conn.execution_options(**{_WRITE: True})
                current = _Current(conn, write or not self.is_sqlite, self._sessions)
                token = _current.set(current)
                try:
                    yield current
                finally:
                    _current.reset(token)
                    current.close()
        finally:
            if serialise:
                self._sqlite_writer.release()

    @contextmanager
    def read_transaction(self) -> Iterator[Connection]:
        """A Core read transaction without a Session (one snapshot, rolled back at the end),
        for hot paths that select a few columns: the Session's machinery costs more there
        than the queries. Inside a unit of work: its connection."""
        outer = _current.get()
        if outer is not None:
            yield outer.session.connection() if outer._session is not None else outer.conn
            return
        with _timeouts_answered(), self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                yield conn
            finally:
                transaction.rollback()

    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """A Core write transaction without a Session, for hot paths that write a few rows with
        Core statements: committed when the body returns, rolled back if it raises. Serialised
        on SQLite like ``unit_of_work(write=True)``. Inside a writing unit of work: its
        connection, committed with it."""
        outer = _current.get()
        if outer is not None and (outer.write or not self.is_sqlite):
            yield outer.session.connection() if outer._session is not None else outer.conn
            return
        serialise = self.is_sqlite
        if serialise:
            self._sqlite_writer.acquire()
        try:
            with _timeouts_answered(), self.engine.connect() as conn:
                conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    yield conn
        finally:
            if serialise:
                self._sqlite_writer.release()

    def dispose(self) -> None:
        self.engine.dispose()


def affected(result: Result[Any]) -> int:
    """Rows matched by an UPDATE or DELETE: how a conditional write learns whether it won."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)
