"""TFE API handlers for ``authentication-tokens``: user, organization and team tokens.

Paths and documents follow the TFE API (User Tokens, Organization Tokens, Team Tokens pages)
and what pytfe sends: ``authentication-token`` (singular) as the type of organization and
legacy team token bodies, ``authentication-tokens`` elsewhere, an empty body from older go-tfe.
The ``token`` attribute appears only in the answer to a create.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from cairn.auth.authtokens import MAX_DESCRIPTION, AuthenticationTokens, Issued, TokenRow
from cairn.clock import iso8601
from cairn.errors import BadRequest, Invalid
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    JsonApiResponse,
    page_from,
    pagination_meta,
    parse_document,
    query,
)

TYPE = "authentication-tokens"
_BODY_TYPES = ("authentication-tokens", "authentication-token")
_NO_STORE = {"Cache-Control": "no-store"}


def token_doc(row: TokenRow, value: str | None = None) -> dict[str, Any]:
    """The JSON:API resource of a token; ``value`` only when it was just created."""
    tok = row.token
    attrs: dict[str, Any] = {
        "created-at": iso8601(tok.created_at),
        "last-used-at": iso8601(tok.last_used_at),
        "description": tok.description or None,
        "expired-at": iso8601(tok.expires_at),
    }
    if value is not None:
        attrs["token"] = value
    doc: dict[str, Any] = {
        "id": tok.id,
        "type": TYPE,
        "attributes": attrs,
        "links": {"self": f"/api/v2/authentication-tokens/{tok.id}"},
    }
    if row.team_id is not None:
        doc["relationships"] = {"team": {"data": {"id": row.team_id, "type": "teams"}}}
    return doc


def parse_expiry(value: str, pointer: str = "/data/attributes/expired-at") -> datetime:
    """An ISO 8601 timestamp; one without a zone is taken as UTC (pytfe sends naive ones)."""
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(
            f"expired-at must be an ISO 8601 timestamp like 2030-01-31T12:00:00Z, not {value!r}",
            pointer=pointer,
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _service(call: Call) -> AuthenticationTokens:
    ctx = call.ctx
    return AuthenticationTokens(ctx.db, ctx.keyring, ctx.clock)


def _source(call: Call) -> str:
    client = call.request.client
    return client.host if client else ""


_BODY_LIMIT = 64 * 1024


def _body(call: Call) -> Document:
    """The create body; an empty one (older go-tfe sends none) means no attributes."""
    raw = call.raw
    if not raw.strip():
        return Document(type=TYPE, id=None)
    doc = parse_document(raw, None)
    if doc.type not in _BODY_TYPES:
        raise Invalid(f"'data.type' must be '{TYPE}', not '{doc.type}'", pointer="/data/type")
    return doc


def _expiry(doc: Document) -> datetime | None:
    raw = doc.attributes.get("expired-at")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise Invalid(
            "attribute 'expired-at' must be a string", pointer="/data/attributes/expired-at"
        )
    return parse_expiry(raw)


def _no_token_type(call: Call) -> None:
    """HCP Terraform's ``?token=audit-trails`` selects another kind of organization token,
    which cairn does not have; refuse it rather than hand out an organization token."""
    kind = query(call.request, "token")
    if kind is not None:
        raise BadRequest(
            f"cairn has no {kind!r} organization tokens; omit the 'token' parameter",
            parameter="token",
        )


def _created(issued: Issued) -> Response:
    return JsonApiResponse(
        {"data": token_doc(issued.row, issued.value)}, status_code=201, headers=_NO_STORE
    )


def _listed(call: Call, rows: list[TokenRow], total: int) -> Response:
    page = page_from(call.request)
    return JsonApiResponse(
        {"data": [token_doc(r) for r in rows], "meta": pagination_meta(page, total)}
    )


# ---- user tokens -----------------------------------------------------------------------------


def create_user_token(call: Call) -> Response:
    doc = _body(call)
    description = doc.string("description", max_len=MAX_DESCRIPTION) or ""
    issued = _service(call).create_user_token(
        call.caller,
        call.param("user_id"),
        description,
        _expiry(doc),
        source_address=_source(call),
    )
    return _created(issued)


def list_user_tokens(call: Call) -> Response:
    rows, total = _service(call).list_user_tokens(
        call.caller,
        call.param("user_id"),
        page_from(call.request),
    )
    return _listed(call, rows, total)


# ---- any token by id -------------------------------------------------------------------------


def show_token(call: Call) -> Response:
    row = _service(call).get(call.caller, call.param("id"))
    return JsonApiResponse({"data": token_doc(row)})


def delete_token(call: Call) -> Response:
    _service(call).revoke(call.caller, call.param("id"), source_address=_source(call))
    return no_content()


# ---- the organization token ------------------------------------------------------------------


def create_org_token(call: Call) -> Response:
    _no_token_type(call)
    doc = _body(call)
    issued = _service(call).create_org_token(
        call.caller,
        call.param("org"),
        _expiry(doc),
        source_address=_source(call),
    )
    return _created(issued)


def show_org_token(call: Call) -> Response:
    _no_token_type(call)
    row = _service(call).get_org_token(call.caller, call.param("org"))
    return JsonApiResponse({"data": token_doc(row)})


def delete_org_token(call: Call) -> Response:
    _no_token_type(call)
    _service(call).revoke_org_token(
        call.caller,
        call.param("org"),
        source_address=_source(call),
    )
    return no_content()


# ---- team tokens -----------------------------------------------------------------------------


def create_team_token(call: Call) -> Response:
    """The legacy endpoint: the team's one token, replacing the one before."""
    doc = _body(call)
    issued = _service(call).create_team_token(
        call.caller,
        call.param("team_id"),
        _expiry(doc),
        source_address=_source(call),
    )
    return _created(issued)


