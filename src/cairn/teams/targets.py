"""What a request about access names (an organization, a team, a workspace), found and
checked against ``authz``: 404 for what the caller may not see, 403 for a change they may not
make. Looked up by ID, a target that is not visible is named by that ID only, so that a
refusal does not leak the name behind it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cairn import authz
from cairn.authz.model import Team
from cairn.authz.permissions import (
    ORG_MANAGE,
    ORG_MANAGE_ACCESS,
    ORG_MANAGE_MEMBERSHIP,
    ORG_MANAGE_TEAMS,
    ORG_READ,
    ORG_SECRET_TEAMS,
)
from cairn.authz.roles import ORG_ACCESS_FLAGS, OWNERS_TEAM
from cairn.authz.subject import Subject
from cairn.errors import Forbidden
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.teams import store
from cairn.workspaces import store as workspaces
from cairn.workspaces.model import Workspace


def org_target(org: Organization) -> authz.Org:
    return authz.Org(org.id, org.name)


def readable_org(s: Session, caller: Subject, name: str) -> Organization:
    """An organization the caller may see (404 otherwise)."""
    return orgs.readable(s, caller, name)


def managed_org(s: Session, caller: Subject, name: str) -> Organization:
    """An organization whose access the caller may manage (404 when they may not see it, 403
    when they may see but not manage it)."""
    org = store.organization(s, name)
    if org is None:
        raise authz.not_found("organization", repr(name))
    require_manage(caller, org)
    return org


def require_manage(caller: Subject, org: Organization) -> None:
    authz.require(caller, ORG_MANAGE, org_target(org), doing="manage access in")


def may_manage(caller: Subject, org: Organization) -> bool:
    return authz.allowed(caller, ORG_MANAGE, org_target(org))


def may_manage_membership(caller: Subject, org: Organization) -> bool:
    """``org:manage-membership`` (TFE's manage-membership, or manage-organization-access)."""
    return authz.allowed(caller, ORG_MANAGE_MEMBERSHIP, org_target(org))


def may_manage_teams(caller: Subject, org: Organization) -> bool:
    """``org:manage-teams`` (TFE's manage-teams, or manage-organization-access)."""
    return authz.allowed(caller, ORG_MANAGE_TEAMS, org_target(org))


def may_manage_access(caller: Subject, org: Organization) -> bool:
    """``org:manage-access`` (TFE's manage-organization-access)."""
    return authz.allowed(caller, ORG_MANAGE_ACCESS, org_target(org))


def require_on_team(caller: Subject, org: Organization, team: Team, permission: str) -> None:
    """Raise unless the caller may change ``team`` with ``permission`` (membership or
    organization access). The owners team is the owners' alone (``org:manage``): as in HCP
    Terraform, neither manage-membership nor manage-organization-access reaches it."""
    target = org_target(org)
    if team.name == OWNERS_TEAM:
        authz.require(caller, ORG_MANAGE, target, doing="change the owners team of")
    else:
        authz.require(caller, permission, target, doing="manage access in")


def require_may_give(caller: Subject, org: Organization, flags: set[str]) -> None:
    """Raise unless the caller holds, organization-wide, every right that the organization-
    access ``flags`` being added give: with ``org:manage-access`` alone one changes teams'
    access within one's own rights, and cannot make oneself (or anyone) a workspace admin."""
    if may_manage(caller, org):
        return
    held = authz.permissions(caller, org.id)
    beyond = sorted(f for f in flags if not ORG_ACCESS_FLAGS.get(f, frozenset()) <= held)
    if beyond:
        raise Forbidden(
            f"you may not give organization access {', '.join(beyond)} in "
            f"{org_target(org).label}: that needs the rights it gives (or {ORG_MANAGE})"
        )


def sees_secret_teams(caller: Subject, org: Organization) -> bool:
    """As in HCP Terraform: the organization's managers see every team, and so do those who
    hold access-secret-teams (which lets manage-membership, manage-teams and
    manage-organization-access reach secret teams too); everyone
    else in the organization sees the teams visible to the organization and the secret teams
    they belong to."""
    perms = authz.permissions(caller, org.id)
    return ORG_MANAGE in perms or ORG_SECRET_TEAMS in perms


def may_see_team(caller: Subject, org: Organization, team: Team) -> bool:
    """``sees_secret_teams``, or the team is visible to the organization, or the caller is in
    it."""
    if sees_secret_teams(caller, org):
        return True
    return authz.allowed(caller, ORG_READ, org_target(org)) and (
        team.visibility == "organization" or team.id in caller.access.team_ids
    )


def visible_team(s: Session, caller: Subject, team_id: str) -> tuple[Organization, Team]:
    """A team the caller may see (404 otherwise)."""
    found = store.team(s, team_id)
    if found is None or not may_see_team(caller, *found):
        raise authz.not_found("team", repr(team_id))
    return found


def managed_team(s: Session, caller: Subject, team_id: str) -> tuple[Organization, Team]:
    """A team the caller may see and change (``org:manage-teams``; the owners team:
    ``org:manage``)."""
    org, team = visible_team(s, caller, team_id)
    require_on_team(caller, org, team, ORG_MANAGE_TEAMS)
    return org, team


def readable_workspace(
    s: Session, caller: Subject, workspace_id: str
) -> tuple[Organization, Workspace]:
    """A workspace the caller may read (404 otherwise)."""
    return workspaces.find(s, caller, workspace_id)
