"""The documents teams, team-workspace access, grants and user accounts are answered as:
TFE JSON:API resources (``/api/v2``) and cairn's plain JSON (``/api/cairn/v1``)."""

from __future__ import annotations

from typing import Any

from cairn.auth.model import User
from cairn.authz.roles import ORG_ACCESS_FLAGS, OWNERS_TEAM, WorkspaceAccess, grant_workspace_access
from cairn.authz.subject import USER_TYPE
from cairn.clock import iso8601
from cairn.teams.grants import GrantView
from cairn.teams.memberships import derived_id
from cairn.teams.projects import TeamProjectView
from cairn.teams.service import TeamView


def team_doc(v: TeamView) -> dict[str, Any]:
    t = v.team
    manage = v.manage
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
                "can-update-membership": v.membership,
                "can-destroy": v.teams and t.name != OWNERS_TEAM,
                "can-update-organization-access": v.access,
                "can-update-api-token": manage,
                "can-update-visibility": v.teams,
                "can-update-name": v.teams and t.name != OWNERS_TEAM,
                "can-update-sso-team-id": v.teams,
                "can-update-member-token-management": v.teams,
                "can-view-api-token": manage,
            },
            "created-at": iso8601(t.created_at),
        },
        "relationships": {
            "organization": {"data": {"id": v.org.name, "type": "organizations"}},
            "users": {"data": [{"id": u, "type": USER_TYPE} for u in v.member_ids]},
            # A team member's membership has the ID derived from organization and user.
            "organization-memberships": {
                "data": [
                    {"id": derived_id(v.org.id, u), "type": "organization-memberships"}
                    for u in v.member_ids
                ]
            },
        },
        "links": {"self": f"/api/v2/teams/{t.id}"},
    }


def team_workspace_doc(v: GrantView) -> dict[str, Any]:
    g = v.grant
    access = grant_workspace_access(g.role, g) or WorkspaceAccess()
    return {
        "id": g.id,
        "type": "team-workspaces",
        "attributes": {"access": g.role, **access.attributes()},
        "relationships": {
            "team": {"data": {"id": g.team_id, "type": "teams"}},
            "workspace": {"data": {"id": g.workspace_id, "type": "workspaces"}},
        },
        "links": {"self": f"/api/v2/team-workspaces/{g.id}"},
    }


def team_project_doc(v: TeamProjectView) -> dict[str, Any]:
    r = v.row
    return {
        "id": r.id,
        "type": "team-projects",
        "attributes": {
            "access": r.access,
            "project-access": v.access.project_attributes(),
            "workspace-access": v.access.workspace_attributes(),
        },
        "relationships": {
            "team": {"data": {"id": r.team_id, "type": "teams"}},
            "project": {"data": {"id": r.project_id, "type": "projects"}},
        },
        "links": {"self": f"/api/v2/team-projects/{r.id}"},
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


def user_row_doc(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "site-admin": u.is_site_admin,
        "service-account": u.is_service_account,
        "idp-issuer": u.idp_issuer,
        "last-login-at": iso8601(u.last_login_at),
        "disabled-at": iso8601(u.disabled_at),
    }
