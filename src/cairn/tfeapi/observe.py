"""Request logging and Prometheus metrics, as one pure-ASGI middleware (cheap per request).

Per request, on the event loop, the middleware only reads the clock twice, bumps two
pre-bound metric children (resolved once per method and status, not per request) and, when the
request is logged, puts a tuple on a queue: the access-log line is built, redacted and
formatted by a writer thread (``AccessLogWriter``), off the loop. ``CAIRN_ACCESS_LOG`` says
which requests get a line (``AccessLog``): ``on`` (every one, the default, but the public doors
one in 100), ``all`` (every one, public doors included), ``off`` (none), or ``sample:N`` (one in
N, the public doors one in N or 100, whichever is rarer); every 5xx always gets one.
``/healthz``, ``/readyz`` and ``/metrics`` never do.

The public doors (``public_doors``: discovery documents and the JWKS, raw-ASGI endpoints that
answer fixed bytes from memory to anyone, marked ``public_door = True``) are answered here,
before Starlette's exception middleware and router: they are the requests cloud providers and
clients make most, and the route matching would cost as much as the answer. They get the same
security headers and metrics as every request.

Audit events recorded while a logged request runs ride on its line (``"audit": [...]``,
``cairn.logs.request_events``) instead of making a second line; those of requests that get no
line are logged on their own, as outside requests.

Paths are logged with secrets removed: upload URLs carry a signed token in the path.

The same middleware is the last line of the response's defence:

- every response says ``X-Content-Type-Options: nosniff``; HTML pages (the login pages) also
  refuse to be framed (``X-Frame-Options: DENY``, CSP ``frame-ancestors 'none'``), leak no
  Referer, and allow no script, only their own inline style and forms posting to cairn (or to
  the loopback redirect of ``terraform login``, where the login form's redirect goes);
- an exception no handler caught becomes a JSON:API 500 with a request id (also in the log
  line with the traceback, never sent to the client). It is answered here rather than by
  Starlette's ``ServerErrorMiddleware``, which re-raises after answering, so uvicorn would
  close a keep-alive connection that the client is about to reuse.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn.errors import ApiError
from cairn.logs import request_events
from cairn.tfeapi.jsonapi import JsonApiResponse
from cairn.tfeapi.service_discovery import API_VERSION, RATE_LIMIT

log = logging.getLogger("cairn.http")
_SECRET_SEGMENT = re.compile(r"/(hosted-upload)/[^/?]+")
_UNLOGGED = frozenset({"/healthz", "/readyz", "/metrics"})
# Methods with a label of their own; anything else a client sends is counted as "other", so a
# client cannot grow the metrics without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

API_HEADERS = [
    (b"tfp-api-version", API_VERSION.encode()),
    (b"x-ratelimit-limit", RATE_LIMIT.encode()),
    (b"tfp-appname", b"Terraform Enterprise"),
]


NOSNIFF = (b"x-content-type-options", b"nosniff")
HTML_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; "
        b"form-action 'self' http://localhost:* http://127.0.0.1:*; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
]


def _security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    for name, value in headers:
        if name.lower() == b"content-type":
            if value.startswith(b"text/html"):
                return [*headers, NOSNIFF, *HTML_HEADERS]
            break
    return [*headers, NOSNIFF]


def redact_path(path: str) -> str:
    return _SECRET_SEGMENT.sub(r"/\1/<redacted>", path)


# ---- which requests are logged -------------------------------------------------------------------


# The public doors get one line in this many requests unless CAIRN_ACCESS_LOG=all: anonymous,
# cacheable, fixed answers, fetched by every cloud that checks a token (a line costs as much
# CPU as the answer). They are still counted, each one, in the metrics.
DOOR_SAMPLE = 100


@dataclass(frozen=True)
class AccessLog:
    """``CAIRN_ACCESS_LOG``: which requests get a line. ``every``: one request in ``every``
    (0: none), ``doors``: one request to a public door in ``doors`` (0: none); every response
    >= 500 gets one whatever the sample. ``on`` = (1, 100), ``all`` = (1, 1), ``off`` = (0, 0),
    ``sample:N`` = (N, max(N, 100))."""

    every: int = 1
    doors: int = DOOR_SAMPLE

    @classmethod
    def parse(cls, value: str) -> AccessLog:
        """The setting from its text; ValueError saying what is accepted otherwise."""
        text = value.strip().lower()
        if text in ("", "on"):
            return cls(1, DOOR_SAMPLE)
        if text == "all":
            return cls(1, 1)
        if text == "off":
            return cls(0, 0)
        kind, _, n = text.partition(":")
        if kind == "sample" and n.isascii() and n.isdigit() and int(n) >= 1:
            return cls(int(n), max(int(n), DOOR_SAMPLE))
        raise ValueError(
            f"CAIRN_ACCESS_LOG must be on, all, off or sample:N (N >= 1, one request in N), "
            f"not {value!r}"
        )

    def __str__(self) -> str:
        if self.every == 1:
            return "all" if self.doors == 1 else "on"
        return "off" if self.every == 0 else f"sample:{self.every}"


def public_doors(routes: Iterable[BaseRoute]) -> dict[str, ASGIApp]:
    """The public doors among ``routes`` (top-level ``Route``s without path parameters whose
    endpoint is marked ``public_door = True``), by path: what ``ObserveMiddleware`` answers
    for GET and HEAD without Starlette's router."""
    return {
        route.path: route.app
        for route in routes
        if isinstance(route, Route)
        and not route.param_convertors
        and getattr(route.endpoint, "public_door", False) is True
        and route.methods is not None
        and {"GET", "HEAD"} <= route.methods
    }


