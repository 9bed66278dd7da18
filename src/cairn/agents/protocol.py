"""The agent protocol's registration endpoints (``/api/agent/v1``; plain JSON, not JSON:API).

``POST /register`` (``Bearer <pool agent token>``, or the built-in workers' secret) with
``{"name", "version", "accept": ["plan", "apply"]}`` → 201 ``{"agent_id", "session_token",
"heartbeat_s", "claim_wait_s", "lease_s"}``; ``POST /deregister`` (``Bearer <session
token>``) → 204. Errors are ``{"error": code, "detail": text}`` (``agent_error``, which the
jobs side's endpoints under the same prefix use too).
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cairn.agents.sessions import MAX_AGENT_NAME, MAX_AGENT_VERSION, Registration
from cairn.db.engine import Database
from cairn.errors import ApiError, BadRequest
from cairn.tfeapi.http import Call, bearer_token, no_content, route
from cairn.tfeapi.jsonapi import parse_json

PREFIX: Final = "/api/agent/v1"
PHASES: Final = ("plan", "apply")
_BODY_LIMIT = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


class Sessions(Protocol):
    """What the handlers need of ``agents.sessions.Agents``."""

    def register(
        self, s: Session, credential: str | None, *, name: str, version: str, ip_address: str
    ) -> Registration: ...
    def deregister(self, s: Session, token: str | None) -> None: ...


def agent_error(err: ApiError) -> Response:
    """An error of the agent protocol: ``{"error": code, "detail": text}`` with the error's
    status and headers; ``code`` is the error's code with ``_`` for ``-``
    (``agent_unknown``, ``unauthorized``, ``bad_request``…), plus the error's ``extra``
    members when it has them (e.g. ``{"offset": M}``)."""
    body: dict[str, Any] = {"error": err.code.replace("-", "_"), "detail": err.detail}
    extra = getattr(err, "extra", None)
    if isinstance(extra, dict):
        body.update({k: v for k, v in extra.items() if k not in body})
    return JSONResponse(body, status_code=err.status, headers=err.headers or None)


def _string(body: dict[str, Any], name: str, max_len: int) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string", pointer=f"/{name}")
    if len(value) > max_len:
        raise BadRequest(f"'{name}' is longer than {max_len} characters", pointer=f"/{name}")
    return value


def _registration_body(raw: bytes) -> tuple[str, str]:
    if not raw.strip():
        return "", ""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", pointer="/")
    accept = body.get("accept")
    if accept is not None and (
        not isinstance(accept, list) or not all(isinstance(a, str) for a in accept)
    ):
        raise BadRequest("'accept' must be a list of phases", pointer="/accept")
    unknown = [a for a in accept or [] if a not in PHASES]
    if unknown:
        raise BadRequest(
            f"'accept' may name only {', '.join(PHASES)}; not {', '.join(unknown)}",
            pointer="/accept",
        )
    return _string(body, "name", MAX_AGENT_NAME), _string(body, "version", MAX_AGENT_VERSION)


def routes(agents: Sessions, db: Database) -> list[Route]:
    """Mounted under ``PREFIX``. Each handler runs in the pipeline's one unit of work."""

    def register(call: Call) -> Response:
        name, version = _registration_body(call.raw)
        with db.unit_of_work(write=True) as s:
            reg = agents.register(
                s,
                bearer_token(call.request),
                name=name,
                version=version,
                ip_address=call.source,
            )
            s.commit()
        return JSONResponse(
            {
                "agent_id": reg.agent_id,
                "session_token": reg.session_token,
                "heartbeat_s": reg.heartbeat_s,
                "claim_wait_s": reg.claim_wait_s,
                "lease_s": reg.lease_s,
            },
            status_code=201,
            headers=_NO_STORE,
        )

    def deregister(call: Call) -> Response:
        with db.unit_of_work(write=True) as s:
            agents.deregister(s, bearer_token(call.request))
            s.commit()
        return no_content()

    return [
        route("/register", register, ["POST"], auth=None, limit=_BODY_LIMIT, errors=agent_error),
        route(
            "/deregister",
            deregister,
            ["POST"],
            auth=None,
            limit=_BODY_LIMIT,
            errors=agent_error,
        ),
    ]
