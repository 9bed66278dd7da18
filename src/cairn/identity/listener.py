"""PostgreSQL ``LISTEN`` for rotations made by other replicas.

A dedicated connection (outside the pool) listens on ``cairn_oidc_keys``; every notification
drops this replica's cached JWKS and signer. On a broken connection it reconnects after 5 s;
meanwhile the cache TTL (60 s) bounds how stale a replica can be.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from cairn.identity.issuer import Issuer
from cairn.identity.store import NOTIFY_CHANNEL

log = logging.getLogger("cairn.identity")
RECONNECT_SECONDS = 5.0


def libpq_url(database_url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix) :]
    return database_url


class RotationListener:
    def __init__(self, database_url: str, issuer: Issuer) -> None:
        self._url = libpq_url(database_url)
        self._issuer = issuer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oidc-listener", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.connected.set()
                    # Anything rotated while we were not listening: reload once.
                    self._issuer.invalidate("listener (re)connected")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._issuer.invalidate(f"notified by another replica ({note.payload})")
            except Exception as exc:  # keep listening whatever happens; the TTL is the backstop
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning(
                    "key-rotation listener lost its connection; reconnecting",
                    extra={"error": type(exc).__name__, "retry_in_s": RECONNECT_SECONDS},
                )
                self._stop.wait(RECONNECT_SECONDS)
