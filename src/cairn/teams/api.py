"""HTTP for access control: TFE teams, memberships, team-workspace and team-project access
(``/api/v2``, ``tfe_routes``), and cairn's own grants by workspace pattern, roles and users
(``/api/cairn/v1``, ``cairn_routes``). Handlers parse and answer; the services they are given
decide (``teams.service``, ``teams.grants``, ``teams.projects``, ``teams.users``)."""

from __future__ import annotations

from typing import Any, Protocol

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cairn.auth.model import User
from cairn.authz.roles import parse_permissions
from cairn.authz.subject import USER_TYPE, Subject
from cairn.errors import BadRequest, Invalid
from cairn.paging import Page
from cairn.teams.documents import (
    grant_doc,
    team_doc,
    team_project_doc,
    team_workspace_doc,
    user_row_doc,
)
from cairn.teams.grants import KIND_GRANT, KIND_TEAM_WORKSPACE, GrantView
from cairn.teams.memberships import Memberships
from cairn.teams.projects import TeamProjectView
from cairn.teams.service import TeamView
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    Includes,
    JsonApiResponse,
    loader_by_id,
    page_from,
    pagination_meta,
    parse_json,
    parse_resource_list,
    query,
)


class Teams(Protocol):
    """What the TFE teams endpoints need (``teams.service.TeamService``)."""

    def list_teams(
        self,
        caller: Subject,
        org_name: str,
        *,
        names: list[str] | None = None,
        page: Page | None = None,
    ) -> tuple[list[TeamView], int]: ...
    def get_team(self, caller: Subject, team_id: str) -> TeamView: ...
    def create_team(
        self,
        caller: Subject,
        org_name: str,
        name: str,
        *,
        org_access: dict[str, bool],
        idp_group: str | None,
        visibility: str | None,
        source: str,
    ) -> TeamView: ...
    def update_team(
        self,
        caller: Subject,
        team_id: str,
        *,
        name: str | None,
        org_access: dict[str, bool] | None,
        idp_group: str | None,
        clear_idp_group: bool,
        visibility: str | None,
        source: str,
    ) -> TeamView: ...
    def delete_team(self, caller: Subject, team_id: str, source: str) -> None: ...
    def change_members(
        self, caller: Subject, team_id: str, users: list[str], *, add: bool, source: str
    ) -> TeamView: ...


class Grants(Protocol):
    """What the team-workspace, grant and role endpoints need (``teams.grants``)."""

    def list_grants(
        self,
        caller: Subject,
        org_name: str,
        *,
        kind: str | None = None,
        workspace_id: str | None = None,
    ) -> list[GrantView]: ...
    def org_of_workspace(self, caller: Subject, ws_id: str) -> str: ...
    def create_grant(
        self,
        caller: Subject,
        org_name: str,
        *,
        role: str,
        team: str | None,
        user: str | None,
        workspace_id: str | None,
        pattern: str | None,
        kind: str,
        source: str,
        attributes: dict[str, object] | None = None,
    ) -> GrantView: ...
    def find_grant(self, caller: Subject, grant_id: str) -> GrantView: ...
    def update_grant_role(
        self,
        caller: Subject,
        grant_id: str,
        role: str | None,
        source: str,
        attributes: dict[str, object] | None = None,
    ) -> GrantView: ...
    def delete_grant(self, caller: Subject, grant_id: str, source: str) -> None: ...
    def list_roles(self, caller: Subject, org_name: str) -> list[tuple[str, list[str], bool]]: ...
    def create_role(
        self, caller: Subject, org_name: str, name: str, perms: frozenset[str], source: str
    ) -> None: ...
    def delete_role(self, caller: Subject, org_name: str, name: str, source: str) -> None: ...


class TeamProjects(Protocol):
    """What the team-project access endpoints need (``teams.projects.TeamProjectService``)."""

    def list(
        self, caller: Subject, project_id: str, page: Page
    ) -> tuple[list[TeamProjectView], int]: ...
    def get(self, caller: Subject, team_project_id: str) -> TeamProjectView: ...
    def create(
        self,
        caller: Subject,
        *,
        team_id: str,
        project_id: str,
        level: str,
        attrs: dict[str, Any],
        source: str,
    ) -> TeamProjectView: ...
    def update(
        self,
        caller: Subject,
        team_project_id: str,
        *,
        level: str | None,
        attrs: dict[str, Any],
        source: str,
    ) -> TeamProjectView: ...
    def delete(self, caller: Subject, team_project_id: str, source: str) -> None: ...


