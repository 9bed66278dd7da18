"""`manage-membership` and `manage-organization-access` grant what HCP Terraform documents
(finding M2), and nothing more.

Both flags used to map to `org:manage`, which is every right in the organization: a helpdesk
team with `manage-membership` read every state, minted apply tokens, created the organization
token and could delete the organization. Now:

- `manage-membership` (`org:manage-membership`): add people to teams and remove them (which is
  how one joins or leaves an organization here) and see every team to do so — never the owners
  team, nothing on workspaces, projects, settings, tokens or other access;
- `manage-organization-access` (`org:manage-access`): change teams' organization access (not the
  owners team's, and only with flags whose rights the caller already holds) and, as HCP
  documents, manage teams and membership too — and still not `org:manage`.

Secret teams are reached only with `access-secret-teams` (test_team_flags.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    Person,
    Workspace,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

FLAGS = ["manage-membership", "manage-organization-access"]


async def _team(
    admin: httpx.AsyncClient, org: str, name: str, flags: list[str], visibility: str = "secret"
) -> dict[str, Any]:
    attributes = {
        "name": name,
        "visibility": visibility,
        "organization-access": {f: True for f in flags},
    }
    body = {"data": {"type": "teams", "attributes": attributes}}
    created = await admin.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
    team: dict[str, Any] = document(created, 201)["data"]
    return team


async def _members(
    client: httpx.AsyncClient, team_id: str, users: list[str], *, add: bool = True
) -> httpx.Response:
    body = {"data": [{"type": "users", "id": u} for u in users]}
    return await client.request(
        "POST" if add else "DELETE",
        f"/api/v2/teams/{team_id}/relationships/users",
        json=body,
        headers=CT,
    )


async def _owners(admin: httpx.AsyncClient, org: str) -> dict[str, Any]:
    teams = document(await admin.get(f"/api/v2/organizations/{org}/teams"), 200)["data"]
    owners: dict[str, Any] = next(t for t in teams if t["attributes"]["name"] == "owners")
    return owners


async def _flagged(
    admin: httpx.AsyncClient, flag: str, *more: str
) -> tuple[Workspace, Person, str]:
    """An organization with a workspace and a team with ``flag`` (and ``more``) only, holding
    a new person."""
    ws = await create_workspace(admin, await create_organization(admin), "prod-db")
    person = await make_user(admin, "hal")
    team = await _team(admin, ws.org, "helpdesk", [flag, *more])
    assert (await _members(admin, team["id"], [person.id])).status_code == 204
    return ws, person, team["id"]


@pytest.mark.parametrize("flag", FLAGS)
async def test_the_flag_gives_nothing_on_workspaces_tokens_or_the_organization(
    app: InProcessCairn, admin: httpx.AsyncClient, flag: str
) -> None:
    """The finding's reproducer, and the rest of what an owner may do."""
    ws, hal, team_id = await _flagged(admin, flag)
    async with app.client(hal.token) as client:
        # Workspaces: not even visible.
        assert (await client.get(f"/api/v2/workspaces/{ws.id}")).status_code == 404
        states = await client.get(f"/api/v2/workspaces/{ws.id}/state-versions")
        assert states.status_code == 404, states.text
        mint = await client.post(
            f"/api/cairn/v1/workspaces/{ws.id}/id-tokens",
            json={"audience": "sts.amazonaws.com", "run_phase": "apply"},
        )
        assert mint.status_code == 404, mint.text
        listed = document(await client.get(f"/api/v2/organizations/{ws.org}/workspaces"), 200)
        assert listed["data"] == []
        made = await client.post(
            f"/api/v2/organizations/{ws.org}/workspaces",
            json={"data": {"type": "workspaces", "attributes": {"name": "mine"}}},
            headers=CT,
        )
        assert made.status_code == 403, made.text

        # The organization: readable (a member), but neither its tokens nor its settings.
        org = document(await client.get(f"/api/v2/organizations/{ws.org}"), 200)["data"]
        assert org["attributes"]["permissions"]["can-destroy"] is False
        token = await client.post(
            f"/api/v2/organizations/{ws.org}/authentication-token",
            json={"data": {"type": "authentication-token"}},
            headers=CT,
        )
        assert token.status_code in (403, 404), token.text
        patched = await client.patch(
            f"/api/v2/organizations/{ws.org}",
            json={"data": {"type": "organizations", "attributes": {"email": "x@example.com"}}},
            headers=CT,
        )
        assert patched.status_code == 403, patched.text
        assert (await client.delete(f"/api/v2/organizations/{ws.org}")).status_code == 403

        # Other access: grants, workspace access, teams themselves and their tokens.
        grants = await client.get(f"/api/cairn/v1/organizations/{ws.org}/grants")
        assert grants.status_code == 403, grants.text
        grant = await client.post(
            f"/api/cairn/v1/organizations/{ws.org}/grants",
            json={"role": "admin", "user": hal.id, "workspaces": "*"},
        )
        assert grant.status_code == 403, grant.text
        if flag == "manage-membership":  # manage-organization-access manages teams too
            created = await client.post(
                f"/api/v2/organizations/{ws.org}/teams",
                json={"data": {"type": "teams", "attributes": {"name": "new"}}},
                headers=CT,
            )
            assert created.status_code == 403, created.text
            renamed = await client.patch(
                f"/api/v2/teams/{team_id}",
                json={"data": {"type": "teams", "attributes": {"name": "renamed"}}},
                headers=CT,
            )
            assert renamed.status_code == 403, renamed.text
            assert (await client.delete(f"/api/v2/teams/{team_id}")).status_code == 403
        team_token = await client.post(
            f"/api/v2/teams/{team_id}/authentication-token",
            json={"data": {"type": "authentication-token"}},
            headers=CT,
        )
        assert team_token.status_code in (403, 404), team_token.text
        tokens = await client.post(
            f"/api/v2/users/{hal.id}/authentication-tokens",
            json={"data": {"type": "authentication-tokens", "attributes": {"description": "x"}}},
            headers=CT,
        )
        assert tokens.status_code == 201  # their own, as anyone: not the organization's

    # And the organization still has its workspace and its one owner.
    document(await admin.get(f"/api/v2/workspaces/{ws.id}"), 200)


