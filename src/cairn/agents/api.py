"""TFE API handlers for agent pools, their agents and their tokens.

Paths and documents follow HCP Terraform's Agent Pools, Agents and Agent Tokens pages and
what pytfe 1.5.0 sends. ``GET``/``DELETE /authentication-tokens/:id`` is served by
``auth.tokens_api`` for every kind of token: ``PoolTokensById`` is what it falls back to when
the ID is not an API token's (``app.py`` registers it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.agents import wire
from cairn.agents.model import STATUSES
from cairn.agents.service import (
    MAX_ALLOWED_WORKSPACES,
    MAX_TOKEN_DESCRIPTION,
    AgentListFilter,
    AgentView,
    PoolSettings,
    TokenView,
)
from cairn.agents.store import POOL_SORTS, TOKEN_SORTS, PoolFilter, PoolView
from cairn.authz.subject import Subject
from cairn.errors import BadRequest, Invalid
from cairn.paging import Page
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    Includes,
    JsonApiResponse,
    page_from,
    pagination_meta,
    query,
)

# A pool document names at most MAX_ALLOWED_WORKSPACES workspaces (≈ 60 bytes each).
_POOL_BODY_LIMIT = 128 * 1024
_TOKEN_BODY_LIMIT = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


class Pools(Protocol):
    """What the handlers need of ``AgentPoolService``."""

    def list_pools(
        self, caller: Subject, org_name: str, flt: PoolFilter, page: Page
    ) -> tuple[list[PoolView], int]: ...
    def get_pool(self, caller: Subject, pool_id: str) -> PoolView: ...
    def create_pool(
        self, caller: Subject, org_name: str, change: PoolSettings, *, source: str = ""
    ) -> PoolView: ...
    def update_pool(
        self, caller: Subject, pool_id: str, change: PoolSettings, *, source: str = ""
    ) -> PoolView: ...
    def delete_pool(self, caller: Subject, pool_id: str, *, source: str = "") -> None: ...
    def create_token(
        self, caller: Subject, pool_id: str, description: str, *, source: str = ""
    ) -> TokenView: ...
    def list_tokens(
        self, caller: Subject, pool_id: str, page: Page, sort: str = "created-at"
    ) -> tuple[list[TokenView], int]: ...
    def get_token(self, caller: Subject, token_id: str) -> TokenView | None: ...
    def revoke_token(self, caller: Subject, token_id: str, *, source: str = "") -> bool: ...
    def list_agents(
        self, caller: Subject, pool_id: str, flt: AgentListFilter, page: Page
    ) -> tuple[list[AgentView], int]: ...
    def get_agent(self, caller: Subject, agent_id: str) -> AgentView: ...
    def delete_agent(self, caller: Subject, agent_id: str, *, source: str = "") -> None: ...


def _workspace_ids(doc: Document, name: str) -> list[str] | None:
    """The IDs of a to-many ``workspaces`` relationship (None: not sent)."""
    rel = doc.relationships.get(name)
    pointer = f"/data/relationships/{name}"
    if rel is None:
        return None
    items = rel.get("data") if isinstance(rel, dict) else None
    if not isinstance(items, list):
        raise Invalid(f"relationship '{name}' must hold a list in 'data'", pointer=pointer)
    if len(items) > MAX_ALLOWED_WORKSPACES:
        raise Invalid(
            f"relationship '{name}' names more than {MAX_ALLOWED_WORKSPACES} workspaces",
            pointer=pointer,
        )
    found: list[str] = []
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or item.get("type") != "workspaces"
            or not isinstance(item.get("id"), str)
            or len(item["id"]) > 32
        ):
            raise Invalid(
                f'each item of \'{name}\' must be a workspace: {{"type": "workspaces", '
                '"id": "ws-…"}',
                pointer=f"{pointer}/data/{i}",
            )
        if item["id"] not in found:
            found.append(item["id"])
    return found


def _unsupported(doc: Document, name: str, what: str) -> None:
    rel = doc.relationships.get(name)
    items = rel.get("data") if isinstance(rel, dict) else rel
    if items not in (None, []):
        raise Invalid(
            f"cairn does not support {what} on agent pools yet; leave '{name}' out (a pool "
            "that is not organization-scoped allows exactly its allowed-workspaces)",
            pointer=f"/data/relationships/{name}",
        )


def _pool_settings(doc: Document, *, creating: bool) -> PoolSettings:
    _unsupported(doc, "excluded-workspaces", "excluded workspaces")
    _unsupported(doc, "allowed-projects", "allowed projects")
    return PoolSettings(
        name=doc.string("name", required=creating, max_len=90),
        organization_scoped=doc.boolean("organization-scoped"),
        allowed_workspace_ids=_workspace_ids(doc, "allowed-workspaces"),
    )


def _sort(call: Call, sorts: dict[str, Any], default: str) -> str:
    sort = query(call.request, "sort") or default
    if sort not in sorts:
        raise BadRequest(f"sort must be one of {', '.join(sorts)}", parameter="sort")
    return sort


def _since(call: Call) -> datetime | None:
    raw = query(call.request, "filter[last-ping-since]")
    if raw is None:
        return None
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadRequest(
            f"filter[last-ping-since] must be an ISO 8601 time like 2030-01-31T12:00:00Z, "
            f"not {raw!r}",
            parameter="filter[last-ping-since]",
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _status(call: Call) -> str | None:
    status = query(call.request, "filter[status]")
    if status is not None and status not in STATUSES:
        raise BadRequest(
            f"filter[status] must be one of {', '.join(STATUSES)}", parameter="filter[status]"
        )
    return status


class Handlers:
    def __init__(self, pools: Pools) -> None:
        self.pools = pools

    def list_pools(self, call: Call) -> Response:
        page = page_from(call.request)
        flt = PoolFilter(
            q=query(call.request, "q"),
            allowed_workspace=query(call.request, "filter[allowed_workspaces][name]"),
            allowed_project=query(call.request, "filter[allowed_projects][name]"),
            sort=_sort(call, POOL_SORTS, "name"),
        )
        views, total = self.pools.list_pools(call.caller, call.param("org"), flt, page)
        return call.respond(
            [wire.pool(v) for v in views],
            resource_type=wire.POOL_TYPE,
            meta=pagination_meta(page, total),
        )

    def create_pool(self, call: Call) -> Response:
        doc = call.document(wire.POOL_TYPE)
        view = self.pools.create_pool(
            call.caller,
            call.param("org"),
            _pool_settings(doc, creating=True),
            source=call.source,
        )
        return call.respond(wire.pool(view), status_code=201)

    def show_pool(self, call: Call) -> Response:
        return call.respond(wire.pool(self.pools.get_pool(call.caller, call.param("id"))))

    def update_pool(self, call: Call) -> Response:
        doc = call.document(wire.POOL_TYPE)
        if doc.id is not None and doc.id != call.param("id"):
            raise Invalid(
                f"'data.id' is {doc.id!r}, but the path names {call.param('id')!r}",
                pointer="/data/id",
            )
        view = self.pools.update_pool(
            call.caller, call.param("id"), _pool_settings(doc, creating=False), source=call.source
        )
        return call.respond(wire.pool(view))

    def delete_pool(self, call: Call) -> Response:
        self.pools.delete_pool(call.caller, call.param("id"), source=call.source)
        return no_content()

    def list_agents(self, call: Call) -> Response:
        page = page_from(call.request)
        flt = AgentListFilter(last_ping_since=_since(call), status=_status(call))
        views, total = self.pools.list_agents(call.caller, call.param("id"), flt, page)
        return JsonApiResponse(
            {"data": [wire.agent(v) for v in views], "meta": pagination_meta(page, total)}
        )

    def show_agent(self, call: Call) -> Response:
        return JsonApiResponse(
            {"data": wire.agent(self.pools.get_agent(call.caller, call.param("id")))}
        )

    def delete_agent(self, call: Call) -> Response:
        self.pools.delete_agent(call.caller, call.param("id"), source=call.source)
        return no_content()

    def list_tokens(self, call: Call) -> Response:
        page = page_from(call.request)
        sort = _sort(call, TOKEN_SORTS, "created-at")
        views, total = self.pools.list_tokens(call.caller, call.param("id"), page, sort)
        return JsonApiResponse(
            {"data": [wire.token(v) for v in views], "meta": pagination_meta(page, total)}
        )

    def create_token(self, call: Call) -> Response:
        doc = call.document(wire.TOKEN_TYPE)
        pointer = "/data/attributes/description"
        description = doc.string("description", required=True, max_len=MAX_TOKEN_DESCRIPTION)
        if not description or not description.strip():
            raise Invalid("attribute 'description' must not be blank", pointer=pointer)
        view = self.pools.create_token(
            call.caller, call.param("id"), description, source=call.source
        )
        return JsonApiResponse({"data": wire.token(view)}, status_code=201, headers=_NO_STORE)


def routes(pools: Pools) -> list[Route]:
    """Mounted under ``/api/v2``."""
    h = Handlers(pools)
    one = "/agent-pools/{id}"
    return [
        route("/organizations/{org}/agent-pools", h.list_pools, ["GET"]),
        route(
            "/organizations/{org}/agent-pools",
            h.create_pool,
            ["POST"],
            limit=_POOL_BODY_LIMIT,
        ),
        route(one, h.show_pool, ["GET"]),
        route(one, h.update_pool, ["PATCH"], limit=_POOL_BODY_LIMIT),
        route(one, h.delete_pool, ["DELETE"]),
        route(one + "/agents", h.list_agents, ["GET"]),
        route(one + "/authentication-tokens", h.list_tokens, ["GET"]),
        route(one + "/authentication-tokens", h.create_token, ["POST"], limit=_TOKEN_BODY_LIMIT),
        route("/agents/{id}", h.show_agent, ["GET"]),
        route("/agents/{id}", h.delete_agent, ["DELETE"]),
    ]


class PoolTokensById:
    """Agent tokens for ``auth.tokens_api``'s ``/authentication-tokens/:id`` (its
    ``OtherTokens``): the document of a pool token, or None when the ID is not one."""

    def __init__(self, pools: Pools) -> None:
        self._pools = pools

    def show_token(self, caller: Subject, token_id: str) -> dict[str, Any] | None:
        view = self._pools.get_token(caller, token_id)
        return None if view is None else wire.token(view)

    def revoke_token(self, caller: Subject, token_id: str, *, source_address: str = "") -> bool:
        return self._pools.revoke_token(caller, token_id, source=source_address)


def offer_includes(includes: Includes) -> None:
    """``include=workspaces`` on agent pools: the workspaces that use the pool (loaded by the
    workspaces' own loader, so only those the caller may read)."""
    includes.offer(wire.POOL_TYPE, *wire.INCLUDABLE)
