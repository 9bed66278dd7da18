"""HTTP for the issuer: public discovery and JWKS (raw ASGI, bytes from memory), the admin
API for keys, and minting tokens for pipelines that run Terraform themselves.

``routes(issuer)`` and ``public_routes(issuer)`` take the issuer as the small protocols below
(``cairn.identity.issuer.Issuer`` in ``app.py``, a fake in tests)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cairn import authz
from cairn.audit.log import Actor
from cairn.authz.subject import Subject
from cairn.clock import iso8601
from cairn.errors import BadRequest, Invalid
from cairn.identity.discovery import DISCOVERY_PATH, JWKS_JSON_PATH, JWKS_PATH, Document
from cairn.identity.issuer import Minted, Place
from cairn.identity.plan import Plan
from cairn.identity.tokens import MAX_AUDIENCE_LENGTH, MAX_AUDIENCES
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import parse_json

# Longer requests are accepted and capped at the issuer's maximum token lifetime (6 h default).
MAX_TTL_SECONDS = 366 * 24 * 3600
MINT_BODY_LIMIT = 64 * 1024
_Headers = list[tuple[bytes, bytes]]


class Served(Protocol):
    """The documents the public endpoints serve, as last loaded."""

    @property
    def discovery_doc(self) -> Document: ...
    @property
    def jwks_doc(self) -> Document: ...


class Published(Protocol):
    """What discovery and the JWKS read: the cache, never the database."""

    def cached(self) -> Served | None: ...


class IssuerService(Protocol):
    """What the admin API and the mint route ask of the issuer."""

    def describe(self) -> list[dict[str, Any]]: ...
    def rotate(self, actor: Actor, *, emergency: bool, force: bool) -> Plan: ...
    def trim(self, actor: Actor) -> Plan: ...
    def locate(self, ws_id: str) -> Place | None: ...
    def mint(
        self,
        caller: Subject,
        ws_id: str,
        place: Place | None,
        *,
        audience: str | list[str],
        phase: str,
        ttl: timedelta,
        run_id: str | None,
        source_address: str,
    ) -> Minted: ...


class WellKnown:
    """``/.well-known/openid-configuration`` and ``/.well-known/jwks[.json]``: pre-serialised
    bytes, ``ETag`` / ``If-None-Match``, no database access per request."""

    # Anonymous and cacheable: served before the router (tfeapi.observe.public_doors).
    public_door = True

    def __init__(self, issuer: Published, which: str) -> None:
        self._issuer = issuer
        self._which = which
        self._built: tuple[Document, _Headers, _Headers] | None = None

    def _headers(self, doc: Document) -> tuple[_Headers, _Headers]:
        """The 200 and 304 header lists of a document, built once per document."""
        built = self._built
        if built is None or built[0] is not doc:
            base = [(k.encode(), v.encode()) for k, v in doc.headers().items()]
            ok = [*base, (b"content-length", str(len(doc.body)).encode())]
            not_modified = [h for h in base if h[0] != b"content-type"]
            built = (doc, ok, not_modified)
            self._built = built
        return built[1], built[2]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        snap = self._issuer.cached()
        if snap is None:
            body = b'{"error":"the signing keys are not loaded yet; retry in a moment"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        doc = snap.jwks_doc if self._which == "jwks" else snap.discovery_doc
        ok, not_modified = self._headers(doc)
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if doc.matches(value.decode("latin-1")):
                    await send(
                        {"type": "http.response.start", "status": 304, "headers": not_modified}
                    )
                    await send({"type": "http.response.body", "body": b""})
                    return
                break
        await send({"type": "http.response.start", "status": 200, "headers": ok})
        await send({"type": "http.response.body", "body": doc.body})


def _actor(call: Call) -> Actor:
    return Actor(call.caller.id, call.caller.name, call.source)


def _plan_doc(plan: Plan) -> dict[str, Any]:
    return {
        "action": plan.action,
        "forced": plan.forced,
        "changes": plan.summary(),
        "note": plan.note or None,
    }


def parse_rotation(raw: bytes) -> tuple[bool, bool]:
    """Check the body of a rotation request: (emergency, force)."""
    body = parse_json(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object like {"mode": "graceful"}')
    mode = body.get("mode", "graceful")
    force = body.get("force", False)
    if mode not in ("graceful", "emergency"):
        raise Invalid("mode must be 'graceful' or 'emergency'", pointer="/mode")
    if not isinstance(force, bool):
        raise Invalid("force must be true or false", pointer="/force")
    return mode == "emergency", force


def _require_site_manager(call: Call, doing: str) -> None:
    """Site admins only, refused with 403 (the key list itself answers 404, like every site
    read)."""
    authz.require(call.caller, authz.SITE_MANAGE, authz.SITE, doing=doing)


@dataclass(frozen=True)
class MintRequest:
    """A checked ``POST …/id-tokens`` body."""

    audience: str | list[str]
    phase: str
    ttl: timedelta
    run_id: str | None


def _audience_problem(value: str) -> str | None:
    """What is wrong with one audience value, or None. An audience is compared byte for byte
    by the verifier (AWS, GCP, Azure, Vault): control characters, invisible format characters
    (zero-width, bidi overrides), line separators and surrounding spaces could only make two
    audiences look alike to a person while differing to the verifier."""
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_AUDIENCE_LENGTH:
        return f"is longer than {MAX_AUDIENCE_LENGTH} characters"
    if value != value.strip():
        return "has leading or trailing spaces"
    for c in value:
        if unicodedata.category(c) in _REFUSED_CATEGORIES:
            return f"contains the control or invisible character U+{ord(c):04X}"
    return None


# Cc: C0/C1 controls and DEL; Cf: format (zero-width, bidi); Cs: lone surrogates; Zl/Zp:
# line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def parse_audience(audience: object) -> str | list[str]:
    """The ``audience`` member: a string, or a list of 1 to MAX_AUDIENCES strings, each 1 to
    MAX_AUDIENCE_LENGTH printable characters (Invalid naming ``/audience`` or the entry's
    pointer ``/audience/<index>``)."""
    if isinstance(audience, str):
        problem = _audience_problem(audience)
        if problem is not None:
            raise Invalid(f"audience {problem}", pointer="/audience")
        return audience
    if not isinstance(audience, list) or not audience:
        raise Invalid(
            "audience is required: a string, or a non-empty list of strings", pointer="/audience"
        )
    if len(audience) > MAX_AUDIENCES:
        raise Invalid(
            f"audience has {len(audience)} entries; a token carries at most {MAX_AUDIENCES}",
            pointer="/audience",
        )
    for index, value in enumerate(audience):
        if not isinstance(value, str):
            raise Invalid("each audience must be a string", pointer=f"/audience/{index}")
        problem = _audience_problem(value)
        if problem is not None:
            raise Invalid(f"audience {index} {problem}", pointer=f"/audience/{index}")
    return list(audience)


def parse_mint_request(raw: bytes) -> MintRequest:
    """Check the body of a mint request (BadRequest / Invalid naming the member)."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with 'audience' and 'run_phase'")
    audience_value = parse_audience(body.get("audience"))
    phase = body.get("run_phase")
    if phase not in ("plan", "apply"):
        raise Invalid("run_phase must be 'plan' or 'apply'", pointer="/run_phase")
    ttl = body.get("ttl_seconds", 900)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_SECONDS:
        raise Invalid(
            "ttl_seconds must be a positive integer (tokens are capped at the issuer's "
            "maximum lifetime, CAIRN_OIDC_MAX_TOKEN_TTL)",
            pointer="/ttl_seconds",
        )
    run_id = body.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise Invalid("run_id must be a string", pointer="/run_id")
    return MintRequest(audience_value, phase, timedelta(seconds=ttl), run_id)