class Users(Protocol):
    """What the site-admin user endpoints need (``teams.users.UserAdmin``)."""

    def create_user(self, caller: Subject, username: str, email: str, source: str) -> User: ...
    def list_users(self, caller: Subject) -> list[User]: ...


def _org_access(doc_attrs: dict[str, Any]) -> dict[str, bool] | None:
    """The organization-access flags a body sets (true) or clears (false); those it leaves out
    stay as they are."""
    value = doc_attrs.get("organization-access")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise Invalid(
            "organization-access must be an object of booleans",
            pointer="/data/attributes/organization-access",
        )
    return dict(value)


# ---- TFE teams -----------------------------------------------------------------------------


def tfe_routes(
    teams: Teams, grants: Grants, team_projects: TeamProjects, memberships: Memberships
) -> list[Route]:
    """Teams, memberships, team-workspace and team-project access; mounted under
    ``/api/v2``."""

    def list_teams(call: Call) -> Response:
        page = page_from(call.request)
        names = query(call.request, "filter[names]")
        views, total = teams.list_teams(
            call.caller, call.param("org"), names=names.split(",") if names else None, page=page
        )
        return call.respond(
            [team_doc(t) for t in views], resource_type="teams", meta=pagination_meta(page, total)
        )

    def create_team(call: Call) -> Response:
        doc = call.document("teams")
        view = teams.create_team(
            call.caller,
            call.param("org"),
            doc.string("name", required=True, max_len=100) or "",
            org_access=_org_access(doc.attributes) or {},
            idp_group=doc.string("sso-team-id", max_len=255),
            visibility=doc.string("visibility", max_len=16),
            source=call.source,
        )
        return JsonApiResponse({"data": team_doc(view)}, status_code=201)

    def show_team(call: Call) -> Response:
        view = teams.get_team(call.caller, call.param("id"))
        return call.respond(team_doc(view))

    def update_team(call: Call) -> Response:
        doc = call.document("teams")
        attrs = doc.attributes
        view = teams.update_team(
            call.caller,
            call.param("id"),
            name=doc.string("name", max_len=100),
            org_access=_org_access(attrs),
            idp_group=doc.string("sso-team-id", max_len=255),
            clear_idp_group="sso-team-id" in attrs and attrs["sso-team-id"] is None,
            visibility=doc.string("visibility", max_len=16),
            source=call.source,
        )
        return JsonApiResponse({"data": team_doc(view)})

    def delete_team(call: Call) -> Response:
        teams.delete_team(call.caller, call.param("id"), call.source)
        return no_content()

    def members(call: Call, *, add: bool) -> Response:
        items = parse_resource_list(call.raw, USER_TYPE)
        users = []
        for i, item in enumerate(items):
            ident = item.get("id")
            if not isinstance(ident, str) or not ident:
                raise Invalid("each user needs an id (username or user ID)", pointer=f"/data/{i}")
            users.append(ident)
        teams.change_members(call.caller, call.param("id"), users, add=add, source=call.source)
        return no_content()

    def add_members(call: Call) -> Response:
        return members(call, add=True)

    def members_by_membership(call: Call, *, add: bool) -> Response:
        """HCP's other way to name a team's members: their organization memberships
        (``ou-…``), as pytfe's ``add_organization_memberships`` sends them. An invitation not
        yet accepted has no person to add (422)."""
        items = parse_resource_list(call.raw, "organization-memberships")
        users = []
        for i, item in enumerate(items):
            ident = item.get("id")
            if not isinstance(ident, str) or not ident:
                raise Invalid("each organization membership needs an id", pointer=f"/data/{i}")
            view = memberships.get(call.caller, ident)
            if view.user is None:
                raise Invalid(
                    f"organization membership {ident} is an invitation not accepted yet; its "
                    "person can join teams once they accept it",
                    pointer=f"/data/{i}/id",
                )
            users.append(view.user.id)
        teams.change_members(call.caller, call.param("id"), users, add=add, source=call.source)
        return no_content()

    def add_by_membership(call: Call) -> Response:
        return members_by_membership(call, add=True)

    def remove_by_membership(call: Call) -> Response:
        return members_by_membership(call, add=False)

    def remove_members(call: Call) -> Response:
        return members(call, add=False)

    # ---- TFE team-workspace access -----------------------------------------------------------

    def list_team_workspaces(call: Call) -> Response:
        ws_id = query(call.request, "filter[workspace][id]")
        if not ws_id:
            raise BadRequest("filter[workspace][id] is required", parameter="filter[workspace][id]")
        page = page_from(call.request)
        org = grants.org_of_workspace(call.caller, ws_id)
        views = grants.list_grants(call.caller, org, kind=KIND_TEAM_WORKSPACE, workspace_id=ws_id)
        chosen = views[page.offset : page.offset + page.size]
        return call.respond(
            [team_workspace_doc(v) for v in chosen],
            resource_type="team-workspaces",
            meta=pagination_meta(page, len(views)),
        )

    def create_team_workspace(call: Call) -> Response:
        doc = call.document("team-workspaces")
        access = doc.string("access", required=True, max_len=16) or ""
        ws_id = doc.relationship_id("workspace", "workspaces")
        team_id = doc.relationship_id("team", "teams")
        if ws_id is None or team_id is None:
            raise Invalid(
                "relationships 'workspace' and 'team' are required", pointer="/data/relationships"
            )
        org = grants.org_of_workspace(call.caller, ws_id)
        view = grants.create_grant(
            call.caller,
            org,
            role=access,
            team=team_id,
            user=None,
            workspace_id=ws_id,
            pattern=None,
            kind=KIND_TEAM_WORKSPACE,
            source=call.source,
            attributes=doc.attributes,
        )
        return JsonApiResponse({"data": team_workspace_doc(view)}, status_code=201)

    def show_team_workspace(call: Call) -> Response:
        view = grants.find_grant(call.caller, call.param("id"))
        return call.respond(team_workspace_doc(view))

    def update_team_workspace(call: Call) -> Response:
        doc = call.document("team-workspaces")
        access = doc.string("access", max_len=16)  # None: keep it (change custom attributes)
        view = grants.update_grant_role(
            call.caller, call.param("id"), access, call.source, attributes=doc.attributes
        )
        return JsonApiResponse({"data": team_workspace_doc(view)})

    def delete_team_workspace(call: Call) -> Response:
        grants.delete_grant(call.caller, call.param("id"), call.source)
        return no_content()

    # ---- TFE team-project access -------------------------------------------------------------

    def list_team_projects(call: Call) -> Response:
        project_id = query(call.request, "filter[project][id]")
        if not project_id:
            raise BadRequest("filter[project][id] is required", parameter="filter[project][id]")
        page = page_from(call.request)
        views, total = team_projects.list(call.caller, project_id, page)
        return call.respond(
            [team_project_doc(v) for v in views],
            resource_type="team-projects",
            meta=pagination_meta(page, total),
        )

    def team_project_body(call: Call) -> Document:
        # pytfe sends "team-project-access"; HCP Terraform takes it.
        doc = call.document(None)
        if doc.type not in ("team-projects", "team-project-access", ""):
            raise Invalid(
                f"'data.type' must be 'team-projects', not {doc.type!r}", pointer="/data/type"
            )
        return doc

    def create_team_project(call: Call) -> Response:
        doc = team_project_body(call)
        level = doc.string("access", required=True, max_len=16) or ""
        project_id = doc.relationship_id("project", "projects")
        team_id = doc.relationship_id("team", "teams")
        if project_id is None or team_id is None:
            raise Invalid(
                "relationships 'project' and 'team' are required", pointer="/data/relationships"
            )
        view = team_projects.create(
            call.caller,
            team_id=team_id,
            project_id=project_id,
            level=level,
            attrs=doc.attributes,
            source=call.source,
        )
        return JsonApiResponse({"data": team_project_doc(view)}, status_code=201)

    def show_team_project(call: Call) -> Response:
        return call.respond(team_project_doc(team_projects.get(call.caller, call.param("id"))))

    def update_team_project(call: Call) -> Response:
        doc = team_project_body(call)
        view = team_projects.update(
            call.caller,
            call.param("id"),
            level=doc.string("access", max_len=16),
            attrs=doc.attributes,
            source=call.source,
        )
        return JsonApiResponse({"data": team_project_doc(view)})

    def delete_team_project(call: Call) -> Response:
        team_projects.delete(call.caller, call.param("id"), call.source)
        return no_content()

    members_limit = 256 * 1024
    return [
        route("/organizations/{org}/teams", list_teams, ["GET"]),
        route("/organizations/{org}/teams", create_team, ["POST"]),
        route("/teams/{id}", show_team, ["GET"]),
        route("/teams/{id}", update_team, ["PATCH"]),
        route("/teams/{id}", delete_team, ["DELETE"]),
        route("/teams/{id}/relationships/users", add_members, ["POST"], limit=members_limit),
        route("/teams/{id}/relationships/users", remove_members, ["DELETE"], limit=members_limit),
        route(
            "/teams/{id}/relationships/organization-memberships",
            add_by_membership,
            ["POST"],
            limit=members_limit,
        ),
        route(
            "/teams/{id}/relationships/organization-memberships",
            remove_by_membership,
            ["DELETE"],
            limit=members_limit,
        ),
        route("/team-workspaces", list_team_workspaces, ["GET"]),
        route("/team-workspaces", create_team_workspace, ["POST"]),
        route("/team-workspaces/{id}", show_team_workspace, ["GET"]),
        route("/team-workspaces/{id}", update_team_workspace, ["PATCH"]),
        route("/team-workspaces/{id}", delete_team_workspace, ["DELETE"]),
        route("/team-projects", list_team_projects, ["GET"]),
        route("/team-projects", create_team_project, ["POST"]),
        route("/team-projects/{id}", show_team_project, ["GET"]),
        route("/team-projects/{id}", update_team_project, ["PATCH"]),
        route("/team-projects/{id}", delete_team_project, ["DELETE"]),
    ]


