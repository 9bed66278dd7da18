"""PostgreSQL ``LISTEN`` / ``NOTIFY``: one listening connection per process, many channels.

A domain that must hear what other replicas did (a key rotation today, a queued run later)
subscribes a callback to its channel; ``notify`` sends, inside the sender's transaction, so a
notification is delivered only if that transaction commits.

One dedicated connection (outside the pool: a pooled connection may not sit in ``LISTEN``)
listens on every subscribed channel, in one thread. Callbacks run on that thread, one at a
time, so each must be quick and thread-safe (drop a cache, wake a worker). When the
connection breaks, it is opened again after ``RECONNECT_SECONDS``, and every subscriber's
``on_connect`` runs once it listens again: whatever was notified meanwhile is lost, so a
subscriber reloads then (and keeps its own backstop, e.g. a cache TTL, for the time it was
cut off). Latency: a notification is handed to its callback within ``poll`` seconds at worst
(the loop also wakes for new subscriptions), in practice at once.

SQLite has a single process writing and nothing to listen to: ``app.py`` builds no listener
there and subscribers rely on their backstop (which is then never needed).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("cairn.db")

RECONNECT_SECONDS = 5.0
_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

OnNotify = Callable[[str], None]  # receives the payload
OnConnect = Callable[[], None]


class Subscriptions(Protocol):
    """What a domain needs to hear notifications (``Listener``, or a fake in tests)."""

    def subscribe(
        self, channel: str, on_notify: OnNotify, *, on_connect: OnConnect | None = None
    ) -> None: ...


def check_channel(channel: str) -> str:
    """A channel name cairn may use: lower-case letters, digits and ``_`` (it is an SQL
    identifier in ``LISTEN``)."""
    if not _CHANNEL.fullmatch(channel):
        raise ValueError(f"{channel!r} is not a valid notification channel name")
    return channel


def notify(conn: Connection | Session, channel: str, payload: str = "") -> None:
    """Send a notification in the transaction of ``conn`` (PostgreSQL only: a no-op on
    other databases). Delivered to every listener only if that transaction commits."""
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    if bind.dialect.name != "postgresql":
        return
    conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": check_channel(channel), "p": payload})


def libpq_url(database_url: str) -> str:
    """cairn's database URL as libpq takes it (no SQLAlchemy driver suffix)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix) :]
    return database_url


@dataclass(frozen=True)
class _Subscriber:
    channel: str
    on_notify: OnNotify
    on_connect: OnConnect | None


class Listener:
    """The process's listening connection (see the module docstring). ``subscribe`` at any
    time; ``start`` / ``stop`` are called by ``app.py``'s lifespan."""

    def __init__(
        self,
        database_url: str,
        *,
        reconnect_seconds: float = RECONNECT_SECONDS,
        poll: float = 1.0,
    ) -> None:
        self._url = libpq_url(database_url)
        self._reconnect = reconnect_seconds
        self._poll = poll
        self._lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []
        self._changed = threading.Event()  # a subscription was added
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def subscribe(
        self, channel: str, on_notify: OnNotify, *, on_connect: OnConnect | None = None
    ) -> None:
        """Call ``on_notify(payload)`` for every notification on ``channel``, and
        ``on_connect()`` each time the connection listens again after being (re)opened."""
        with self._lock:
            self._subscribers.append(_Subscriber(check_channel(channel), on_notify, on_connect))
        self._changed.set()

    @property
    def channels(self) -> list[str]:
        with self._lock:
            return sorted({s.channel for s in self._subscribers})

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cairn-listener", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ---- the listening thread --------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.channels:  # nothing to listen to (yet): no connection
                self._changed.wait()
                self._changed.clear()
                continue
            try:
                self._listen()
            except Exception as exc:  # keep listening whatever happens; subscribers' backstops
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning(
                    "the LISTEN connection was lost; reconnecting",
                    extra={"error": type(exc).__name__, "retry_in_s": self._reconnect},
                )
                self._stop.wait(self._reconnect)

    def _listen(self) -> None:
        import psycopg  # only PostgreSQL deployments pay for the driver's import

        with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
            listening: set[str] = set()
            self._changed.clear()
            self._listen_to(conn, listening)
            self.connected.set()
            for sub in self._all():
                if sub.on_connect is not None:
                    self._call(sub, sub.on_connect)  # anything notified while not listening
            while not self._stop.is_set():
                for note in conn.notifies(timeout=self._poll):
                    for sub in self._all():
                        if sub.channel == note.channel:
                            self._call(sub, sub.on_notify, note.payload)
                    if self._changed.is_set():
                        break  # a new subscription: LISTEN to it before waiting again
                if self._changed.is_set():
                    self._changed.clear()
                    self._listen_to(conn, listening)

    def _listen_to(self, conn: psycopg.Connection[Any], listening: set[str]) -> None:
        from psycopg import sql

        for channel in self.channels:
            if channel not in listening:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                listening.add(channel)

    def _all(self) -> list[_Subscriber]:
        with self._lock:
            return list(self._subscribers)

    @staticmethod
    def _call(sub: _Subscriber, fn: Callable[..., None], *args: str) -> None:
        try:
            fn(*args)
        except Exception:  # one subscriber's bug must not stop the others from hearing
            log.exception("a notification subscriber failed", extra={"channel": sub.channel})