@pytest.mark.parametrize("flag", FLAGS)
async def test_the_flag_adds_and_removes_members_of_every_team_but_owners(
    app: InProcessCairn, admin: httpx.AsyncClient, flag: str
) -> None:
    ws, hal, _ = await _flagged(admin, flag, "access-secret-teams")
    newcomer = await make_user(admin, "newcomer")
    secret = await _team(admin, ws.org, "dba", [])  # secret, hal not in it
    owners = await _owners(admin, ws.org)
    async with app.client(hal.token) as client:
        teams = document(await client.get(f"/api/v2/organizations/{ws.org}/teams"), 200)["data"]
        seen = {t["attributes"]["name"]: t["attributes"]["permissions"] for t in teams}
        assert {"owners", "helpdesk", "dba"} <= set(seen)
        assert seen["dba"]["can-update-membership"] is True
        assert seen["owners"]["can-update-membership"] is False
        assert seen["dba"]["can-destroy"] is (flag == "manage-organization-access")

        assert (await _members(client, secret["id"], [newcomer.id])).status_code == 204
        shown = document(await client.get(f"/api/v2/teams/{secret['id']}"), 200)["data"]
        assert [u["id"] for u in shown["relationships"]["users"]["data"]] == [newcomer.id]
        removed = await _members(client, secret["id"], [newcomer.id], add=False)
        assert removed.status_code == 204

        # The owners team is the owners' alone.
        joined = await _members(client, owners["id"], [hal.id])
        assert joined.status_code == 403, joined.text
    members = (await _owners(admin, ws.org))["relationships"]["users"]["data"]
    assert hal.id not in {u["id"] for u in members}


async def test_manage_membership_does_not_change_organization_access(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws, hal, team_id = await _flagged(admin, "manage-membership")
    other = await _team(admin, ws.org, "dev", [], visibility="organization")
    async with app.client(hal.token) as client:
        for target in (team_id, other["id"]):
            changed = await client.patch(
                f"/api/v2/teams/{target}",
                json={
                    "data": {
                        "type": "teams",
                        "attributes": {"organization-access": {"manage-workspaces": True}},
                    }
                },
                headers=CT,
            )
            assert changed.status_code == 403, changed.text
    async with app.client(hal.token) as client:
        assert (await client.get(f"/api/v2/workspaces/{ws.id}")).status_code == 404


async def test_manage_organization_access_changes_access_within_its_own_rights(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws, hal, team_id = await _flagged(admin, "manage-organization-access")
    other = await _team(admin, ws.org, "dev", [], visibility="organization")
    owners = await _owners(admin, ws.org)

    def access(flags: dict[str, bool]) -> dict[str, Any]:
        return {"data": {"type": "teams", "attributes": {"organization-access": flags}}}

    async with app.client(hal.token) as client:
        shown = document(await client.get(f"/api/v2/teams/{other['id']}"), 200)["data"]
        assert shown["attributes"]["permissions"]["can-update-organization-access"] is True
        # A flag whose rights hal holds: given.
        given = await client.patch(
            f"/api/v2/teams/{other['id']}",
            json=access({"manage-membership": True}),
            headers=CT,
        )
        flags = document(given, 200)["data"]["attributes"]["organization-access"]
        assert flags["manage-membership"] is True and flags["manage-workspaces"] is False
        # Rights hal does not hold: not to another team, not to hal's own.
        for target in (other["id"], team_id):
            escalated = await client.patch(
                f"/api/v2/teams/{target}",
                json=access({"manage-workspaces": True, "manage-organization-access": True}),
                headers=CT,
            )
            assert escalated.status_code == 403, escalated.text
        # Nor the owners team.
        owned = await client.patch(
            f"/api/v2/teams/{owners['id']}", json=access({"read-workspaces": True}), headers=CT
        )
        assert owned.status_code in (403, 404), owned.text  # secret to hal, too
        # Settings: manage-organization-access confers manage-teams (HCP Terraform), but
        # without access-secret-teams not the making of a team they could no longer reach.
        renamed = await client.patch(
            f"/api/v2/teams/{other['id']}",
            json={"data": {"type": "teams", "attributes": {"name": "developers"}}},
            headers=CT,
        )
        assert document(renamed, 200)["data"]["attributes"]["name"] == "developers"
        hidden = await client.patch(
            f"/api/v2/teams/{other['id']}",
            json={"data": {"type": "teams", "attributes": {"visibility": "secret"}}},
            headers=CT,
        )
        assert hidden.status_code == 403, hidden.text
        assert (await client.get(f"/api/v2/workspaces/{ws.id}")).status_code == 404

    # Still the owners': any flag, any team.
    document(
        await admin.patch(
            f"/api/v2/teams/{other['id']}",
            json=access({"manage-workspaces": True}),
            headers=CT,
        ),
        200,
    )
