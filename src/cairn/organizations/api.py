"""TFE API handlers for organizations, entitlement sets and projects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.errors import NotFound
from cairn.organizations import wire
from cairn.organizations.model import Organization, Project
from cairn.organizations.service import (
    OrgUpdate,
    check_execution_mode,
    check_speculative_plan_credentials,
)
from cairn.paging import Page
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    Includes,
    JsonApiResponse,
    Resource,
    loader_by_id,
    page_from,
    pagination_meta,
    query,
)


class Organizations(Protocol):
    """What the handlers need (``OrganizationService``)."""

    def create(
        self, caller: Subject, name: str, email: str, default_mode: str | None
    ) -> Organization: ...
    def list_organizations(
        self, caller: Subject, page: Page, query: str | None
    ) -> tuple[list[Organization], int]: ...
    def get(self, caller: Subject, name: str) -> Organization: ...
    def update(self, caller: Subject, name: str, change: OrgUpdate) -> Organization: ...
    def delete(self, caller: Subject, name: str) -> None: ...
    def default_project_id(self, org_id: str) -> str | None: ...
    def list_projects(
        self, caller: Subject, org_name: str, page: Page, names: list[str] | None, q: str | None
    ) -> tuple[Organization, list[Project], int]: ...
    def create_project(
        self, caller: Subject, org_name: str, name: str, description: str
    ) -> tuple[Organization, Project]: ...
    def get_project(self, caller: Subject, project_id: str) -> tuple[Organization, Project]: ...
    def update_project(
        self, caller: Subject, project_id: str, name: str | None, description: str | None
    ) -> tuple[Organization, Project]: ...
    def delete_project(self, caller: Subject, project_id: str) -> None: ...
    def workspace_counts(
        self, caller: Subject, org: Organization, project_ids: list[str]
    ) -> dict[str, int]: ...


def _projects(
    orgs: Organizations, caller: Subject, org: Organization, rows: Sequence[Project]
) -> list[Resource]:
    """Project documents with their ``workspace-count`` (workspaces the caller may read)."""
    counts = orgs.workspace_counts(caller, org, [p.id for p in rows])
    return [wire.project(org, p, caller, counts.get(p.id, 0)) for p in rows]


def _mode(doc: Document) -> str | None:
    mode = doc.string("default-execution-mode")
    if mode is not None:
        check_execution_mode(mode, "/data/attributes/default-execution-mode")
    return mode


class Handlers:
    def __init__(self, orgs: Organizations) -> None:
        self.orgs = orgs

    def create_organization(self, call: Call) -> Response:
        doc = call.document("organizations")
        name = doc.string("name", required=True, max_len=100) or ""
        email = doc.string("email", max_len=255) or ""
        org = self.orgs.create(call.caller, name, email, _mode(doc))
        prj = self.orgs.default_project_id(org.id)
        return JsonApiResponse({"data": wire.organization(org, call.caller, prj)}, status_code=201)

    def list_organizations(self, call: Call) -> Response:
        page = page_from(call.request)
        orgs, total = self.orgs.list_organizations(call.caller, page, query(call.request, "q"))
        data = [wire.organization(o, call.caller, self.orgs.default_project_id(o.id)) for o in orgs]
        return call.respond(data, resource_type="organizations", meta=pagination_meta(page, total))

    def show_organization(self, call: Call) -> Response:
        org = self.orgs.get(call.caller, call.param("org"))
        prj = self.orgs.default_project_id(org.id)
        return call.respond(wire.organization(org, call.caller, prj))

    def update_organization(self, call: Call) -> Response:
        doc = call.document("organizations")
        mode = _mode(doc)
        spc = doc.string("speculative-plan-credentials", max_len=24)
        if spc is not None:
            check_speculative_plan_credentials(spc, "/data/attributes/speculative-plan-credentials")
        change = OrgUpdate(
            name=doc.string("name", max_len=100),
            email=doc.string("email", max_len=255),
            default_execution_mode=mode,
            speculative_plan_credentials=spc,
        )
        org = self.orgs.update(call.caller, call.param("org"), change)
        prj = self.orgs.default_project_id(org.id)
        return JsonApiResponse({"data": wire.organization(org, call.caller, prj)})

    def delete_organization(self, call: Call) -> Response:
        self.orgs.delete(call.caller, call.param("org"))
        return no_content()

    def entitlement_set(self, call: Call) -> Response:
        org = self.orgs.get(call.caller, call.param("org"))
        return JsonApiResponse({"data": wire.entitlement_set(org)})

    def list_projects(self, call: Call) -> Response:
        page = page_from(call.request)
        names_param = query(call.request, "filter[names]")
        names = [n for n in names_param.split(",") if n] if names_param else None
        org, rows, total = self.orgs.list_projects(
            call.caller, call.param("org"), page, names, query(call.request, "q")
        )
        return call.respond(
            _projects(self.orgs, call.caller, org, rows),
            resource_type="projects",
            meta=pagination_meta(page, total),
        )

    def create_project(self, call: Call) -> Response:
        doc = call.document("projects")
        name = doc.string("name", required=True, max_len=40) or ""
        org, prj = self.orgs.create_project(
            call.caller, call.param("org"), name, doc.string("description") or ""
        )
        created = _projects(self.orgs, call.caller, org, [prj])[0]
        return JsonApiResponse({"data": created}, status_code=201)

    def show_project(self, call: Call) -> Response:
        org, prj = self.orgs.get_project(call.caller, call.param("id"))
        return call.respond(_projects(self.orgs, call.caller, org, [prj])[0])

    def update_project(self, call: Call) -> Response:
        doc = call.document("projects")
        org, prj = self.orgs.update_project(
            call.caller, call.param("id"), doc.string("name", max_len=40), doc.string("description")
        )
        return JsonApiResponse({"data": _projects(self.orgs, call.caller, org, [prj])[0]})

    def delete_project(self, call: Call) -> Response:
        self.orgs.delete_project(call.caller, call.param("id"))
        return no_content()


def routes(service: Organizations) -> list[Route]:
    h = Handlers(service)
    return [
        route("/organizations", h.list_organizations, ["GET"]),
        route("/organizations", h.create_organization, ["POST"]),
        route("/organizations/{org}", h.show_organization, ["GET"]),
        route("/organizations/{org}", h.update_organization, ["PATCH"]),
        route("/organizations/{org}", h.delete_organization, ["DELETE"]),
        route("/organizations/{org}/entitlement-set", h.entitlement_set, ["GET"]),
        route("/organizations/{org}/projects", h.list_projects, ["GET"]),
        route("/organizations/{org}/projects", h.create_project, ["POST"]),
        route("/projects/{id}", h.show_project, ["GET"]),
        route("/projects/{id}", h.update_project, ["PATCH"]),
        route("/projects/{id}", h.delete_project, ["DELETE"]),
    ]


def offer_includes(includes: Includes, service: Organizations) -> None:
    """What ``include=`` can name on organizations and projects (HCP Terraform's lists), and
    how organizations, their entitlement sets and projects are loaded for ``included``."""
    includes.offer("organizations", "entitlement_set", "default_project")
    includes.offer("projects", "organization", "effective_tag_bindings")

    def organization(caller: Subject, name: str) -> Resource:
        org = service.get(caller, name)
        return wire.organization(org, caller, service.default_project_id(org.id))

    def project(caller: Subject, project_id: str) -> Resource:
        org, prj = service.get_project(caller, project_id)
        return _projects(service, caller, org, [prj])[0]

    def entitlement_sets(
        caller: Subject, orgs: Sequence[Resource]
    ) -> Iterable[tuple[Resource, list[Resource]]]:
        for doc in orgs:
            try:
                org = service.get(caller, doc["id"])
            except NotFound:
                continue
            yield doc, [wire.entitlement_set(org)]

    includes.loader("organizations", loader_by_id(organization))
    includes.loader("projects", loader_by_id(project))
    includes.resolver("organizations", "entitlement-set", entitlement_sets)