def offer_includes(includes: Includes, teams: Teams) -> None:
    """What ``include=`` can name on teams and team-workspace access (HCP Terraform's lists),
    and how teams are loaded for ``included`` (users: ``auth.api``, workspaces:
    ``workspaces.api``)."""
    includes.offer("teams", "users", "organization-memberships")
    includes.offer("team-workspaces", "team", "workspace")
    includes.offer("team-projects", "team", "project")
    includes.loader(
        "teams",
        loader_by_id(lambda caller, team_id: team_doc(teams.get_team(caller, team_id))),
    )


# ---- cairn's own: grants by pattern, roles, users -------------------------------------------


def _json_object(call: Call) -> dict[str, Any]:
    body = parse_json(call.raw)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{key} must be a string", pointer=f"/{key}")
    return value


def cairn_routes(grants: Grants, users: Users) -> list[Route]:
    """Grants by pattern, custom roles and user accounts; mounted under ``/api/cairn/v1``."""

    def list_grants(call: Call) -> Response:
        views = grants.list_grants(call.caller, call.param("org"))
        return JSONResponse({"data": [grant_doc(v) for v in views]})

    def create_grant(call: Call) -> Response:
        body = _json_object(call)
        role = _opt_str(body, "role")
        if not role:
            raise Invalid(
                "role is required (read, plan, write, admin or a custom role)", pointer="/role"
            )
        view = grants.create_grant(
            call.caller,
            call.param("org"),
            role=role,
            team=_opt_str(body, "team"),
            user=_opt_str(body, "user"),
            workspace_id=None,
            pattern=_opt_str(body, "workspaces"),
            kind=KIND_GRANT,
            source=call.source,
        )
        return JSONResponse({"data": grant_doc(view)}, status_code=201)

    def delete_grant(call: Call) -> Response:
        grants.delete_grant(call.caller, call.param("id"), call.source)
        return no_content()

    def list_roles(call: Call) -> Response:
        roles = grants.list_roles(call.caller, call.param("org"))
        return JSONResponse(
            {"data": [{"name": n, "permissions": p, "built-in": b} for n, p, b in roles]}
        )

    def create_role(call: Call) -> Response:
        body = _json_object(call)
        name = _opt_str(body, "name") or ""
        perms = body.get("permissions")
        if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
            raise Invalid("permissions must be a list of strings", pointer="/permissions")
        grants.create_role(
            call.caller,
            call.param("org"),
            name,
            parse_permissions(perms, "/permissions"),
            call.source,
        )
        return JSONResponse({"data": {"name": name, "permissions": sorted(perms)}}, status_code=201)

    def delete_role(call: Call) -> Response:
        grants.delete_role(call.caller, call.param("org"), call.param("name"), call.source)
        return no_content()

    def create_user(call: Call) -> Response:
        body = _json_object(call)
        user = users.create_user(
            call.caller,
            _opt_str(body, "username") or "",
            _opt_str(body, "email") or "",
            call.source,
        )
        return JSONResponse(
            {"data": {"id": user.id, "username": user.username, "email": user.email}},
            status_code=201,
        )

    def list_users(call: Call) -> Response:
        return JSONResponse({"data": [user_row_doc(u) for u in users.list_users(call.caller)]})

    small = 64 * 1024
    return [
        route("/organizations/{org}/grants", list_grants, ["GET"]),
        route("/organizations/{org}/grants", create_grant, ["POST"], limit=small),
        route("/grants/{id}", delete_grant, ["DELETE"]),
        route("/organizations/{org}/roles", list_roles, ["GET"]),
        route("/organizations/{org}/roles", create_role, ["POST"], limit=small),
        route("/organizations/{org}/roles/{name}", delete_role, ["DELETE"]),
        route("/admin/users", list_users, ["GET"]),
        route("/admin/users", create_user, ["POST"], limit=small),
    ]
