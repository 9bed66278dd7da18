"""TFE API handlers for workspace variables: ``/workspaces/:id/vars`` and the deprecated
``/vars`` endpoints, which name the workspace by filters or a relationship
(``/workspaces/:id/all-vars``, which adds the variable sets', is ``sets_api``'s). Lists are
not paginated (as in HCP Terraform: pytfe and go-tfe read one page); a workspace holds at
most ``MAX_PER_WORKSPACE`` variables.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.errors import BadRequest, Invalid
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import Document, JsonApiResponse, parse_json, query
from cairn.variables import wire
from cairn.variables.model import MAX_DESCRIPTION, MAX_KEY, MAX_VALUE_BYTES
from cairn.variables.service import NewVariable, VariableChange, VariableView


class VariablesService(Protocol):
    """What the handlers need of ``Variables``."""

    def resolve(self, caller: Subject, org_name: str, ws_name: str) -> str: ...
    def list(self, caller: Subject, ws_id: str) -> list[VariableView]: ...
    def get(self, caller: Subject, var_id: str, ws_id: str | None = None) -> VariableView: ...
    def create(
        self, caller: Subject, ws_id: str, new: NewVariable, source: str
    ) -> VariableView: ...
    def update(
        self,
        caller: Subject,
        var_id: str,
        change: VariableChange,
        source: str,
        ws_id: str | None = None,
    ) -> VariableView: ...
    def delete(
        self, caller: Subject, var_id: str, source: str, ws_id: str | None = None
    ) -> None: ...


# A value may be escaped in JSON (a control character, one byte of UTF-8, is six as \uXXXX):
# room for the largest value however it is encoded, and the rest of the document.
BODY_LIMIT = 6 * MAX_VALUE_BYTES + 64 * 1024


def _value(doc: Document) -> str | None:
    # Counted in characters here (bounded before encoding), in UTF-8 bytes by the service.
    return doc.string("value", max_len=MAX_VALUE_BYTES)


def new_variable(doc: Document) -> NewVariable:
    """A new variable from a ``vars`` document (workspace and variable-set variables)."""
    return NewVariable(
        key=doc.string("key", required=True, max_len=MAX_KEY) or "",
        category=doc.string("category", required=True, max_len=32) or "",
        value=_value(doc) or "",
        description=doc.string("description", max_len=MAX_DESCRIPTION),
        hcl=bool(doc.boolean("hcl")),
        sensitive=bool(doc.boolean("sensitive")),
    )


def variable_change(doc: Document, var_id: str) -> VariableChange:
    """An update of variable ``var_id`` from a ``vars`` document."""
    if doc.id is not None and doc.id != var_id:
        raise Invalid(
            f"'data.id' is {doc.id!r} but the request names variable {var_id!r}",
            pointer="/data/id",
        )
    return VariableChange(
        key=doc.string("key", max_len=MAX_KEY),
        category=doc.string("category", max_len=32),
        value=_value(doc),
        description=doc.string("description", max_len=MAX_DESCRIPTION),
        hcl=doc.boolean("hcl"),
        sensitive=doc.boolean("sensitive"),
    )


def _filter_names(raw: bytes) -> tuple[str | None, str | None]:
    """``filter.organization.name`` and ``filter.workspace.name`` of a legacy create body
    (the deprecated way of naming the workspace), each None when absent."""
    body = parse_json(raw)
    flt = body.get("filter") if isinstance(body, dict) else None
    if flt is None:
        return None, None
    if not isinstance(flt, dict):
        raise BadRequest("'filter' must be an object", pointer="/filter")

    def name(of: str) -> str | None:
        part = flt.get(of)
        value = part.get("name") if isinstance(part, dict) else part
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise BadRequest(f"'filter.{of}.name' must be a name", pointer=f"/filter/{of}/name")
        return value

    return name("organization"), name("workspace")


class Handlers:
    def __init__(self, variables: VariablesService) -> None:
        self.variables = variables

    # ---- /workspaces/:id/vars ------------------------------------------------------------------

    def list_vars(self, call: Call) -> Response:
        views = self.variables.list(call.caller, call.param("id"))
        return call.respond([wire.variable(v) for v in views], resource_type="vars")

    def create_var(self, call: Call) -> Response:
        new = new_variable(call.document("vars"))
        view = self.variables.create(call.caller, call.param("id"), new, call.source)
        return JsonApiResponse({"data": wire.variable(view)}, status_code=201)

    def show_var(self, call: Call) -> Response:
        view = self.variables.get(call.caller, call.param("var_id"), call.param("id"))
        return call.respond(wire.variable(view))

    def update_var(self, call: Call) -> Response:
        var_id = call.param("var_id")
        change = variable_change(call.document("vars"), var_id)
        view = self.variables.update(call.caller, var_id, change, call.source, call.param("id"))
        return JsonApiResponse({"data": wire.variable(view)})

    def delete_var(self, call: Call) -> Response:
        self.variables.delete(call.caller, call.param("var_id"), call.source, call.param("id"))
        return no_content()

    # ---- /vars (deprecated) --------------------------------------------------------------------

    def legacy_list(self, call: Call) -> Response:
        org = query(call.request, "filter[organization][name]")
        ws = query(call.request, "filter[workspace][name]")
        if not org or not ws:
            missing = "filter[workspace][name]" if org else "filter[organization][name]"
            raise BadRequest(
                "filter[organization][name] and filter[workspace][name] are both required: "
                "cairn lists the variables of one workspace (or use "
                "GET /api/v2/workspaces/:workspace_id/vars)",
                parameter=missing,
            )
        ws_id = self.variables.resolve(call.caller, org, ws)
        views = self.variables.list(call.caller, ws_id)
        return call.respond([wire.variable(v, legacy=True) for v in views], resource_type="vars")

    def legacy_create(self, call: Call) -> Response:
        doc = call.document("vars")
        ws_id = doc.relationship_id("workspace", "workspaces")
        if ws_id is None:
            org, ws = _filter_names(call.raw)
            if not org or not ws:
                raise Invalid(
                    "name the variable's workspace: relationships.workspace (type "
                    "'workspaces', its ID), or filter.organization.name and "
                    "filter.workspace.name",
                    pointer="/data/relationships/workspace",
                )
            ws_id = self.variables.resolve(call.caller, org, ws)
        view = self.variables.create(call.caller, ws_id, new_variable(doc), call.source)
        return JsonApiResponse({"data": wire.variable(view, legacy=True)}, status_code=201)

    def legacy_show(self, call: Call) -> Response:
        view = self.variables.get(call.caller, call.param("var_id"))
        return call.respond(wire.variable(view, legacy=True))

    def legacy_update(self, call: Call) -> Response:
        var_id = call.param("var_id")
        change = variable_change(call.document("vars"), var_id)
        view = self.variables.update(call.caller, var_id, change, call.source)
        return JsonApiResponse({"data": wire.variable(view, legacy=True)})

    def legacy_delete(self, call: Call) -> Response:
        self.variables.delete(call.caller, call.param("var_id"), call.source)
        return no_content()


def routes(variables: VariablesService) -> list[Route]:
    h = Handlers(variables)
    one = "/workspaces/{id}/vars/{var_id}"
    kw: dict[str, Any] = {"limit": BODY_LIMIT}
    return [
        route("/workspaces/{id}/vars", h.list_vars, ["GET"]),
        route("/workspaces/{id}/vars", h.create_var, ["POST"], **kw),
        route(one, h.show_var, ["GET"]),
        route(one, h.update_var, ["PATCH"], **kw),
        route(one, h.delete_var, ["DELETE"]),
        route("/vars", h.legacy_list, ["GET"]),
        route("/vars", h.legacy_create, ["POST"], **kw),
        route("/vars/{var_id}", h.legacy_show, ["GET"]),
        route("/vars/{var_id}", h.legacy_update, ["PATCH"], **kw),
        route("/vars/{var_id}", h.legacy_delete, ["DELETE"]),
    ]
