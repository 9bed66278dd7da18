"""A deadline on request headers, at the HTTP protocol level (uvicorn has none of its own).

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), but a client that opens a
connection and sends nothing, or sends a request's headers a byte at a time, holds a
connection (a file descriptor, a parser, memory) for as long as it likes; a few hundred such
clients exhaust a server. ``header_timeout_protocol(seconds)`` is uvicorn's httptools protocol
with one more timer: armed when a connection opens and when a new request's first byte
arrives, disarmed when its headers are complete. When it fires, the connection is answered
408 (when no response is in progress) and closed. The body's own deadline (between chunks) is
the request pipeline's (``cairn.tfeapi.http``), which can answer a JSON:API 408.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_MESSAGE = b"the request headers did not arrive in time; send them at once\n"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%s" % (len(_MESSAGE), _MESSAGE)
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers come too slowly."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the first request's timer runs since the connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMED_OUT)
        self.transport.close()


def header_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (``Config(http=…)``) for a header deadline of
    ``seconds``."""
    return type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": float(seconds)}
    )
