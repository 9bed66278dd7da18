"""The request pipeline: the one way a request enters cairn's APIs.

``route(path, handler, methods, *, auth=…, executor=…, write=…, limit=…)`` wraps a handler.
For every request the pipeline:

1. takes the credential off the request (no database): none on a route that needs one is a
   401 at once;
2. reads the body on the event loop, up to the route's ``limit``: a larger body is refused
   (413), but only once the caller is known to be allowed in ("401 before 413"); a client
   that lets more than ``body_timeout`` pass between two chunks is answered 408 and the
   connection closed (slow headers are cut by ``cairn.tfeapi.timeouts``);
3. runs one **job** on the route's executor — one thread hop and one transaction (a unit of
   work, ``write`` for the methods that change things), in which the authenticator checks the
   credential, then the handler parses, authorizes and calls services; the services' own units
   of work join that transaction (``Database.unit_of_work`` reuses the current one);
4. turns every ``ApiError`` into an error document (JSON:API, or the route's renderer, e.g.
   HTML for the login pages).

Executors:

- ``"thread"`` (default): the handler is a plain function, run in a worker thread.
- ``"audited"``: the handler runs on the audited lane (``cairn.audit.lane``): its audit events
  are committed together with those of concurrent jobs (group commit), before it is answered.
  For hot routes whose only write is their audit event (token mints).
- ``"stream"``: for handlers that stream a body in or out (state uploads and downloads): the
  caller is authenticated in one job, then the ``async`` handler runs on the event loop and
  makes its own hops (``Call.run``).

Authenticators are pluggable: ``app.py`` registers them by name (``"token"``: API tokens,
and run job tokens by their prefix; ``"job"``: the agent protocol's job token; later session
cookies); the transport never imports a domain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cairn.audit.lane import AuditedLane
from cairn.authz.subject import Subject
from cairn.db.engine import Database
from cairn.errors import ApiError, BadRequest, PayloadTooLarge, RequestTimeout, Unauthorized
from cairn.names import unstorable
from cairn.tfeapi.jsonapi import (
    Document,
    Includes,
    JsonApiResponse,
    Resource,
    error_response,
    parse_document,
)

log = logging.getLogger("cairn.api")

P = ParamSpec("P")
T = TypeVar("T")

Executor = Literal["thread", "audited", "stream"]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Authenticated(Protocol):
    """What an authenticator found: the subject, and work to do after the job's transaction
    when that was read-only (e.g. recording when a token was last used)."""

    @property
    def subject(self) -> Subject: ...

    def after(self) -> None:
        """Runs after the job's transaction has ended (on success or failure)."""


class Authenticator(Protocol):
    """Checks one kind of credential, inside the job's transaction."""

    def credential(self, request: Request) -> str | None:
        """The credential on the request, or None (no database access)."""

    def authenticate(self, credential: str) -> Authenticated:
        """The subject behind the credential (runs inside the job's unit of work); raises
        Unauthorized, saying what to do."""

    def missing(self) -> Unauthorized:
        """The error for a request without the credential."""


ErrorRenderer = Callable[[ApiError], Response]


@dataclass
class Pipeline:
    """What every route shares: the database, the authenticators, the audited lane, limits."""

    db: Database
    lane: AuditedLane
    authenticators: dict[str, Authenticator] = field(default_factory=dict)
    default_limit: int = 1024 * 1024
    includes: Includes = field(default_factory=Includes)  # what ``include=`` can name
    body_timeout: float = 60.0  # seconds a client may take between two body chunks