# ---- the writer thread ---------------------------------------------------------------------------

_LINGER = 0.005  # seconds the writer rests after each batch
_BATCH = 1000  # entries written per batch at most
_YIELD_EVERY = 16  # entries written between two offers of the GIL to the event loop

# One access-log entry, as the loop hands it over: wall-clock time at the end of the request,
# method, raw path, status, seconds taken, client address, the audit events it carries.
Entry = tuple[float, str, str, int, float, str, list[dict[str, Any]] | None]


class AccessLogWriter:
    """Builds and emits the access-log records of the entries put on its queue, in a daemon
    thread of its own (started on first use): the redaction, the ``LogRecord`` and the
    formatting (JSON or text) cost more than the rest of the middleware together, and none of
    it has to happen before the next request is served. It writes in batches, resting
    ``_LINGER`` seconds between them (a line appears a few milliseconds later). Lines are
    flushed at exit."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Entry | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, entry: Entry) -> None:
        if self._thread is None:
            self._start()
        self._queue.put(entry)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="cairn-access-log", daemon=True)
                thread.start()
                self._thread = thread
                atexit.register(self.close)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every entry put so far has been emitted (tests, shutdown)."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            written = 0
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    batch.append(self._queue.get_nowait())
            for item in batch:
                if item is None:
                    return
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                try:
                    emit(item)
                except Exception:  # a broken handler must not stop the lines after it
                    logging.getLogger("cairn.logs").exception("could not write an access-log line")
                written += 1
                if written % _YIELD_EVERY == 0:
                    time.sleep(0)  # let the event loop have the GIL: no long stall of requests
            # Lines of the requests served meanwhile are written together: while this thread
            # sleeps, putting an entry wakes nobody (no system call on the event loop).
            time.sleep(_LINGER)


def emit(entry: Entry) -> None:
    """The access-log record of one entry, to the ``cairn.http`` logger's handlers."""
    created, method, path, status, elapsed, client, audit = entry
    if not log.isEnabledFor(logging.INFO):
        return
    extra: dict[str, Any] = {
        "method": method,
        "path": redact_path(path),
        "status": status,
        "ms": round(elapsed * 1000, 2),
        "client": client,
    }
    if audit:
        extra["audit"] = audit
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None, extra=extra)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    log.handle(record)


WRITER = AccessLogWriter()


# ---- metrics -------------------------------------------------------------------------------------


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cairn_http_requests_total",
            "HTTP requests",
            ["method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "cairn_http_request_duration_seconds",
            "HTTP request duration",
            ["method"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
        )
        self.locks = Counter(
            "cairn_workspace_lock_total",
            "Workspace lock attempts",
            ["outcome"],
            registry=self.registry,
        )
        # Children bound once per (method, status): ``labels()`` validates and joins its
        # arguments under a lock on every call, which costs more than the count itself.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def children(self, method: str, status: int) -> tuple[Any, Any]:
        """The request counter's and the duration histogram's children for these labels."""
        key = (method, status)
        found = self._children.get(key)
        if found is None:
            label = method if method in _METHODS else "other"
            found = (self.requests.labels(label, str(status)), self.duration.labels(label))
            self._children[key] = found
        return found

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


# ---- the middleware ------------------------------------------------------------------------------


class ObserveMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        access_log: AccessLog | str = "on",
        writer: AccessLogWriter | None = None,
        doors: Mapping[str, ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = (
            access_log if isinstance(access_log, AccessLog) else AccessLog.parse(access_log)
        )
        self.writer = writer if writer is not None else WRITER
        # Answered here for GET and HEAD, without the router (see the module's docstring).
        self.doors = dict(doors or {})
        self._count = itertools.count()
        self._door_count = itertools.count()

    def _sampled(self, door: bool) -> bool:
        every = self.access_log.doors if door else self.access_log.every
        if every <= 1:
            return every == 1
        return next(self._door_count if door else self._count) % every == 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        app = self.doors.get(path)
        if app is None or scope["method"] not in ("GET", "HEAD"):
            app = self.app
        door = app is not self.app
        is_api = path.startswith("/api/v2")
        status = 500
        started = False
        logged = self.access_log.every != 0 and path not in _UNLOGGED
        sampled = logged and self._sampled(door)
        # Audit events of a sampled request join its line (cairn.logs.request_events).
        events: list[dict[str, Any]] | None = [] if sampled else None
        token = request_events.set(events) if sampled else None

        async def wrapped(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                headers = _security_headers(list(message.get("headers", [])))
                message["headers"] = headers + API_HEADERS if is_api else headers
            await send(message)

        try:
            await app(scope, receive, wrapped)
        except Exception:
            if started:  # too late for an answer: the connection must close
                raise
            request_id = secrets.token_hex(8)
            log.exception(
                "unhandled error", extra={"path": redact_path(path), "request_id": request_id}
            )
            err = ApiError(
                f"cairn failed to handle this request; the error is in the server log "
                f"(request id {request_id})"
            )
            response = JsonApiResponse(
                {"errors": [{"id": request_id, **err.to_jsonapi()}]},
                status_code=err.status,
                headers={"X-Request-Id": request_id},
            )
            await response(scope, receive, wrapped)
        finally:
            if token is not None:
                request_events.reset(token)
            elapsed = time.perf_counter() - start
            method: str = scope["method"]
            count, duration = self.metrics.children(method, status)
            count.inc()
            duration.observe(elapsed)
            if sampled or (logged and status >= 500):
                client = scope.get("client")
                self.writer.put(
                    (
                        time.time(),
                        method,
                        path,
                        status,
                        elapsed,
                        client[0] if client else "-",
                        events or None,
                    )
                )
