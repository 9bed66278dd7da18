"""Organization memberships and `account/update` through the official SDK (pytfe) against a
real server on both databases."""

from __future__ import annotations

import httpx
import pytest
from pytfe import TFEClient
from pytfe.errors import TFEError
from pytfe.models import OrganizationMembershipCreateOptions, Team, UserUpdateCurrentOptions
from pytfe.models.organization_membership import (
    OrganizationMembershipReadOptions,
    OrganizationMembershipStatus,
    OrgMembershipIncludeOpt,
)

from tests.support import api as tfe_api
from tests.support.server import CairnServer


def _person(api: httpx.Client, prefix: str) -> tuple[str, str, str]:
    """(id, username, token) of a new person."""
    username = tfe_api.unique_name(prefix)
    made = api.post(
        "/api/cairn/v1/admin/users", json={"username": username, "email": f"{username}@example.com"}
    )
    user_id = tfe_api.document(made, 201)["data"]["id"]
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": "t"}}}
    token = api.post(f"/api/v2/users/{user_id}/authentication-tokens", json=body)
    return user_id, username, tfe_api.document(token, 201)["data"]["attributes"]["token"]


def test_memberships_through_pytfe(tfe: TFEClient, api: httpx.Client, org: str) -> None:
    body = {"data": {"type": "teams", "attributes": {"name": "devs"}}}
    devs = tfe_api.document(api.post(f"/api/v2/organizations/{org}/teams", json=body), 201)
    team_id = devs["data"]["id"]
    _, username, _ = _person(api, "pat")
    made = tfe.organization_memberships.create(
        org,
        OrganizationMembershipCreateOptions(
            email=f"{username}@example.com", teams=[Team(id=team_id)]
        ),
    )
    assert made.status == OrganizationMembershipStatus.ACTIVE
    pending = tfe.organization_memberships.create(
        org, OrganizationMembershipCreateOptions(email="nobody-yet@example.com")
    )
    assert pending.status == OrganizationMembershipStatus.INVITED
    # One pending invitation per email (the database's partial unique index decides).
    with pytest.raises(TFEError, match="already been invited"):
        tfe.organization_memberships.create(
            org, OrganizationMembershipCreateOptions(email="nobody-yet@example.com")
        )
    listed = {m.id: m for m in tfe.organization_memberships.list(org)}
    assert made.id in listed and pending.id in listed
    assert tfe.organization_memberships.read(made.id).email == f"{username}@example.com"
    hydrated = tfe.organization_memberships.read_with_options(
        made.id, OrganizationMembershipReadOptions(include=[OrgMembershipIncludeOpt.USER])
    )
    assert hydrated.user is not None and hydrated.user.username == username
    tfe.organization_memberships.delete(pending.id)
    assert pending.id not in {m.id for m in tfe.organization_memberships.list(org)}


def test_account_update_through_pytfe(server: CairnServer, api: httpx.Client) -> None:
    _, username, token = _person(api, "quinn")
    client = tfe_api.pytfe_client(server, token)
    try:
        changed = client.users.update_current(
            UserUpdateCurrentOptions(username=username + "x", email="q@example.com")
        )
        assert changed.username == username + "x" and changed.email == "q@example.com"
        assert client.users.read_current().username == username + "x"
    finally:
        client.close()


def test_team_members_by_organization_membership(
    tfe: TFEClient, api: httpx.Client, org: str
) -> None:
    """pytfe's ``add_organization_memberships`` / ``remove_organization_memberships`` name a
    team's members by membership ID (``POST/DELETE /teams/:id/relationships/
    organization-memberships``); an invitation not accepted yet is refused, changing nothing."""
    body = {"data": {"type": "teams", "attributes": {"name": "ops"}}}
    ops = tfe_api.document(api.post(f"/api/v2/organizations/{org}/teams", json=body), 201)
    team_id = ops["data"]["id"]
    user_id, username, _ = _person(api, "rio")
    member = tfe.organization_memberships.create(
        org, OrganizationMembershipCreateOptions(email=f"{username}@example.com")
    )
    invited = tfe.organization_memberships.create(
        org, OrganizationMembershipCreateOptions(email="later@example.com")
    )

    def members() -> set[str]:
        team = api.get(f"/api/v2/teams/{team_id}")
        data = tfe_api.document(team, 200)["data"]["relationships"]["users"]["data"]
        return {u["id"] for u in data}

    tfe.teams.add_organization_memberships(team_id, [member.id])
    assert members() == {user_id}
    with pytest.raises(TFEError, match="not accepted yet"):
        tfe.teams.add_organization_memberships(team_id, [invited.id])
    assert members() == {user_id}
    tfe.teams.remove_organization_memberships(team_id, [member.id])
    assert members() == set()
