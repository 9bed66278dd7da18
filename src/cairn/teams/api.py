"""HTTP for access control: TFE teams, memberships and team-workspace access (``/api/v2``),
and cairn's own grants by workspace pattern, roles and users (``/api/cairn/v1``)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cairn import authz
from cairn.authz.permissions import ORG_MANAGE
from cairn.authz.roles import ORG_ACCESS_FLAGS, parse_permissions
from cairn.clock import iso8601
from cairn.errors import BadRequest, Invalid
from cairn.teams.service import GrantView, TeamView
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    JsonApiResponse,
    page_from,
    pagination_meta,
    parse_json,
    parse_resource_list,
    query,
)


def _source(call: Call) -> str:
    return call.request.client.host if call.request.client else ""


# ---- TFE documents -------------------------------------------------------------------------


def team_doc(v: TeamView, call: Call) -> dict[str, Any]:
    t = v.team
    manage = authz.can(call.caller, ORG_MANAGE, v.org.id)
    flags = set(filter(None, t.organization_access.split(",")))
    return {
        "id": t.id,
        "type": "teams",
        "attributes": {
            "name": t.name,
            "users-count": len(v.member_ids),
            "visibility": t.visibility,
            "sso-team-id": t.idp_group,
            "allow-member-token-management": True,
            "organization-access": {flag: flag in flags for flag in ORG_ACCESS_FLAGS},
            "permissions": {
                "can-update-membership": manage,
                "can-destroy": manage and t.name != "owners",
                "can-update-organization-access": manage,
                "can-update-api-token": manage,
                "can-update-visibility": manage,
                "can-update-name": manage and t.name != "owners",
                "can-update-sso-team-id": manage,
                "can-update-member-token-management": manage,
                "can-view-api-token": manage,
            },
            "created-at": iso8601(t.created_at),
        },
        "relationships": {
            "organization": {"data": {"id": v.org.name, "type": "organizations"}},
            "users": {"data": [{"id": u, "type": "users"} for u in v.member_ids]},
        },
        "links": {"self": f"/api/v2/teams/{t.id}"},
    }


def team_workspace_doc(v: GrantView) -> dict[str, Any]:
    g = v.grant
    return {
        "id": g.id,
        "type": "team-workspaces",
        "attributes": {
            "access": g.role,
            "runs": {"read": "read", "plan": "plan"}.get(g.role, "apply"),
            "variables": "read" if g.role in ("read", "plan") else "write",
            "state-versions": "read" if g.role in ("read", "plan") else "write",
            "workspace-locking": g.role in ("write", "admin"),
            "run-tasks": False,
            "sentinel-mocks": "none",
        },
        "relationships": {
            "team": {"data": {"id": g.team_id, "type": "teams"}},
            "workspace": {"data": {"id": g.workspace_id, "type": "workspaces"}},
        },
        "links": {"self": f"/api/v2/team-workspaces/{g.id}"},
    }


def grant_doc(v: GrantView) -> dict[str, Any]:
    g = v.grant
    return {
        "id": g.id,
        "organization": v.org.name,
        "role": g.role,
        "team": v.team_name,
        "user": v.username,
        "workspace": v.workspace_name,
        "workspace-id": g.workspace_id,
        "workspaces": g.workspace_pattern,
        "kind": g.kind,
        "created-at": iso8601(g.created_at),
    }


def _org_access(doc_attrs: dict[str, Any]) -> list[str] | None:
    value = doc_attrs.get("organization-access")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise Invalid(
            "organization-access must be an object of booleans",
            pointer="/data/attributes/organization-access",
        )
    return [k for k, v in value.items() if v]


# ---- TFE teams -----------------------------------------------------------------------------


def list_teams(call: Call) -> Response:
    page = page_from(call.request)
    teams = call.ctx.rbac.list_teams(call.caller, call.param("org"))
    names = query(call.request, "filter[names]")
    if names:
        wanted = set(names.split(","))
        teams = [t for t in teams if t.team.name in wanted]
    chosen = teams[page.offset : page.offset + page.size]
    return JsonApiResponse(
        {"data": [team_doc(t, call) for t in chosen], "meta": pagination_meta(page, len(teams))}
    )


def create_team(call: Call) -> Response:
    doc = call.document("teams")
    view = call.ctx.rbac.create_team(
        call.caller,
        call.param("org"),
        doc.string("name", required=True, max_len=100) or "",
        org_access=_org_access(doc.attributes) or [],
        idp_group=doc.string("sso-team-id", max_len=255),
        visibility=doc.string("visibility", max_len=16),
        source=_source(call),
    )
    return JsonApiResponse({"data": team_doc(view, call)}, status_code=201)


def show_team(call: Call) -> Response:
    view = call.ctx.rbac.get_team(call.caller, call.param("id"))
    return JsonApiResponse({"data": team_doc(view, call)})


def update_team(call: Call) -> Response:
    doc = call.document("teams")
    view = call.ctx.rbac.update_team(
        call.caller,
        call.param("id"),
        name=doc.string("name", max_len=100),
        org_access=_org_access(doc.attributes),
        idp_group=doc.string("sso-team-id", max_len=255),
        clear_idp_group="sso-team-id" in doc.attributes and doc.attributes["sso-team-id"] is None,
        visibility=doc.string("visibility", max_len=16),
        source=_source(call),
    )
    return JsonApiResponse({"data": team_doc(view, call)})


def delete_team(call: Call) -> Response:
    call.ctx.rbac.delete_team(call.caller, call.param("id"), _source(call))
    return no_content()


def _members(call: Call, *, add: bool) -> Response:
    items = parse_resource_list(call.raw, "users")
    users = []
    for i, item in enumerate(items):
        ident = item.get("id")
        if not isinstance(ident, str) or not ident:
            raise Invalid("each user needs an id (username or user ID)", pointer=f"/data/{i}")
        users.append(ident)
    call.ctx.rbac.change_members(
        call.caller,
        call.param("id"),
        users,
        add=add,
        source=_source(call),
    )
    return no_content()


def add_members(call: Call) -> Response:
    return _members(call, add=True)


def remove_members(call: Call) -> Response:
    return _members(call, add=False)


# ---- TFE team-workspace access ---------------------------------------------------------------


def list_team_workspaces(call: Call) -> Response:
    ws_id = query(call.request, "filter[workspace][id]")
    if not ws_id:
        raise BadRequest("filter[workspace][id] is required", parameter="filter[workspace][id]")
    page = page_from(call.request)
    org = call.ctx.rbac.org_of_workspace(call.caller, ws_id)
    views = call.ctx.rbac.list_grants(call.caller, org, kind="team-workspace", workspace_id=ws_id)
    chosen = views[page.offset : page.offset + page.size]
    return JsonApiResponse(
        {
            "data": [team_workspace_doc(v) for v in chosen],
            "meta": pagination_meta(page, len(views)),
        }
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
    org = call.ctx.rbac.org_of_workspace(call.caller, ws_id)
    view = call.ctx.rbac.create_grant(
        call.caller,
        org,
        role=access,
        team=team_id,
        user=None,
        workspace_id=ws_id,
        pattern=None,
        kind="team-workspace",
        source=_source(call),
    )
    return JsonApiResponse({"data": team_workspace_doc(view)}, status_code=201)


def show_team_workspace(call: Call) -> Response:
    view = call.ctx.rbac.find_grant(call.caller, call.param("id"))
    return JsonApiResponse({"data": team_workspace_doc(view)})


def update_team_workspace(call: Call) -> Response:
    doc = call.document("team-workspaces")
    access = doc.string("access", required=True, max_len=16) or ""
    view = call.ctx.rbac.update_grant_role(call.caller, call.param("id"), access, _source(call))
    return JsonApiResponse({"data": team_workspace_doc(view)})


def delete_grant(call: Call) -> Response:
    call.ctx.rbac.delete_grant(call.caller, call.param("id"), _source(call))
    return no_content()


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


def list_cairn_grants(call: Call) -> Response:
    views = call.ctx.rbac.list_grants(call.caller, call.param("org"))
    return JSONResponse({"data": [grant_doc(v) for v in views]})


def create_cairn_grant(call: Call) -> Response:
    body = _json_object(call)
    role = _opt_str(body, "role")
    if not role:
        raise Invalid(
            "role is required (read, plan, write, admin or a custom role)", pointer="/role"
        )
    view = call.ctx.rbac.create_grant(
        call.caller,
        call.param("org"),
        role=role,
        team=_opt_str(body, "team"),
        user=_opt_str(body, "user"),
        workspace_id=None,
        pattern=_opt_str(body, "workspaces"),
        kind="grant",
        source=_source(call),
    )
    return JSONResponse({"data": grant_doc(view)}, status_code=201)


def list_roles(call: Call) -> Response:
    roles = call.ctx.rbac.list_roles(call.caller, call.param("org"))
    return JSONResponse(
        {"data": [{"name": n, "permissions": p, "built-in": b} for n, p, b in roles]}
    )


def create_role(call: Call) -> Response:
    body = _json_object(call)
    name = _opt_str(body, "name") or ""
    perms = body.get("permissions")
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise Invalid("permissions must be a list of strings", pointer="/permissions")
    call.ctx.rbac.create_role(
        call.caller,
        call.param("org"),
        name,
        parse_permissions(perms, "/permissions"),
        _source(call),
    )
    return JSONResponse({"data": {"name": name, "permissions": sorted(perms)}}, status_code=201)


def delete_role(call: Call) -> Response:
    call.ctx.rbac.delete_role(
        call.caller,
        call.param("org"),
        call.param("name"),
        _source(call),
    )
    return no_content()


def create_user(call: Call) -> Response:
    body = _json_object(call)
    user = call.ctx.rbac.create_user(
        call.caller,
        _opt_str(body, "username") or "",
        _opt_str(body, "email") or "",
        _source(call),
    )
    return JSONResponse(
        {"data": {"id": user.id, "username": user.username, "email": user.email}},
        status_code=201,
    )


def list_users(call: Call) -> Response:
    users = call.ctx.rbac.list_users(call.caller)
    return JSONResponse(
        {
            "data": [
                {
                    "id": u.id,
                    "username": u.username,
                    "email": u.email,
                    "site-admin": u.is_site_admin,
                    "service-account": u.is_service_account,
                    "idp-issuer": u.idp_issuer,
                    "last-login-at": iso8601(u.last_login_at),
                }
                for u in users
            ]
        }
    )


def tfe_routes() -> list[Route]:
    return [
        route("/organizations/{org}/teams", list_teams, ["GET"]),
        route("/organizations/{org}/teams", create_team, ["POST"]),
        route("/teams/{id}", show_team, ["GET"]),
        route("/teams/{id}", update_team, ["PATCH"]),
        route("/teams/{id}", delete_team, ["DELETE"]),
        route("/teams/{id}/relationships/users", add_members, ["POST"], limit=256 * 1024),
        route("/teams/{id}/relationships/users", remove_members, ["DELETE"], limit=256 * 1024),
        route("/team-workspaces", list_team_workspaces, ["GET"]),
        route("/team-workspaces", create_team_workspace, ["POST"]),
        route("/team-workspaces/{id}", show_team_workspace, ["GET"]),
        route("/team-workspaces/{id}", update_team_workspace, ["PATCH"]),
        route("/team-workspaces/{id}", delete_grant, ["DELETE"]),
    ]


def cairn_routes() -> list[Route]:
    return [
        route("/organizations/{org}/grants", list_cairn_grants, ["GET"]),
        route("/organizations/{org}/grants", create_cairn_grant, ["POST"], limit=64 * 1024),
        route("/grants/{id}", delete_grant, ["DELETE"]),
        route("/organizations/{org}/roles", list_roles, ["GET"]),
        route("/organizations/{org}/roles", create_role, ["POST"], limit=64 * 1024),
        route("/organizations/{org}/roles/{name}", delete_role, ["DELETE"]),
        route("/admin/users", list_users, ["GET"]),
        route("/admin/users", create_user, ["POST"], limit=64 * 1024),
    ]
