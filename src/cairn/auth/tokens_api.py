"""TFE API handlers for ``authentication-tokens``: user, organization and team tokens.

Paths and documents follow the TFE API (User Tokens, Organization Tokens, Team Tokens pages)
and what pytfe sends: ``authentication-token`` (singular) as the type of organization and
legacy team token bodies, ``authentication-tokens`` elsewhere, an empty body from older go-tfe.
The ``token`` attribute appears only in the answer to a create.

Three owners of tokens, each deciding who may (``auth.usertokens``, ``organizations.tokens``,
``teams.tokens``): ``routes`` takes one service per owner, typed by the small protocols below,
so this module knows none of those domains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.auth.token_store import MAX_DESCRIPTION, Issued, TokenRow
from cairn.authz.subject import USER_TYPE, Subject
from cairn.clock import iso8601
from cairn.errors import BadRequest, Invalid, NotFound
from cairn.paging import Page
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    JsonApiResponse,
    page_from,
    pagination_meta,
    parse_document,
    parse_json,
    query,
)

TYPE = "authentication-tokens"
_BODY_TYPES = ("authentication-tokens", "authentication-token")
_NO_STORE = {"Cache-Control": "no-store"}


class UserTokensService(Protocol):
    """User tokens, and any token by id (``auth.usertokens.UserTokens``)."""

    def create_user_token(
        self,
        caller: Subject,
        user_id: str,
        description: str,
        expires_at: datetime | None,
        *,
        source_address: str = "",
    ) -> Issued: ...
    def list_user_tokens(
        self, caller: Subject, user_id: str, page: Page
    ) -> tuple[list[TokenRow], int]: ...
    def get(self, caller: Subject, token_id: str) -> TokenRow: ...
    def revoke(self, caller: Subject, token_id: str, *, source_address: str = "") -> None: ...


class OwnerTokens(Protocol):
    """The token of an owner named in the path: an organization by name
    (``organizations.tokens``) or a team by ID (``teams.tokens``)."""

    def create(
        self,
        caller: Subject,
        owner: str,
        expires_at: datetime | None,
        *,
        description: str | None = None,
        source_address: str = "",
    ) -> Issued: ...
    def get(self, caller: Subject, owner: str) -> TokenRow: ...
    def revoke(self, caller: Subject, owner: str, *, source_address: str = "") -> None: ...


class TeamTokensService(OwnerTokens, Protocol):
    """Team tokens, and their lists (``teams.tokens.TeamTokens``)."""

    def list_team_tokens(
        self, caller: Subject, team_id: str, page: Page
    ) -> tuple[list[TokenRow], int]: ...
    def list_org_team_tokens(
        self, caller: Subject, org_name: str, page: Page
    ) -> tuple[list[TokenRow], int]: ...


class OtherTokens(Protocol):
    """Tokens another domain owns that share ``/authentication-tokens/:id`` with API tokens
    (HCP Terraform's agent tokens are ``at-…`` too): registered in ``app.py``, asked when the
    ID is not an API token the caller may see. Each answers None / False for an ID that is
    not one of its tokens, and raises NotFound for one the caller may not see."""

    def show_token(self, caller: Subject, token_id: str) -> dict[str, Any] | None: ...
    def revoke_token(self, caller: Subject, token_id: str, *, source_address: str = "") -> bool: ...


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
    creator = tok.created_by_id
    doc["relationships"] = {
        # Who created it (a person); null for tokens cairn made itself or made before this was
        # recorded.
        "created-by": {"data": {"id": creator, "type": USER_TYPE} if creator else None},
    }
    if row.team_id is not None:
        doc["relationships"]["team"] = {"data": {"id": row.team_id, "type": "teams"}}
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


_BODY_LIMIT = 64 * 1024


def _body(call: Call) -> Document:
    """The create body. As HCP Terraform, no attributes when there is none: an empty body
    (older go-tfe), ``null``, ``{}`` or ``{"data": null}``. go-tfe's option structs carry no
    type (it sends ``"type": ""``); any other type must be the tokens' own."""
    raw = call.raw
    if not raw.strip():
        return Document(type=TYPE, id=None)
    body = parse_json(raw)
    if body is None or (isinstance(body, dict) and body.get("data") is None):
        if isinstance(body, dict) and set(body) - {"data"}:
            raise BadRequest(
                "the request body must be a JSON:API document with a 'data' object",
                pointer="/data",
            )
        return Document(type=TYPE, id=None)
    doc = parse_document(raw, None)
    if doc.type not in (*_BODY_TYPES, ""):
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


# ---- routes ----------------------------------------------------------------------------------


def routes(
    users: UserTokensService,
    organizations: OwnerTokens,
    teams: TeamTokensService,
    others: Sequence[OtherTokens] = (),
) -> list[Route]:
    """Mounted under ``/api/v2``. ``others``: owners of other tokens served by ID."""
    org_path = "/organizations/{org}/authentication-token"
    team_path = "/teams/{team_id}/authentication-token"
    org_show, org_create, org_delete = _owner_handlers(organizations, "org", _no_token_type)
    team_show, team_create, team_delete = _owner_handlers(teams, "team_id", lambda call: None)

    def create_user_token(call: Call) -> Response:
        doc = _body(call)
        description = doc.string("description", max_len=MAX_DESCRIPTION) or ""
        issued = users.create_user_token(
            call.caller,
            call.param("user_id"),
            description,
            _expiry(doc),
            source_address=call.source,
        )
        return _created(issued)

    def list_user_tokens(call: Call) -> Response:
        page = page_from(call.request)
        rows, total = users.list_user_tokens(call.caller, call.param("user_id"), page)
        return _listed(call, rows, total)

    def show_token(call: Call) -> Response:
        try:
            return JsonApiResponse({"data": token_doc(users.get(call.caller, call.param("id")))})
        except NotFound:
            for other in others:
                doc = other.show_token(call.caller, call.param("id"))
                if doc is not None:
                    return JsonApiResponse({"data": doc})
            raise

    def delete_token(call: Call) -> Response:
        try:
            users.revoke(call.caller, call.param("id"), source_address=call.source)
        except NotFound:
            if not any(
                other.revoke_token(call.caller, call.param("id"), source_address=call.source)
                for other in others
            ):
                raise
        return no_content()

    def create_described_team_token(call: Call) -> Response:
        """One more token for the team; a description tells it apart from the others."""
        doc = _body(call)
        description = doc.string("description", required=True, max_len=MAX_DESCRIPTION) or ""
        if not description.strip():
            raise Invalid(
                "attribute 'description' must not be blank", pointer="/data/attributes/description"
            )
        issued = teams.create(
            call.caller,
            call.param("team_id"),
            _expiry(doc),
            description=description,
            source_address=call.source,
        )
        return _created(issued)

    def list_team_tokens(call: Call) -> Response:
        page = page_from(call.request)
        rows, total = teams.list_team_tokens(call.caller, call.param("team_id"), page)
        return _listed(call, rows, total)

    def list_org_team_tokens(call: Call) -> Response:
        page = page_from(call.request)
        rows, total = teams.list_org_team_tokens(call.caller, call.param("org"), page)
        return _listed(call, rows, total)

    limit = _BODY_LIMIT
    return [
        route("/users/{user_id}/authentication-tokens", list_user_tokens, ["GET"]),
        route("/users/{user_id}/authentication-tokens", create_user_token, ["POST"], limit=limit),
        route("/authentication-tokens/{id}", show_token, ["GET"]),
        route("/authentication-tokens/{id}", delete_token, ["DELETE"]),
        route(org_path, org_show, ["GET"]),
        route(org_path, org_create, ["POST"], limit=limit),
        route(org_path, org_delete, ["DELETE"]),
        route("/organizations/{org}/team-tokens", list_org_team_tokens, ["GET"]),
        route(team_path, team_show, ["GET"]),
        route(team_path, team_create, ["POST"], limit=limit),
        route(team_path, team_delete, ["DELETE"]),
        route("/teams/{team_id}/authentication-tokens", list_team_tokens, ["GET"]),
        route(
            "/teams/{team_id}/authentication-tokens",
            create_described_team_token,
            ["POST"],
            limit=limit,
        ),
    ]


Handler = Callable[[Call], Response]


def _owner_handlers(
    owner: OwnerTokens, param: str, check: Callable[[Call], None]
) -> tuple[Handler, Handler, Handler]:
    """Show, create (replacing the one before) and delete the token of the owner named by
    path parameter ``param``; ``check`` refuses what the owner kind does not support."""

    def show_token(call: Call) -> Response:
        check(call)
        return JsonApiResponse({"data": token_doc(owner.get(call.caller, call.param(param)))})

    def create_token(call: Call) -> Response:
        check(call)
        doc = _body(call)
        issued = owner.create(
            call.caller, call.param(param), _expiry(doc), source_address=call.source
        )
        return _created(issued)

    def delete_token(call: Call) -> Response:
        check(call)
        owner.revoke(call.caller, call.param(param), source_address=call.source)
        return no_content()

    return show_token, create_token, delete_token
