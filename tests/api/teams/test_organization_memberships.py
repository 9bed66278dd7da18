"""`PATCH /account/update` and organization memberships (issue 8, item 2), through raw HTTP:
HCP Terraform's shapes; invitations of people with an account add them at once, of unknown
emails make a pending (`invited`) membership; manage-membership is the right to invite and
remove; others see 404 (organization not visible) or 403."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    Person,
    create_organization,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio


def _update(**attrs: Any) -> dict[str, Any]:
    return {"data": {"type": "users", "attributes": attrs}}


async def test_account_update(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    alice = await make_user(admin, "alice")
    bob = await make_user(admin, "bob")
    async with app.client(alice.token) as c:
        changed = await c.patch(
            "/api/v2/account/update",
            json=_update(username="alice2", email="a2@example.com"),
            headers=CT,
        )
        data = document(changed, 200)["data"]
        assert data["id"] == alice.id and data["type"] == "users"
        assert data["attributes"]["username"] == "alice2"
        assert data["attributes"]["email"] == "a2@example.com"
        details = document(await c.get("/api/v2/account/details"), 200)["data"]["attributes"]
        assert details["username"] == "alice2"
        # Conflicts and bad input: 422, nothing changed.
        for attrs in (
            {"username": bob.username},
            {"username": "user-AAAAAAAAAAAAAAAA"},
            {"username": "api-org-x"},
            {"username": "no spaces"},
            {"email": "not-an-email"},
            {"email": "x" * 300 + "@example.com"},
        ):
            refused = await c.patch("/api/v2/account/update", json=_update(**attrs), headers=CT)
            assert refused.status_code == 422, (attrs, refused.text)
        details = document(await c.get("/api/v2/account/details"), 200)["data"]["attributes"]
        assert details["username"] == "alice2" and details["email"] == "a2@example.com"
    # An organization token is no person.
    org = await create_organization(admin)
    made = await admin.post(f"/api/v2/organizations/{org}/authentication-token", headers=CT)
    org_token = document(made, 201)["data"]["attributes"]["token"]
    async with app.client(org_token) as c:
        refused = await c.patch("/api/v2/account/update", json=_update(username="x"), headers=CT)
        assert refused.status_code == 404


def _invite(
    email: str | None = None, username: str | None = None, teams: list[str] | None = None
) -> dict[str, Any]:
    attrs = {k: v for k, v in {"email": email, "username": username}.items() if v is not None}
    data: dict[str, Any] = {"type": "organization-memberships", "attributes": attrs}
    if teams is not None:
        data["relationships"] = {"teams": {"data": [{"type": "teams", "id": t} for t in teams]}}
    return {"data": data}


async def _team(admin: httpx.AsyncClient, org: str, name: str, **flags: bool) -> str:
    attrs = {"name": name, "visibility": "organization", "organization-access": flags}
    made = await admin.post(
        f"/api/v2/organizations/{org}/teams",
        json={"data": {"type": "teams", "attributes": attrs}},
        headers=CT,
    )
    return str(document(made, 201)["data"]["id"])


async def _members(client: httpx.AsyncClient, org: str, **params: str) -> dict[str, Any]:
    return document(
        await client.get(f"/api/v2/organizations/{org}/organization-memberships", params=params),
        200,
    )


async def test_invite_list_show_delete(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    devs = await _team(admin, org, "devs")
    carol = await make_user(admin, "carol")
    path = f"/api/v2/organizations/{org}/organization-memberships"

    # Someone with an account, by username: joins the team at once.
    made = document(
        await admin.post(path, json=_invite(username=carol.username, teams=[devs]), headers=CT), 201
    )
    m = made["data"]
    assert m["type"] == "organization-memberships" and m["id"].startswith("ou-")
    assert m["attributes"]["status"] == "active"
    assert m["relationships"]["user"]["data"] == {"type": "users", "id": carol.id}
    assert m["relationships"]["teams"]["data"] == [{"type": "teams", "id": devs}]
    assert m["relationships"]["organization"]["data"] == {"type": "organizations", "id": org}
    team = document(await admin.get(f"/api/v2/teams/{devs}"), 200)["data"]
    assert carol.id in [u["id"] for u in team["relationships"]["users"]["data"]]
    again = await admin.post(path, json=_invite(username=carol.username, teams=[devs]), headers=CT)
    assert again.status_code == 422

    # An unknown email: a pending invitation, once.
    pending = document(
        await admin.post(path, json=_invite(email="new@example.com", teams=[devs]), headers=CT), 201
    )
    p = pending["data"]
    assert p["attributes"] == {"status": "invited", "email": "new@example.com"}
    assert p["relationships"]["user"]["data"] is None
    assert (
        await admin.post(path, json=_invite(email="New@Example.com"), headers=CT)
    ).status_code == 422

    listed = await _members(admin, org)
    by_status = {(d["attributes"]["status"], d["attributes"]["email"]) for d in listed["data"]}
    assert ("invited", "new@example.com") in by_status
    assert listed["meta"]["pagination"]["total-count"] == 3  # the owner (admin), carol, invited
    assert [
        d["id"] for d in (await _members(admin, org, **{"filter[status]": "invited"}))["data"]
    ] == [p["id"]]
    shown = document(
        await admin.get(
            f"/api/v2/organization-memberships/{m['id']}", params={"include": "user,teams"}
        ),
        200,
    )
    assert shown["data"]["id"] == m["id"]
    assert {(r["type"], r["id"]) for r in shown["included"]} == {
        ("users", carol.id),
        ("teams", devs),
    }
    bad = await admin.get(f"/api/v2/organization-memberships/{m['id']}", params={"include": "x"})
    assert bad.status_code == 400

    # Carol sees her own memberships.
    async with app.client(carol.token) as c:
        mine = document(await c.get("/api/v2/organization-memberships"), 200)["data"]
        assert [d["id"] for d in mine] == [m["id"]]
        # She may see the organization's members but not remove anyone.
        assert (await c.get(path)).status_code == 200
        assert (await c.delete(f"/api/v2/organization-memberships/{p['id']}")).status_code == 403

    # Removing the membership takes her out of the organization's teams.
    assert (await admin.delete(f"/api/v2/organization-memberships/{m['id']}")).status_code == 204
    team = document(await admin.get(f"/api/v2/teams/{devs}"), 200)["data"]
    assert carol.id not in [u["id"] for u in team["relationships"]["users"]["data"]]
    assert (await admin.get(f"/api/v2/organization-memberships/{m['id']}")).status_code == 404
    assert (await admin.delete(f"/api/v2/organization-memberships/{p['id']}")).status_code == 204
    assert (await _members(admin, org))["meta"]["pagination"]["total-count"] == 1


async def test_invite_without_teams_and_taking_up_an_invitation(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    devs = await _team(admin, org, "devs")
    path = f"/api/v2/organizations/{org}/organization-memberships"
    dave = await make_user(admin, "dave")  # email dave@example.com
    # By email, no teams: a member in no team.
    made = document(await admin.post(path, json=_invite(email="dave@example.com"), headers=CT), 201)
    assert made["data"]["attributes"]["status"] == "active"
    assert made["data"]["relationships"]["user"]["data"]["id"] == dave.id
    async with app.client(dave.token) as c:
        assert [
            d["id"] for d in document(await c.get("/api/v2/organization-memberships"), 200)["data"]
        ] == [made["data"]["id"]]

    # A pending invitation is taken up (with its teams) when the person is invited again once
    # they have an account.
    pending = document(
        await admin.post(path, json=_invite(email="erin@example.com", teams=[devs]), headers=CT),
        201,
    )
    erin = await make_user(admin, "erin")
    taken = document(await admin.post(path, json=_invite(username=erin.username), headers=CT), 201)
    assert taken["data"]["attributes"]["status"] == "active"
    assert taken["data"]["relationships"]["teams"]["data"] == [{"type": "teams", "id": devs}]
    assert (
        await admin.get(f"/api/v2/organization-memberships/{pending['data']['id']}")
    ).status_code == 404


async def test_membership_rights(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    path = f"/api/v2/organizations/{org}/organization-memberships"
    stranger = await make_user(admin, "stranger")
    async with app.client(stranger.token) as c:
        assert (await c.get(path)).status_code == 404
        assert (
            await c.post(path, json=_invite(email="x@example.com"), headers=CT)
        ).status_code == 404
    # manage-membership may invite and remove, but not into the owners team.
    hr = await make_user(admin, "hr")
    # (access-secret-teams: the owners team is secret; without it, naming it is a 422 as for
    # a team that does not exist.)
    hr_team = await _team(
        admin, org, "hr", **{"manage-membership": True, "access-secret-teams": True}
    )
    added = await admin.post(
        f"/api/v2/teams/{hr_team}/relationships/users",
        json={"data": [{"type": "users", "id": hr.username}]},
        headers=CT,
    )
    assert added.status_code == 204
    teams = document(await admin.get(f"/api/v2/organizations/{org}/teams"), 200)["data"]
    (owners,) = [t["id"] for t in teams if t["attributes"]["name"] == "owners"]
    frank: Person = await make_user(admin, "frank")
    async with app.client(hr.token) as c:
        made = await c.post(
            path, json=_invite(username=frank.username, teams=[hr_team]), headers=CT
        )
        assert made.status_code == 201, made.text
        refused = await c.post(
            path, json=_invite(email="g@example.com", teams=[owners]), headers=CT
        )
        assert refused.status_code == 403
        gone = await c.delete(
            f"/api/v2/organization-memberships/{document(made, 201)['data']['id']}"
        )
        assert gone.status_code == 204
    # Bad input: 422 (neither or both of email and username; a foreign team).
    other_team = await _team(admin, await create_organization(admin), "x")
    for body in (
        _invite(),
        _invite(email="a@example.com", username="someone"),
        _invite(email="bad"),
        _invite(email="h@example.com", teams=[other_team]),
    ):
        assert (await admin.post(path, json=body, headers=CT)).status_code == 422, body
