"""Endpoint glue: authenticate, read a bounded body, run the service off the event loop, and
turn every ApiError into a JSON:API error document.

Handlers are ``async def handler(call: Call) -> Response``. A handler parses and authorizes; a
service decides inside a unit of work; a store reads and writes rows (STYLE.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal, ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cairn.audit.log import set_source
from cairn.authz.subject import Subject
from cairn.context import AppContext
from cairn.errors import ApiError, PayloadTooLarge, Unauthorized
from cairn.tfeapi.jsonapi import Document, error_response, parse_document

log = logging.getLogger("cairn.api")

P = ParamSpec("P")
T = TypeVar("T")

# True: the endpoint authenticates before the handler runs (one thread hop of its own).
# "deferred": the handler authenticates Call.bearer itself, in the same thread hop and read
# transaction as its own work (TokenService.authenticate_reading), for hot endpoints. False: no
# token (the handler checks another credential, e.g. a signed upload URL).
Auth = bool | Literal["deferred"]


class Call:
    """One API request, with what its handler needs."""

    def __init__(
        self,
        request: Request,
        ctx: AppContext,
        caller: Subject | None,
        bearer: str | None = None,
    ) -> None:
        self.request = request
        self.ctx = ctx
        self._principal = caller
        self._bearer = bearer  # the token of an auth="deferred" route, not yet checked

    @property
    def caller(self) -> Subject:
        if self._principal is None:  # a handler registered without auth asked for a caller
            raise Unauthorized("a valid API token is required")
        return self._principal

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking service code (database, disk) in the thread pool."""
        return await run_in_threadpool(fn, *args, **kwargs)

    @property
    def bearer(self) -> str:
        """The caller's token, not yet checked, on routes with ``auth="deferred"``: the handler
        authenticates it in its own job (``TokenService.authenticate_reading``), so that
        authentication costs no thread hop or transaction of its own."""
        if self._bearer is None:  # not an auth="deferred" route
            raise Unauthorized("a valid API token is required")
        return self._bearer

    async def body(self, limit: int) -> bytes:
        """The whole body, refusing anything over ``limit`` bytes before reading it all."""
        declared = self.request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def document(
        self, expected_type: str | None, *, limit: int | None = None, allow_blank_type: bool = False
    ) -> Document:
        raw = await self.body(limit or self.ctx.settings.max_json_body_bytes)
        return parse_document(raw, expected_type, allow_blank_type=allow_blank_type)


def _required_bearer(request: Request) -> str:
    """The request's bearer token; Unauthorized (no database access) when there is none."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(
            "a valid API token is required: pass it as 'Authorization: Bearer <token>' "
            "(terraform login, or a credentials block in the CLI configuration)"
        )
    return token


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


Handler = Callable[[Call], Awaitable[Response]]


def endpoint(handler: Handler, *, auth: Auth = True) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        ctx: AppContext = request.app.state.ctx
        set_source(request.client.host if request.client else "")
        try:
            if auth == "deferred":
                return await handler(Call(request, ctx, None, _required_bearer(request)))
            caller = None
            if auth:
                token = _required_bearer(request)
                caller = await run_in_threadpool(ctx.tokens.authenticate, token)
                request.state.caller = caller
            return await handler(Call(request, ctx, caller))
        except ApiError as err:
            return error_response(err)

    run.__name__ = handler.__name__
    return run


def route(path: str, handler: Handler, methods: list[str], *, auth: Auth = True) -> Route:
    return Route(
        path, endpoint(handler, auth=auth), methods=methods, name=f"{handler.__name__}:{path}"
    )


def no_content() -> Response:
    return Response(status_code=204)