class Call:
    """One request, with what its handler needs: path and query parameters, the body read
    within the route's limit, the client address, and (inside the job) the caller."""

    def __init__(self, request: Request, pipeline: Pipeline, raw: bytes) -> None:
        self.request = request
        self.pipeline = pipeline
        self.raw = raw
        self.source = request.client.host if request.client else ""
        self._caller: Subject | None = None

    @property
    def caller(self) -> Subject:
        if self._caller is None:  # a route without auth asked for a caller
            raise Unauthorized("a valid API token is required")
        return self._caller

    @property
    def has_caller(self) -> bool:
        return self._caller is not None

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def document(self, expected_type: str | None, *, allow_blank_type: bool = False) -> Document:
        return parse_document(self.raw, expected_type, allow_blank_type=allow_blank_type)

    def respond(
        self,
        data: Resource | list[Resource],
        *,
        status_code: int = 200,
        resource_type: str | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> JsonApiResponse:
        """The JSON:API answer of ``data``, with the resources ``include=`` asks for (those
        the caller may read) in ``included``; an include that ``data``'s type does not offer
        is a 400 (``jsonapi.Includes``)."""
        doc = self.pipeline.includes.document(
            self.request, self.caller, data, resource_type=resource_type, meta=meta
        )
        return JsonApiResponse(doc, status_code=status_code, headers=headers)

    def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        """For ``stream`` handlers: blocking work (database, disk) in the thread pool."""
        return run_in_threadpool(fn, *args, **kwargs)

    def chunks(self) -> AsyncIterator[bytes]:
        """For ``stream`` handlers that bound the body themselves: its chunks, each within the
        body timeout (``RequestTimeout`` otherwise)."""
        return _chunks(self.request, self.pipeline.body_timeout)

    async def stream(self, limit: int) -> Any:
        """For ``stream`` handlers that read the body themselves: its chunks, refusing more
        than ``limit`` bytes."""
        declared = self.request.headers.get("content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
        size = 0
        async for chunk in _chunks(self.request, self.pipeline.body_timeout):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
            yield chunk

    async def pump(
        self,
        chunks: AsyncIterator[bytes],
        feed: Callable[[bytes], None],
        abort: Callable[[], None],
        *,
        batch: int = 1 << 20,
    ) -> None:
        """For ``stream`` handlers: hand a body to ``feed`` in a worker thread ``batch`` bytes
        at a time (it is never whole in memory); one batch is fed while the next is received,
        so network, CPU and disk overlap. On any error (or cancellation) ``abort`` runs, once
        the feed in flight is done (a thread cannot be stopped)."""
        buffer = bytearray()
        in_flight: asyncio.Future[None] | None = None
        try:
            async for part in chunks:
                buffer += part
                if len(buffer) >= batch:
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.ensure_future(self.run(feed, bytes(buffer)))
                    buffer.clear()
            if in_flight is not None:
                await in_flight
            if buffer:
                await self.run(feed, bytes(buffer))
        except BaseException:
            if in_flight is not None and not in_flight.done():
                in_flight.add_done_callback(lambda _: abort())
            else:
                abort()
            raise


SyncHandler = Callable[[Call], Response]
AsyncHandler = Callable[[Call], Awaitable[Response]]


async def _chunks(request: Request, timeout: float) -> AsyncIterator[bytes]:
    """The body's chunks; RequestTimeout when the client lets ``timeout`` seconds pass before
    the next one (a connection held open by a trickle of bytes costs the server memory and a
    slot; uvicorn has no such deadline of its own)."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(
                f"the request body stopped arriving (nothing for {timeout:g} seconds); "
                "send it again on a faster connection"
            ) from None
        yield chunk


async def _read_body(request: Request, limit: int, timeout: float) -> bytes | PayloadTooLarge:
    """The whole body, or the error for one over ``limit`` (raised after authentication);
    RequestTimeout (raised at once) for a body that comes too slowly."""
    if request.method not in _BODY_METHODS:
        return b""
    too_large = PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        return too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in _chunks(request, timeout):
        size += len(chunk)
        if size > limit:
            return too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _job(
    call: Call,
    authenticator: Authenticator | None,
    credential: str | None,
    body_error: ApiError | None,
    work: Callable[[Call], T],
    *,
    write: bool,
) -> T:
    """One unit of work: authenticate, then the handler's work, in one transaction."""
    found: Authenticated | None = None
    try:
        with call.pipeline.db.transaction(write=write):
            if authenticator is not None and credential is not None:
                found = authenticator.authenticate(credential)
                call._caller = found.subject
            if body_error is not None:
                raise body_error
            return work(call)
    finally:
        if found is not None:
            found.after()


def endpoint(
    handler: SyncHandler | AsyncHandler,
    *,
    auth: str | None = "token",
    executor: Executor = "thread",
    write: bool | None = None,
    limit: int | None = None,
    errors: ErrorRenderer = error_response,
) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        pipeline: Pipeline = request.app.state.pipeline
        try:
            authenticator = pipeline.authenticators[auth] if auth is not None else None
            credential = authenticator.credential(request) if authenticator else None
            if authenticator is not None and credential is None:
                raise authenticator.missing()
            _check_parameters(request)
            writes = request.method in _BODY_METHODS if write is None else write
            if executor == "stream":
                call = Call(request, pipeline, b"")
                if authenticator is not None:
                    await run_in_threadpool(
                        _job, call, authenticator, credential, None, _nothing, write=False
                    )
                streamed: AsyncHandler = handler  # type: ignore[assignment]
                return await streamed(call)
            raw = await _read_body(request, limit or pipeline.default_limit, pipeline.body_timeout)
            body_error = raw if isinstance(raw, PayloadTooLarge) else None
            call = Call(request, pipeline, raw if isinstance(raw, bytes) else b"")
            sync: SyncHandler = handler  # type: ignore[assignment]
            if executor == "audited":
                return await pipeline.lane.run(
                    lambda: _job(call, authenticator, credential, body_error, sync, write=False)
                )
            return await run_in_threadpool(
                _job, call, authenticator, credential, body_error, sync, write=writes
            )
        except ApiError as err:
            return errors(err)

    run.__name__ = handler.__name__
    return run


def _check_parameters(request: Request) -> None:
    """Path and query parameters that no database column can hold (a NUL byte, a lone
    surrogate) are a 400 naming the parameter, before any handler sees them."""
    for name, value in request.path_params.items():
        why = unstorable(str(value))
        if why is not None:
            raise BadRequest(
                f"path parameter '{name}' contains {why}, which cairn cannot store",
                parameter=name,
            )
    for name, value in request.query_params.multi_items():
        why = unstorable(name) or unstorable(value)
        if why is not None:
            # A name that itself holds the character is shown escaped.
            shown = name if unstorable(name) is None else name.encode("unicode_escape").decode()
            raise BadRequest(
                f"query parameter '{shown}' contains {why}, which cairn cannot store",
                parameter=shown,
            )


def _nothing(call: Call) -> None:
    return None


def route(
    path: str,
    handler: SyncHandler | AsyncHandler,
    methods: list[str],
    *,
    auth: str | None = "token",
    executor: Executor = "thread",
    write: bool | None = None,
    limit: int | None = None,
    errors: ErrorRenderer = error_response,
) -> Route:
    """A route through the pipeline (see the module docstring). ``auth``: the authenticator's
    name, or None for a public route; ``write``: whether the job's transaction writes (default:
    every method but GET/HEAD); ``limit``: the body limit in bytes."""
    return Route(
        path,
        endpoint(handler, auth=auth, executor=executor, write=write, limit=limit, errors=errors),
        methods=methods,
        name=f"{handler.__name__}:{path}",
    )


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def no_content() -> Response:
    return Response(status_code=204)
