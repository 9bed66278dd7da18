"""TFE API handlers for organizations, entitlement sets and projects."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from cairn.organizations import wire
from cairn.organizations.service import OrgUpdate, check_execution_mode
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import JsonApiResponse, page_from, pagination_meta, query


def create_organization(call: Call) -> Response:
    doc = call.document("organizations")
    name = doc.string("name", required=True, max_len=100) or ""
    email = doc.string("email", max_len=255) or ""
    mode = doc.string("default-execution-mode")
    if mode is not None:
        check_execution_mode(mode, "/data/attributes/default-execution-mode")
    org = call.ctx.organizations.create(call.caller, name, email, mode)
    prj = call.ctx.organizations.default_project_id(org.id)
    return JsonApiResponse({"data": wire.organization(org, call.caller, prj)}, status_code=201)


def list_organizations(call: Call) -> Response:
    page = page_from(call.request)
    orgs, total = call.ctx.organizations.list_organizations(
        call.caller, page, query(call.request, "q")
    )
    data = [wire.organization(o, call.caller) for o in orgs]
    return JsonApiResponse({"data": data, "meta": pagination_meta(page, total)})


def show_organization(call: Call) -> Response:
    org = call.ctx.organizations.get(call.caller, call.param("org"))
    prj = call.ctx.organizations.default_project_id(org.id)
    return JsonApiResponse({"data": wire.organization(org, call.caller, prj)})


def update_organization(call: Call) -> Response:
    doc = call.document("organizations")
    mode = doc.string("default-execution-mode")
    if mode is not None:
        check_execution_mode(mode, "/data/attributes/default-execution-mode")
    change = OrgUpdate(
        name=doc.string("name", max_len=100),
        email=doc.string("email", max_len=255),
        default_execution_mode=mode,
    )
    org = call.ctx.organizations.update(call.caller, call.param("org"), change)
    prj = call.ctx.organizations.default_project_id(org.id)
    return JsonApiResponse({"data": wire.organization(org, call.caller, prj)})


def delete_organization(call: Call) -> Response:
    call.ctx.organizations.delete(call.caller, call.param("org"))
    return no_content()


def entitlement_set(call: Call) -> Response:
    org = call.ctx.organizations.get(call.caller, call.param("org"))
    return JsonApiResponse({"data": wire.entitlement_set(org)})


def list_projects(call: Call) -> Response:
    page = page_from(call.request)
    names_param = query(call.request, "filter[names]")
    names = [n for n in names_param.split(",") if n] if names_param else None
    org, rows, total = call.ctx.organizations.list_projects(
        call.caller,
        call.param("org"),
        page,
        names,
        query(call.request, "q"),
    )
    return JsonApiResponse(
        {
            "data": [wire.project(org, p, call.caller) for p in rows],
            "meta": pagination_meta(page, total),
        }
    )


def create_project(call: Call) -> Response:
    doc = call.document("projects")
    name = doc.string("name", required=True, max_len=40) or ""
    org, prj = call.ctx.organizations.create_project(
        call.caller,
        call.param("org"),
        name,
        doc.string("description") or "",
    )
    return JsonApiResponse({"data": wire.project(org, prj, call.caller)}, status_code=201)


def show_project(call: Call) -> Response:
    org, prj = call.ctx.organizations.get_project(call.caller, call.param("id"))
    return JsonApiResponse({"data": wire.project(org, prj, call.caller)})


def update_project(call: Call) -> Response:
    doc = call.document("projects")
    org, prj = call.ctx.organizations.update_project(
        call.caller,
        call.param("id"),
        doc.string("name", max_len=40),
        doc.string("description"),
    )
    return JsonApiResponse({"data": wire.project(org, prj, call.caller)})


def delete_project(call: Call) -> Response:
    call.ctx.organizations.delete_project(call.caller, call.param("id"))
    return no_content()


def routes() -> list[Route]:
    return [
        route("/organizations", list_organizations, ["GET"]),
        route("/organizations", create_organization, ["POST"]),
        route("/organizations/{org}", show_organization, ["GET"]),
        route("/organizations/{org}", update_organization, ["PATCH"]),
        route("/organizations/{org}", delete_organization, ["DELETE"]),
        route("/organizations/{org}/entitlement-set", entitlement_set, ["GET"]),
        route("/organizations/{org}/projects", list_projects, ["GET"]),
        route("/organizations/{org}/projects", create_project, ["POST"]),
        route("/projects/{id}", show_project, ["GET"]),
        route("/projects/{id}", update_project, ["PATCH"]),
        route("/projects/{id}", delete_project, ["DELETE"]),
    ]
