"""Every organization-access flag of HCP Terraform (go-tfe's `OrganizationAccess`) is accepted,
stored and returned, and means what HCP Terraform documents where cairn has the feature:

- read-workspaces: read access on every workspace (and so every project);
- read-projects: every project is visible (its workspaces are not);
- manage-projects: create, change and delete projects; admin on every workspace;
- manage-teams: create, rename, change and delete teams (not the owners team), and their
  membership; not their organization access;
- access-secret-teams: secret teams are reached too (seen, and managed at the level the other
  flags allow); without it, only the teams visible to the organization and one's own;
- the flags of features cairn does not have yet (policies, policy overrides, VCS settings,
  providers, modules, run tasks, agent pools) are stored and returned, give nothing, and are
  handed out only by those who hold them (the rule of manage-organization-access, M2).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.teams.helpers import add_member, lock, project, seed_state, team
from tests.support.app import (
    CT,
    InProcessCairn,
    Person,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

ALL_FLAGS = [
    "manage-policies",
    "manage-policy-overrides",
    "manage-workspaces",
    "manage-vcs-settings",
    "manage-providers",
    "manage-modules",
    "manage-run-tasks",
    "manage-projects",
    "read-workspaces",
    "read-projects",
    "manage-membership",
    "manage-teams",
    "manage-organization-access",
    "access-secret-teams",
    "manage-agent-pools",
]
INERT = [
    "manage-policies",
    "manage-policy-overrides",
    "manage-vcs-settings",
    "manage-providers",
    "manage-modules",
    "manage-run-tasks",
    "manage-agent-pools",
]


def _patch(flags: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"type": "teams", "attributes": {"organization-access": flags}}}


async def _member_of(
    admin: httpx.AsyncClient, org: str, *flags: str, name: str = "flagged"
) -> tuple[Person, dict[str, Any]]:
    person = await make_user(admin, "member")
    made = await team(admin, org, name, {f: True for f in flags})
    await add_member(admin, made["id"], person.id)
    return person, made


async def test_every_flag_is_accepted_stored_and_returned(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    made = await team(admin, org, "everything", {f: True for f in ALL_FLAGS})
    assert made["attributes"]["organization-access"] == {f: True for f in ALL_FLAGS}
    shown = document(await admin.get(f"/api/v2/teams/{made['id']}"), 200)["data"]
    assert shown["attributes"]["organization-access"] == {f: True for f in ALL_FLAGS}

    # A PATCH changes the flags it names and keeps the others (HCP Terraform's partial update).
    patched = await admin.patch(
        f"/api/v2/teams/{made['id']}",
        json=_patch({"manage-policies": False, "read-projects": False}),
        headers=CT,
    )
    flags = document(patched, 200)["data"]["attributes"]["organization-access"]
    assert flags == {f: f not in ("manage-policies", "read-projects") for f in ALL_FLAGS}

    # An unknown flag, or a flag that is not a boolean, is a 422 and changes nothing.
    for bad in ({"manage-everything": True}, {"manage-teams": "yes"}):
        refused = await admin.patch(f"/api/v2/teams/{made['id']}", json=_patch(bad), headers=CT)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["source"]["pointer"] == (
            "/data/attributes/organization-access"
        )
    again = document(await admin.get(f"/api/v2/teams/{made['id']}"), 200)["data"]
    assert again["attributes"]["organization-access"] == flags

    # A new team without organization-access has every flag false; visibility is checked.
    plain = await team(admin, org, "plain")
    assert plain["attributes"]["organization-access"] == {f: False for f in ALL_FLAGS}
    body = {"data": {"type": "teams", "attributes": {"name": "odd", "visibility": "public"}}}
    odd = await admin.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
    assert odd.status_code == 422, odd.text


async def test_read_workspaces_reads_every_workspace_and_its_state(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "app")
    other = await create_workspace(admin, org, "db")
    await seed_state(admin, ws.id)
    person, _ = await _member_of(admin, org, "read-workspaces")
    prj = await project(admin, org, "platform")
    async with app.client(person.token) as client:
        listed = document(await client.get(f"/api/v2/organizations/{org}/workspaces"), 200)
        assert {w["id"] for w in listed["data"]} == {ws.id, other.id}
        document(await client.get(f"/api/v2/workspaces/{ws.id}/current-state-version"), 200)
        document(await client.get(f"/api/v2/projects/{prj}"), 200)
        assert (await lock(client, ws.id)).status_code == 403
        body = {"data": {"type": "workspaces", "attributes": {"name": "mine"}}}
        made = await client.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
        assert made.status_code == 403, made.text


async def test_read_projects_sees_projects_not_their_workspaces(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "app")
    prj = await project(admin, org, "platform")
    person, _ = await _member_of(admin, org, "read-projects")
    async with app.client(person.token) as client:
        document(await client.get(f"/api/v2/projects/{prj}"), 200)
        assert (await client.get(f"/api/v2/workspaces/{ws.id}")).status_code == 404
        listed = document(await client.get(f"/api/v2/organizations/{org}/workspaces"), 200)
        assert listed["data"] == []
        body = {"data": {"type": "projects", "attributes": {"name": "renamed"}}}
        renamed = await client.patch(f"/api/v2/projects/{prj}", json=body, headers=CT)
        assert renamed.status_code == 403, renamed.text


async def test_manage_projects_manages_projects_and_their_workspaces(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "app")
    person, _ = await _member_of(admin, org, "manage-projects")
    async with app.client(person.token) as client:
        body = {"data": {"type": "projects", "attributes": {"name": "platform"}}}
        made = await client.post(f"/api/v2/organizations/{org}/projects", json=body, headers=CT)
        prj = document(made, 201)["data"]["id"]
        body = {"data": {"type": "projects", "attributes": {"name": "platform-2"}}}
        document(await client.patch(f"/api/v2/projects/{prj}", json=body, headers=CT), 200)
        settings = {"data": {"type": "workspaces", "attributes": {"description": "mine"}}}
        patched = await client.patch(f"/api/v2/workspaces/{ws.id}", json=settings, headers=CT)
        document(patched, 200)
        assert (await client.delete(f"/api/v2/projects/{prj}")).status_code == 204
        # Not the organization itself.
        org_patch = {"data": {"type": "organizations", "attributes": {"email": "x@example.com"}}}
        refused = await client.patch(f"/api/v2/organizations/{org}", json=org_patch, headers=CT)
        assert refused.status_code == 403, refused.text


async def test_manage_teams_manages_teams_but_not_their_access(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "app")
    person, own = await _member_of(admin, org, "manage-teams")
    newcomer = await make_user(admin, "newcomer")
    secret = await team(admin, org, "dba")  # secret, person not in it
    async with app.client(person.token) as client:
        body = {"data": {"type": "teams", "attributes": {"name": "devs"}}}
        made = await client.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
        devs = document(made, 201)["data"]
        assert devs["attributes"]["permissions"]["can-destroy"] is True
        assert devs["attributes"]["permissions"]["can-update-organization-access"] is False
        body = {
            "data": {
                "type": "teams",
                "attributes": {"name": "devs-2", "visibility": "organization"},
            }
        }
        renamed = await client.patch(f"/api/v2/teams/{devs['id']}", json=body, headers=CT)
        assert document(renamed, 200)["data"]["attributes"]["name"] == "devs-2"
        added = await client.post(
            f"/api/v2/teams/{devs['id']}/relationships/users",
            json={"data": [{"type": "users", "id": newcomer.id}]},
            headers=CT,
        )
        assert added.status_code == 204, added.text
        # Not organization access, on any team (own included), nor with it at creation.
        for target in (devs["id"], own["id"]):
            refused = await client.patch(
                f"/api/v2/teams/{target}", json=_patch({"read-workspaces": True}), headers=CT
            )
            assert refused.status_code == 403, refused.text
        body = {
            "data": {
                "type": "teams",
                "attributes": {"name": "x", "organization-access": {"read-workspaces": True}},
            }
        }
        made = await client.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
        assert made.status_code == 403, made.text
        # Secret teams stay out of reach without access-secret-teams.
        assert (await client.get(f"/api/v2/teams/{secret['id']}")).status_code == 404
        names = document(await client.get(f"/api/v2/organizations/{org}/teams"), 200)["data"]
        assert "dba" not in {t["attributes"]["name"] for t in names}
        # Nothing on workspaces; deleting a team works.
        assert (await client.get(f"/api/v2/workspaces/{ws.id}")).status_code == 404
        assert (await client.delete(f"/api/v2/teams/{devs['id']}")).status_code == 204


async def test_access_secret_teams_reaches_secret_teams(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    secret = await team(admin, org, "dba")
    newcomer = await make_user(admin, "newcomer")
    without, _ = await _member_of(admin, org, "manage-membership", name="helpdesk")
    with_it, _ = await _member_of(
        admin, org, "manage-membership", "access-secret-teams", name="senior-helpdesk"
    )
    members = f"/api/v2/teams/{secret['id']}/relationships/users"
    body = {"data": [{"type": "users", "id": newcomer.id}]}
    async with app.client(without.token) as client:
        assert (await client.get(f"/api/v2/teams/{secret['id']}")).status_code == 404
        assert (await client.post(members, json=body, headers=CT)).status_code == 404
    async with app.client(with_it.token) as client:
        shown = document(await client.get(f"/api/v2/teams/{secret['id']}"), 200)["data"]
        assert shown["attributes"]["permissions"]["can-update-membership"] is True
        assert shown["attributes"]["permissions"]["can-destroy"] is False  # not manage-teams
        assert (await client.post(members, json=body, headers=CT)).status_code == 204


@pytest.mark.parametrize("flag", INERT)
async def test_flags_of_missing_features_give_nothing_and_are_not_handed_out_freely(
    app: InProcessCairn, admin: httpx.AsyncClient, flag: str
) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "app")
    holder, own = await _member_of(admin, org, flag)
    assert own["attributes"]["organization-access"][flag] is True
    async with app.client(holder.token) as client:
        assert (await client.get(f"/api/v2/workspaces/{ws.id}")).status_code == 404
        body = {"data": {"type": "teams", "attributes": {"name": "x"}}}
        made = await client.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT)
        assert made.status_code == 403, made.text
    # manage-organization-access hands out only the flags whose rights its holder has.
    manager, _ = await _member_of(admin, org, "manage-organization-access", name="access")
    other = await team(admin, org, "other", visibility="organization")
    async with app.client(manager.token) as client:
        refused = await client.patch(
            f"/api/v2/teams/{other['id']}", json=_patch({flag: True}), headers=CT
        )
        assert refused.status_code == 403, refused.text
    # The owners may.
    given = await admin.patch(f"/api/v2/teams/{other['id']}", json=_patch({flag: True}), headers=CT)
    assert document(given, 200)["data"]["attributes"]["organization-access"][flag] is True
