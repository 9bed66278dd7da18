"""`GET /organization/audit-trail` (HCP Terraform's shape, organization token only, paged by
`since`) and the TFE admin API for site admins (`/admin/users`, `/admin/organizations`,
`/admin/workspaces`; 404 for everyone else)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio


async def _org_token(admin: httpx.AsyncClient, org: str) -> str:
    made = await admin.post(f"/api/v2/organizations/{org}/authentication-token", headers=CT)
    return str(document(made, 201)["data"]["attributes"]["token"])


async def test_audit_trail(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    other = await create_organization(admin)
    ws = await create_workspace(admin, org, "app")
    await create_workspace(admin, other, "app")
    app.advance(timedelta(minutes=1))
    document(await admin.post(f"/api/v2/workspaces/{ws.id}/actions/lock", headers=CT), 200)
    body = {"data": {"type": "teams", "attributes": {"name": "devs"}}}
    document(await admin.post(f"/api/v2/organizations/{org}/teams", json=body, headers=CT), 201)
    token = await _org_token(admin, org)

    async with app.client(token) as c:
        got = await c.get("/api/v2/organization/audit-trail")
        assert got.status_code == 200 and got.headers["content-type"].startswith("application/json")
        trail = got.json()
        assert set(trail) == {"data", "pagination"}
        assert trail["pagination"]["current_page"] == 1
        assert trail["pagination"]["total_count"] == len(trail["data"]) >= 2
        actions = [(e["resource"]["type"], e["resource"]["action"]) for e in trail["data"]]
        assert ("workspace", "lock") in actions
        assert ("team", "create") in actions
        event = trail["data"][0]
        assert event["version"] == "0" and event["type"] == "Resource"
        assert event["timestamp"].endswith("Z")
        assert set(event["auth"]) == {
            "accessor_id",
            "description",
            "type",
            "impersonator_id",
            "organization_id",
        }
        # Only this organization's events.
        assert all(e["resource"]["id"].startswith(org) for e in trail["data"])
        # since: only what came after; paging.
        last = trail["data"][-1]["timestamp"]
        after = (await c.get("/api/v2/organization/audit-trail", params={"since": last})).json()
        assert after["data"] == []
        paged = (await c.get("/api/v2/organization/audit-trail", params={"page[size]": 1})).json()
        assert len(paged["data"]) == 1 and paged["pagination"]["next_page"] == 2
        bad = await c.get("/api/v2/organization/audit-trail", params={"since": "yesterday"})
        assert bad.status_code == 400
    # Anyone else (a user, even a site admin; a team token): 404, as in HCP Terraform.
    assert (await admin.get("/api/v2/organization/audit-trail")).status_code == 404


async def test_admin_api_is_for_site_admins(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "app")
    person = await make_user(admin, "person")
    async with app.client(person.token) as c:
        for method, path in (
            ("GET", "/api/v2/admin/users"),
            ("GET", f"/api/v2/admin/users/{person.id}"),
            ("DELETE", f"/api/v2/admin/users/{person.id}"),
            ("POST", f"/api/v2/admin/users/{person.id}/actions/suspend"),
            ("POST", f"/api/v2/admin/users/{person.id}/actions/grant_admin"),
            ("GET", "/api/v2/admin/organizations"),
            ("GET", f"/api/v2/admin/organizations/{org}"),
            ("DELETE", f"/api/v2/admin/organizations/{org}"),
            ("GET", "/api/v2/admin/workspaces"),
            ("DELETE", f"/api/v2/admin/workspaces/{ws.id}"),
        ):
            assert (await c.request(method, path)).status_code == 404, (method, path)
    token = await _org_token(admin, org)
    async with app.client(token) as c:
        assert (await c.get("/api/v2/admin/workspaces")).status_code == 404
    # Nothing changed.
    assert (await admin.get(f"/api/v2/workspaces/{ws.id}")).status_code == 200


async def test_admin_users(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    person = await make_user(admin, "person")
    listed = document(await admin.get("/api/v2/admin/users", params={"q": person.username}), 200)
    (doc,) = listed["data"]
    assert doc["id"] == person.id and doc["attributes"]["is-suspended"] is False
    assert doc["attributes"]["is-admin"] is False

    path = f"/api/v2/admin/users/{person.id}"
    suspended = document(await admin.post(path + "/actions/suspend"), 200)
    assert suspended["data"]["attributes"]["is-suspended"] is True
    async with app.client(person.token) as c:
        assert (await c.get("/api/v2/account/details")).status_code == 401
    filtered = document(
        await admin.get("/api/v2/admin/users", params={"filter[suspended]": "true"}), 200
    )
    assert person.id in [u["id"] for u in filtered["data"]]
    assert (
        document(await admin.post(path + "/actions/unsuspend"), 200)["data"]["attributes"][
            "is-suspended"
        ]
        is False
    )
    assert (
        document(await admin.post(path + "/actions/grant_admin"), 200)["data"]["attributes"][
            "is-admin"
        ]
        is True
    )
    assert (
        document(await admin.post(path + "/actions/revoke_admin"), 200)["data"]["attributes"][
            "is-admin"
        ]
        is False
    )

    assert (await admin.delete(path)).status_code == 204
    assert (await admin.get(path)).status_code == 404
    events = document(
        await admin.get("/api/cairn/v1/audit-events", params={"filter[action]": "user."}), 200
    )["data"]
    assert {"user.delete", "user.grant_admin", "user.revoke_admin", "user.disable"} <= {
        e["attributes"]["action"] for e in events if e["attributes"]["subject"] == person.username
    }
    assert (
        await admin.get("/api/v2/admin/users", params={"filter[admin]": "maybe"})
    ).status_code == 400

    # The last owner of an organization is not deleted; nor is the caller.
    owner = await make_user(admin, "owner")
    owner_path = f"/api/v2/admin/users/{owner.id}"
    document(await admin.post(owner_path + "/actions/grant_admin"), 200)
    async with app.client(owner.token) as c:
        await create_organization(c)  # its creator is its only owner
    document(await admin.post(owner_path + "/actions/revoke_admin"), 200)
    assert (await admin.delete(owner_path)).status_code == 409
    me = document(await admin.get("/api/v2/account/details"), 200)["data"]["id"]
    assert (await admin.delete(f"/api/v2/admin/users/{me}")).status_code == 409
    assert (await admin.post(f"/api/v2/admin/users/{me}/actions/revoke_admin")).status_code == 409


async def test_admin_organizations_and_workspaces(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "app")
    listed = document(await admin.get("/api/v2/admin/organizations", params={"q": org}), 200)
    assert [o["id"] for o in listed["data"]] == [org]
    body = {"data": {"type": "organizations", "attributes": {"email": "new@example.com"}}}
    changed = document(
        await admin.patch(f"/api/v2/admin/organizations/{org}", json=body, headers=CT), 200
    )
    assert changed["data"]["attributes"]["email"] == "new@example.com"
    bad = {"data": {"type": "organizations", "attributes": {"access-beta-tools": True}}}
    assert (
        await admin.patch(f"/api/v2/admin/organizations/{org}", json=bad, headers=CT)
    ).status_code == 422

    found = document(
        await admin.get("/api/v2/admin/workspaces", params={"filter[organization][name]": org}), 200
    )
    assert [w["id"] for w in found["data"]] == [ws.id]
    assert found["data"][0]["relationships"]["organization"]["data"]["id"] == org
    shown = document(await admin.get(f"/api/v2/admin/workspaces/{ws.id}"), 200)
    assert shown["data"]["attributes"]["name"] == "app"
    # A locked workspace is not deleted (the workspace service's rule).
    document(await admin.post(f"/api/v2/workspaces/{ws.id}/actions/lock", headers=CT), 200)
    assert (
        await admin.delete(f"/api/v2/admin/workspaces/{ws.id}")
    ).status_code == 204  # its holder
    assert (await admin.get(f"/api/v2/admin/workspaces/{ws.id}")).status_code == 404
    assert (await admin.delete(f"/api/v2/admin/organizations/{org}")).status_code == 204
    assert (await admin.get(f"/api/v2/admin/organizations/{org}")).status_code == 404
