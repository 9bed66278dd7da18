"""TFE API handlers for the workspace relationship endpoints: remote-state consumers
(``/workspaces/:id/relationships/remote-state-consumers``), moving workspaces into a project
(``/projects/:id/relationships/workspaces``) and tagging workspaces from the tag's side
(``/tags/:id/relationships/workspaces``). Each body is HCP Terraform's:
``{"data": [{"type": "workspaces", "id": "ws-…"}, …]}``."""

from __future__ import annotations

from typing import Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.errors import Invalid
from cairn.paging import Page
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import page_from, pagination_meta, parse_resource_list
from cairn.workspaces import wire
from cairn.workspaces.store import WorkspaceView


class Consumers(Protocol):
    """What the handlers need of ``RemoteStateConsumers``."""

    def listing(
        self, caller: Subject, ws_id: str, page: Page
    ) -> tuple[list[WorkspaceView], int]: ...
    def add(self, caller: Subject, ws_id: str, consumer_ids: list[str]) -> None: ...
    def remove(self, caller: Subject, ws_id: str, consumer_ids: list[str]) -> None: ...
    def replace(self, caller: Subject, ws_id: str, consumer_ids: list[str]) -> None: ...


class Relationships(Protocol):
    """What the handlers need of ``WorkspaceRelationships``."""

    def move_to_project(self, caller: Subject, project_id: str, ws_ids: list[str]) -> None: ...
    def tag_workspaces(self, caller: Subject, tag_id: str, ws_ids: list[str]) -> None: ...
    def untag_workspaces(self, caller: Subject, tag_id: str, ws_ids: list[str]) -> None: ...


def workspace_ids(raw: bytes, *, allow_empty: bool = False) -> list[str]:
    """The workspace IDs of a relationship body (each item ``{"type": "workspaces", "id"}``);
    an empty list is refused unless ``allow_empty`` (a PATCH that clears consumers)."""
    items = parse_resource_list(raw, "workspaces")
    found: list[str] = []
    for i, item in enumerate(items):
        ident = item.get("id")
        if not isinstance(ident, str) or not ident:
            raise Invalid("each item needs the workspace's id", pointer=f"/data/{i}/id")
        found.append(ident)
    if not found and not allow_empty:
        raise Invalid("name at least one workspace", pointer="/data")
    return found


class Handlers:
    def __init__(self, consumers: Consumers, relationships: Relationships) -> None:
        self.consumers = consumers
        self.relationships = relationships

    def list_consumers(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.consumers.listing(call.caller, call.param("id"), page)
        return call.respond(
            [wire.workspace(v) for v in views],
            resource_type="workspaces",
            meta=pagination_meta(page, total),
        )

    def add_consumers(self, call: Call) -> Response:
        self.consumers.add(call.caller, call.param("id"), workspace_ids(call.raw))
        return no_content()

    def replace_consumers(self, call: Call) -> Response:
        ids = workspace_ids(call.raw, allow_empty=True)
        self.consumers.replace(call.caller, call.param("id"), ids)
        return no_content()

    def remove_consumers(self, call: Call) -> Response:
        self.consumers.remove(call.caller, call.param("id"), workspace_ids(call.raw))
        return no_content()

    def move_to_project(self, call: Call) -> Response:
        self.relationships.move_to_project(call.caller, call.param("id"), workspace_ids(call.raw))
        return no_content()

    def tag_workspaces(self, call: Call) -> Response:
        self.relationships.tag_workspaces(call.caller, call.param("id"), workspace_ids(call.raw))
        return no_content()

    def untag_workspaces(self, call: Call) -> Response:
        ids = workspace_ids(call.raw)
        self.relationships.untag_workspaces(call.caller, call.param("id"), ids)
        return no_content()


def routes(consumers: Consumers, relationships: Relationships) -> list[Route]:
    h = Handlers(consumers, relationships)
    rsc = "/workspaces/{id}/relationships/remote-state-consumers"
    return [
        route(rsc, h.list_consumers, ["GET"]),
        route(rsc, h.add_consumers, ["POST"]),
        route(rsc, h.replace_consumers, ["PATCH"]),
        route(rsc, h.remove_consumers, ["DELETE"]),
        route("/projects/{id}/relationships/workspaces", h.move_to_project, ["POST"]),
        route("/tags/{id}/relationships/workspaces", h.tag_workspaces, ["POST"]),
        route("/tags/{id}/relationships/workspaces", h.untag_workspaces, ["DELETE"]),
    ]
