"""TFE API handlers for variable sets (HCP Terraform's ``varsets``, as go-tfe and pytfe call
them), and ``GET /workspaces/:id/all-vars``: the variables in effect on a workspace, its own
and its sets', each key once as precedence decides.

The organization's list is paginated; a set's variables are not (at most
``MAX_VARS_PER_SET``, as a workspace's), nor are the sets of a workspace or a project (at
most ``MAX_SETS_PER_ORGANIZATION``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.errors import Invalid
from cairn.paging import Page
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    Includes,
    JsonApiResponse,
    Resource,
    page_from,
    pagination_meta,
    parse_resource_list,
    query,
)
from cairn.variables import api as variables_api
from cairn.variables import sets_wire as wire
from cairn.variables.service import NewVariable, VariableChange, VariableView
from cairn.variables.sets_model import (
    MAX_NAME,
    MAX_SET_BYTES,
    MAX_SET_DESCRIPTION,
    MAX_TARGETS_PER_REQUEST,
    MAX_VARS_PER_SET,
)
from cairn.variables.sets_service import (
    NewVarset,
    SetVariableView,
    VarsetChange,
    VarsetView,
)


class VariableSetsService(Protocol):
    """What the handlers need of ``VariableSets``."""

    def list_organization(
        self, caller: Subject, org_name: str, page: Page, q: str | None
    ) -> tuple[list[VarsetView], int]: ...
    def for_workspace(self, caller: Subject, ws_id: str) -> list[VarsetView]: ...
    def for_project(self, caller: Subject, project_id: str) -> list[VarsetView]: ...
    def get(self, caller: Subject, set_id: str) -> VarsetView: ...
    def create(self, caller: Subject, org_name: str, new: NewVarset, source: str) -> VarsetView: ...
    def update(
        self, caller: Subject, set_id: str, change: VarsetChange, source: str
    ) -> VarsetView: ...
    def delete(self, caller: Subject, set_id: str, source: str) -> None: ...
    def apply(
        self, caller: Subject, set_id: str, kind: str, target_ids: list[str], source: str
    ) -> None: ...
    def remove(
        self, caller: Subject, set_id: str, kind: str, target_ids: list[str], source: str
    ) -> None: ...
    def list_vars(self, caller: Subject, set_id: str) -> list[SetVariableView]: ...
    def vars_of_sets(
        self, caller: Subject, set_ids: list[str]
    ) -> dict[str, list[SetVariableView]]: ...
    def get_var(self, caller: Subject, set_id: str, var_id: str) -> SetVariableView: ...
    def create_var(
        self, caller: Subject, set_id: str, new: NewVariable, source: str
    ) -> SetVariableView: ...
    def update_var(
        self, caller: Subject, set_id: str, var_id: str, change: VariableChange, source: str
    ) -> SetVariableView: ...
    def delete_var(self, caller: Subject, set_id: str, var_id: str, source: str) -> None: ...
    def all_vars(self, caller: Subject, ws_id: str) -> list[VariableView | SetVariableView]: ...


# A set created with its variables: room for all of them however they are escaped.
CREATE_LIMIT = 6 * MAX_SET_BYTES + 256 * 1024
SET_LIMIT = 256 * 1024  # a set's attributes and up to MAX_TARGETS_PER_REQUEST links
VAR_LIMIT = variables_api.BODY_LIMIT  # one variable, as for workspace variables


def _targets(doc: Document, name: str, typ: str) -> list[str] | None:
    """The IDs of a to-many relationship ``name`` of type ``typ`` (None when absent)."""
    if name not in doc.relationships:
        return None
    rel = doc.relationships[name]
    pointer = f"/data/relationships/{name}"
    data = rel.get("data") if isinstance(rel, dict) else None
    if not isinstance(data, list):
        raise Invalid(
            f"relationship '{name}' must be an object with a 'data' array", pointer=pointer
        )
    if len(data) > MAX_TARGETS_PER_REQUEST:
        raise Invalid(
            f"relationship '{name}' names more than {MAX_TARGETS_PER_REQUEST} {typ}",
            pointer=pointer,
        )
    out = []
    for i, item in enumerate(data):
        if (
            not isinstance(item, dict)
            or item.get("type") != typ
            or not isinstance(item.get("id"), str)
        ):
            raise Invalid(
                f"every member of relationship '{name}' must be of type '{typ}' with an 'id'",
                pointer=f"{pointer}/data/{i}",
            )
        out.append(item["id"])
    return out


def _new_vars(doc: Document) -> list[NewVariable]:
    rel = doc.relationships.get("vars")
    if rel is None:
        return []
    data = rel.get("data") if isinstance(rel, dict) else None
    pointer = "/data/relationships/vars"
    if not isinstance(data, list):
        raise Invalid("relationship 'vars' must be an object with a 'data' array", pointer=pointer)
    if len(data) > MAX_VARS_PER_SET:
        raise Invalid(
            f"a variable set may hold at most {MAX_VARS_PER_SET} variables", pointer=pointer
        )
    out = []
    for i, item in enumerate(data):
        attrs = item.get("attributes") if isinstance(item, dict) else None
        if not isinstance(attrs, dict) or item.get("type", "vars") != "vars":
            raise Invalid(
                "every member of relationship 'vars' must be of type 'vars' with 'attributes'",
                pointer=f"{pointer}/data/{i}",
            )
        out.append(variables_api.new_variable(Document("vars", None, attrs)))
    return out


def _parent(doc: Document) -> None:
    rel = doc.relationships.get("parent")
    data = rel.get("data") if isinstance(rel, dict) else None
    if isinstance(data, dict) and data.get("type") == "projects":
        raise Invalid(
            "cairn's variable sets belong to their organization, not to a project; create it "
            "without a parent and apply it to the project (POST "
            "/varsets/:id/relationships/projects)",
            pointer="/data/relationships/parent",
        )


def _new_set(doc: Document) -> NewVarset:
    if "vars" in doc.relationships and doc.relationships["vars"] is None:
        raise Invalid("relationship 'vars' must be an object", pointer="/data/relationships/vars")
    _parent(doc)
    return NewVarset(
        name=doc.string("name", required=True, max_len=MAX_NAME) or "",
        description=doc.string("description", max_len=MAX_SET_DESCRIPTION) or "",
        is_global=bool(doc.boolean("global")),
        priority=bool(doc.boolean("priority")),
        workspace_ids=_targets(doc, "workspaces", "workspaces"),
        project_ids=_targets(doc, "projects", "projects"),
        variables=_new_vars(doc),
    )


def _set_change(doc: Document, set_id: str) -> VarsetChange:
    if doc.id is not None and doc.id != set_id:
        raise Invalid(
            f"'data.id' is {doc.id!r} but the request names variable set {set_id!r}",
            pointer="/data/id",
        )
    if "vars" in doc.relationships:
        raise Invalid(
            "a variable set's variables are changed one by one through "
            "/varsets/:id/relationships/vars, not by updating the set",
            pointer="/data/relationships/vars",
        )
    return VarsetChange(
        name=doc.string("name", max_len=MAX_NAME),
        description=doc.string("description", max_len=MAX_SET_DESCRIPTION),
        is_global=doc.boolean("global"),
        priority=doc.boolean("priority"),
        workspace_ids=_targets(doc, "workspaces", "workspaces"),
        project_ids=_targets(doc, "projects", "projects"),
    )


class Handlers:
    def __init__(self, sets: VariableSetsService) -> None:
        self.sets = sets

    # ---- sets ----------------------------------------------------------------------------------

    def list_sets(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.sets.list_organization(
            call.caller, call.param("org"), page, query(call.request, "q")
        )
        return call.respond(
            [wire.varset(v) for v in views],
            resource_type=wire.TYPE,
            meta=pagination_meta(page, total),
        )

    def list_for_workspace(self, call: Call) -> Response:
        views = self.sets.for_workspace(call.caller, call.param("id"))
        return self._unpaged(call, views)

    def list_for_project(self, call: Call) -> Response:
        views = self.sets.for_project(call.caller, call.param("id"))
        return self._unpaged(call, views)

    @staticmethod
    def _unpaged(call: Call, views: list[VarsetView]) -> Response:
        page = Page(1, max(len(views), 1))
        return call.respond(
            [wire.varset(v) for v in views],
            resource_type=wire.TYPE,
            meta=pagination_meta(page, len(views)),
        )

    def create_set(self, call: Call) -> Response:
        new = _new_set(call.document(wire.TYPE))
        view = self.sets.create(call.caller, call.param("org"), new, call.source)
        return JsonApiResponse({"data": wire.varset(view)}, status_code=201)

    def show_set(self, call: Call) -> Response:
        return call.respond(wire.varset(self.sets.get(call.caller, call.param("id"))))

    def update_set(self, call: Call) -> Response:
        set_id = call.param("id")
        change = _set_change(call.document(wire.TYPE), set_id)
        view = self.sets.update(call.caller, set_id, change, call.source)
        return call.respond(wire.varset(view))

    def delete_set(self, call: Call) -> Response:
        self.sets.delete(call.caller, call.param("id"), call.source)
        return no_content()

    # ---- workspaces and projects ---------------------------------------------------------------

    def _change_targets(self, call: Call, kind: str, *, add: bool) -> Response:
        items = parse_resource_list(call.raw, kind, max_items=MAX_TARGETS_PER_REQUEST)
        target_ids = []
        for i, item in enumerate(items):
            ident = item.get("id")
            if not isinstance(ident, str) or not ident:
                raise Invalid(f"every item must name a {kind[:-1]} by 'id'", pointer=f"/data/{i}")
            target_ids.append(ident)
        change = self.sets.apply if add else self.sets.remove
        change(call.caller, call.param("id"), kind, target_ids, call.source)
        return no_content()

    def apply_workspaces(self, call: Call) -> Response:
        return self._change_targets(call, "workspaces", add=True)

    def remove_workspaces(self, call: Call) -> Response:
        return self._change_targets(call, "workspaces", add=False)

    def apply_projects(self, call: Call) -> Response:
        return self._change_targets(call, "projects", add=True)

    def remove_projects(self, call: Call) -> Response:
        return self._change_targets(call, "projects", add=False)

    # ---- variables -----------------------------------------------------------------------------

    def list_vars(self, call: Call) -> Response:
        views = self.sets.list_vars(call.caller, call.param("id"))
        return call.respond([wire.set_variable(v) for v in views], resource_type="vars")

    def create_var(self, call: Call) -> Response:
        new = variables_api.new_variable(call.document("vars"))
        view = self.sets.create_var(call.caller, call.param("id"), new, call.source)
        return JsonApiResponse({"data": wire.set_variable(view)}, status_code=201)

    def show_var(self, call: Call) -> Response:
        view = self.sets.get_var(call.caller, call.param("id"), call.param("var_id"))
        return call.respond(wire.set_variable(view))

    def update_var(self, call: Call) -> Response:
        var_id = call.param("var_id")
        change = variables_api.variable_change(call.document("vars"), var_id)
        view = self.sets.update_var(call.caller, call.param("id"), var_id, change, call.source)
        return JsonApiResponse({"data": wire.set_variable(view)})

    def delete_var(self, call: Call) -> Response:
        self.sets.delete_var(call.caller, call.param("id"), call.param("var_id"), call.source)
        return no_content()

    # ---- in effect on a workspace --------------------------------------------------------------

    def all_vars(self, call: Call) -> Response:
        views = self.sets.all_vars(call.caller, call.param("id"))
        return call.respond([wire.any_variable(v) for v in views], resource_type="vars")


def routes(sets: VariableSetsService) -> list[Route]:
    h = Handlers(sets)
    one = "/varsets/{id}"
    var = "/varsets/{id}/relationships/vars/{var_id}"
    return [
        route("/organizations/{org}/varsets", h.list_sets, ["GET"]),
        route("/organizations/{org}/varsets", h.create_set, ["POST"], limit=CREATE_LIMIT),
        route("/workspaces/{id}/varsets", h.list_for_workspace, ["GET"]),
        route("/workspaces/{id}/all-vars", h.all_vars, ["GET"]),
        route("/projects/{id}/varsets", h.list_for_project, ["GET"]),
        route(one, h.show_set, ["GET"]),
        route(one, h.update_set, ["PATCH", "PUT"], limit=SET_LIMIT),
        route(one, h.delete_set, ["DELETE"]),
        route(f"{one}/relationships/vars", h.list_vars, ["GET"]),
        route(f"{one}/relationships/vars", h.create_var, ["POST"], limit=VAR_LIMIT),
        route(var, h.show_var, ["GET"]),
        route(var, h.update_var, ["PATCH"], limit=VAR_LIMIT),
        route(var, h.delete_var, ["DELETE"]),
        route(f"{one}/relationships/workspaces", h.apply_workspaces, ["POST"], limit=SET_LIMIT),
        route(f"{one}/relationships/workspaces", h.remove_workspaces, ["DELETE"], limit=SET_LIMIT),
        route(f"{one}/relationships/projects", h.apply_projects, ["POST"], limit=SET_LIMIT),
        route(f"{one}/relationships/projects", h.remove_projects, ["DELETE"], limit=SET_LIMIT),
    ]


def offer_includes(includes: Includes, sets: VariableSetsService) -> None:
    """``include=vars,workspaces,projects`` on variable sets: the variables (for those who may
    read the organization's variable sets), the workspaces and projects (loaded by their own
    loaders, so only those the caller may read)."""
    includes.offer(wire.TYPE, *wire.INCLUDABLE)

    def variables(
        caller: Subject, docs: Sequence[Resource]
    ) -> Iterable[tuple[Resource, list[Resource]]]:
        found = sets.vars_of_sets(caller, [d["id"] for d in docs])
        for doc in docs:
            if doc["id"] in found:
                yield doc, [wire.set_variable(v) for v in found[doc["id"]]]

    includes.resolver(wire.TYPE, "vars", variables)