def create_described_team_token(call: Call) -> Response:
    """One more token for the team; a description tells it apart from the others."""
    doc = _body(call)
    description = doc.string("description", required=True, max_len=MAX_DESCRIPTION) or ""
    if not description.strip():
        raise Invalid(
            "attribute 'description' must not be blank", pointer="/data/attributes/description"
        )
    issued = _service(call).create_team_token(
        call.caller,
        call.param("team_id"),
        _expiry(doc),
        description=description,
        source_address=_source(call),
    )
    return _created(issued)


def show_team_token(call: Call) -> Response:
    row = _service(call).get_team_token(call.caller, call.param("team_id"))
    return JsonApiResponse({"data": token_doc(row)})


def delete_team_token(call: Call) -> Response:
    _service(call).revoke_team_token(
        call.caller,
        call.param("team_id"),
        source_address=_source(call),
    )
    return no_content()


def list_team_tokens(call: Call) -> Response:
    rows, total = _service(call).list_team_tokens(
        call.caller,
        call.param("team_id"),
        page_from(call.request),
    )
    return _listed(call, rows, total)


def list_org_team_tokens(call: Call) -> Response:
    rows, total = _service(call).list_org_team_tokens(
        call.caller,
        call.param("org"),
        page_from(call.request),
    )
    return _listed(call, rows, total)


def routes() -> list[Route]:
    """Mounted under ``/api/v2``."""
    return [
        route("/users/{user_id}/authentication-tokens", list_user_tokens, ["GET"]),
        route(
            "/users/{user_id}/authentication-tokens", create_user_token, ["POST"], limit=64 * 1024
        ),
        route("/authentication-tokens/{id}", show_token, ["GET"]),
        route("/authentication-tokens/{id}", delete_token, ["DELETE"]),
        route("/organizations/{org}/authentication-token", show_org_token, ["GET"]),
        route(
            "/organizations/{org}/authentication-token", create_org_token, ["POST"], limit=64 * 1024
        ),
        route("/organizations/{org}/authentication-token", delete_org_token, ["DELETE"]),
        route("/organizations/{org}/team-tokens", list_org_team_tokens, ["GET"]),
        route("/teams/{team_id}/authentication-token", show_team_token, ["GET"]),
        route(
            "/teams/{team_id}/authentication-token", create_team_token, ["POST"], limit=64 * 1024
        ),
        route("/teams/{team_id}/authentication-token", delete_team_token, ["DELETE"]),
        route("/teams/{team_id}/authentication-tokens", list_team_tokens, ["GET"]),
        route(
            "/teams/{team_id}/authentication-tokens",
            create_described_team_token,
            ["POST"],
            limit=64 * 1024,
        ),
    ]
