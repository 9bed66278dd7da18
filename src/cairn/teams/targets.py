"""What a request about access names (an organization, a team, a workspace), found and
checked against ``authz``: 404 for what the caller may not see, 403 for a change they may not
make. Looked up by ID, a target that is not visible is named by that ID only, so that a
refusal does not leak the name behind it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cairn import authz
from cairn.authz.model import Team
from cairn.authz.permissions import ORG_MANAGE, ORG_READ
from cairn.authz.subject import Subject
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


def may_see_team(caller: Subject, org: Organization, team: Team) -> bool:
    """As in HCP Terraform: managers see every team; others in the organization see the
    teams visible to the organization and the secret teams they belong to."""
    target = org_target(org)
    if authz.allowed(caller, ORG_MANAGE, target):
        return True
    return authz.allowed(caller, ORG_READ, target) and (
        team.visibility == "organization" or team.id in caller.access.team_ids
    )


def visible_team(s: Session, caller: Subject, team_id: str) -> tuple[Organization, Team]:
    """A team the caller may see (404 otherwise)."""
    found = store.team(s, team_id)
    if found is None or not may_see_team(caller, *found):
        raise authz.not_found("team", repr(team_id))
    return found


def managed_team(s: Session, caller: Subject, team_id: str) -> tuple[Organization, Team]:
    """A team the caller may see and whose organization's access they may manage."""
    org, team = visible_team(s, caller, team_id)
    require_manage(caller, org)
    return org, team


def readable_workspace(
    s: Session, caller: Subject, workspace_id: str
) -> tuple[Organization, Workspace]:
    """A workspace the caller may read (404 otherwise)."""
    return workspaces.find(s, caller, workspace_id)