def routes(issuer: IssuerService) -> list[Route]:
    """The issuer's admin API and the mint route, mounted under ``/api/cairn/v1``."""

    def list_keys(call: Call) -> Response:
        authz.require(call.caller, authz.SITE_READ, authz.SITE, doing="list the signing keys of")
        return JSONResponse({"data": issuer.describe()})

    def rotate_keys(call: Call) -> Response:
        _require_site_manager(call, "rotate the signing keys of")
        emergency, force = parse_rotation(call.raw)
        plan = issuer.rotate(_actor(call), emergency=emergency, force=force)
        return JSONResponse({"data": {"rotation": _plan_doc(plan), "keys": issuer.describe()}})

    def trim_keys(call: Call) -> Response:
        _require_site_manager(call, "trim the signing keys of")
        plan = issuer.trim(_actor(call))
        return JSONResponse({"data": {"trim": _plan_doc(plan), "keys": issuer.describe()}})

    def mint_id_token(call: Call) -> Response:
        """The hot path (pipelines mint for every plan and apply): one job on the audited
        lane authenticates the caller, reads the workspace in the same transaction, signs,
        and stages the audit event, which commits with those of concurrent mints before the
        token is answered. The order of the answers is that of any other endpoint: no token
        (401), bad token (401), body (413/400/422), workspace (404/403), then the mint."""
        request = parse_mint_request(call.raw)
        ws_id = call.param("workspace_id")
        minted = issuer.mint(
            call.caller,
            ws_id,
            issuer.locate(ws_id),  # in the job's transaction
            audience=request.audience,
            phase=request.phase,
            ttl=request.ttl,
            run_id=request.run_id,
            source_address=call.source,
        )
        return JSONResponse(
            {
                "token": minted.token,
                "expires_at": iso8601(minted.expires_at),
                "run_id": minted.run_id,
                "jti": minted.jti,
                "kid": minted.kid,
            },
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    return [
        route("/admin/oidc/keys", list_keys, ["GET"]),
        route("/admin/oidc/keys/rotate", rotate_keys, ["POST"], limit=64 * 1024),
        route("/admin/oidc/keys/trim", trim_keys, ["POST"]),
        route(
            "/workspaces/{workspace_id}/id-tokens",
            mint_id_token,
            ["POST"],
            executor="audited",
            limit=MINT_BODY_LIMIT,
        ),
    ]


def public_routes(issuer: Published) -> list[Route]:
    """Discovery and the JWKS, at the site root (raw ASGI: bytes from memory)."""
    return [
        Route(DISCOVERY_PATH, WellKnown(issuer, "discovery"), methods=["GET", "HEAD"]),
        Route(JWKS_PATH, WellKnown(issuer, "jwks"), methods=["GET", "HEAD"]),
        Route(JWKS_JSON_PATH, WellKnown(issuer, "jwks"), methods=["GET", "HEAD"]),
    ]
