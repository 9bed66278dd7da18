"""Routes of Terraform's ``http`` backend, under ``/api/cairn/v1``:

* ``/http-state/{organization}/{workspace}``: ``GET`` the state (204: none yet), ``POST`` (or
  ``PUT``, ``update_method``) a new one with ``?ID=<lock ID>``, ``LOCK``/``UNLOCK`` (the
  backend's default ``lock_method``/``unlock_method``);
* ``/http-state/{organization}/{workspace}/lock``: ``LOCK``/``POST``/``PUT`` take the lock,
  ``UNLOCK``/``DELETE`` release it (for ``lock_method``/``unlock_method`` set otherwise).

Every route streams (executor ``stream``): the pipeline authenticates the caller in one job,
then the handler reads the body itself (the pipeline reads no body for ``LOCK``/``UNLOCK``)
and makes its own units of work. Errors are JSON (the backend prints the body); a refused lock
is answered 423 with the holder's lock info, the one body the backend parses.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.blobs.store import CHUNK
from cairn.errors import ApiError, BadRequest, NotFound, Unauthorized
from cairn.httpstate.auth import challenge
from cairn.httpstate.service import Current, Locked, LockRequest, check_lock_id
from cairn.state.intake import Staged
from cairn.state.service import VersionView
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import error_response

AUTH = "http-basic"
PREFIX = "/http-state/{organization}/{workspace}"


class States(Protocol):
    """What the handlers need of ``HttpStates``."""

    def current(self, caller: Subject, org_name: str, ws_name: str) -> Current | None: ...
    def iter_blob(self, sha256: str) -> Iterator[bytes]: ...
    def lock(
        self, caller: Subject, org_name: str, ws_name: str, req: LockRequest, source: str
    ) -> dict[str, object]: ...
    def unlock(
        self, caller: Subject, org_name: str, ws_name: str, lock_id: str | None, source: str
    ) -> None: ...
    def stage(self) -> Staged: ...
    def check_write(
        self, caller: Subject, org_name: str, ws_name: str, lock_id: str | None
    ) -> str: ...
    def write(
        self,
        caller: Subject,
        ws_id: str,
        lock_id: str | None,
        staged: Staged,
        content_md5: str | None,
        source: str,
    ) -> VersionView: ...


@dataclass(frozen=True)
class Limits:
    max_state_bytes: int
    max_json_body_bytes: int


def render_error(err: ApiError) -> Response:
    """A refused lock: the holder's lock info (423). Anything else: a JSON:API error document;
    a 401 carries the Basic challenge."""
    if isinstance(err, Locked):
        return JSONResponse(err.info, status_code=423)
    if isinstance(err, Unauthorized):
        challenge(err)
    return error_response(err)


class Handlers:
    def __init__(self, states: States, limits: Limits) -> None:
        self.states = states
        self.limits = limits

    @staticmethod
    def _names(call: Call) -> tuple[str, str]:
        return call.param("organization"), call.param("workspace")

    @staticmethod
    def _lock_id(call: Call) -> str | None:
        values = call.request.query_params.getlist("ID")
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest("the query parameter 'ID' is given more than once", parameter="ID")
        return check_lock_id(values[0])

    async def _json_body(self, call: Call) -> Any:
        raw = b"".join([c async for c in call.stream(self.limits.max_json_body_bytes)])
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise BadRequest("the request body is not valid JSON") from None

    async def get_state(self, call: Call) -> Response:
        org, ws = self._names(call)
        current = await call.run(self.states.current, call.caller, org, ws)
        if current is None:
            return Response(status_code=204)  # the backend's "no state yet"
        chunks = self.states.iter_blob(current.sha256)
        try:
            # The first chunk before the answer starts: bytes missing from the blob store are
            # an error document, not a body cut short.
            first = await call.run(next, chunks, b"")
        except FileNotFoundError:
            raise NotFound(
                "the bytes of the current state are missing from the blob store"
            ) from None
        headers = {
            "Content-Length": str(current.size),
            "Content-MD5": _b64_md5(current.md5),
            "Cache-Control": "private, no-store",
        }
        return StreamingResponse(
            _starting_with(first, chunks), media_type="application/json", headers=headers
        )

    async def post_state(self, call: Call) -> Response:
        org, ws = self._names(call)
        lock_id = self._lock_id(call)
        # Rights and lock first: a refused write reads no body.
        ws_id = await call.run(self.states.check_write, call.caller, org, ws, lock_id)
        staged = await call.run(self.states.stage)
        try:
            chunks = call.stream(self.limits.max_state_bytes)
            await call.pump(chunks, staged.feed, staged.abort, batch=CHUNK)
            view = await call.run(
                self.states.write,
                call.caller,
                ws_id,
                lock_id,
                staged,
                call.request.headers.get("content-md5"),
                call.source,
            )
        finally:
            staged.abort()  # a no-op once committed
        sv = view.sv
        body = {"state-version-id": sv.id, "serial": sv.serial, "lineage": sv.lineage}
        return JSONResponse(body, status_code=200)

    async def lock(self, call: Call) -> Response:
        org, ws = self._names(call)
        req = LockRequest.parse(await self._json_body(call))
        info = await call.run(self.states.lock, call.caller, org, ws, req, call.source)
        return JSONResponse(info, status_code=200)

    async def unlock(self, call: Call) -> Response:
        org, ws = self._names(call)
        body = await self._json_body(call)
        lock_id: str | None = None
        if body is not None:
            if not isinstance(body, dict):
                raise BadRequest("the unlock body must be Terraform's lock info JSON object")
            if body.get("ID") not in (None, ""):
                lock_id = check_lock_id(body.get("ID"))
        if lock_id is None:
            lock_id = self._lock_id(call)
        await call.run(self.states.unlock, call.caller, org, ws, lock_id, call.source)
        return JSONResponse({}, status_code=200)


def _b64_md5(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode()


def _starting_with(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def routes(states: States, limits: Limits) -> list[Route]:
    """The backend's routes (mounted under ``/api/cairn/v1``), authenticated by Basic or
    Bearer token (``"http-basic"``)."""
    h = Handlers(states, limits)

    def r(path: str, handler: Any, methods: list[str]) -> Route:
        return route(path, handler, methods, auth=AUTH, executor="stream", errors=render_error)

    return [
        r(PREFIX, h.get_state, ["GET"]),
        r(PREFIX, h.post_state, ["POST", "PUT"]),
        r(PREFIX, h.lock, ["LOCK"]),
        r(PREFIX, h.unlock, ["UNLOCK"]),
        r(PREFIX + "/lock", h.lock, ["LOCK", "POST", "PUT"]),
        r(PREFIX + "/lock", h.unlock, ["UNLOCK", "DELETE"]),
    ]
