"""Organizations through the TFE API, in-process (one fresh app per test, so counts are
exact): create, show, list with pagination meta, and an organization a person has no access
to is a 404 everywhere, never a 403."""

from __future__ import annotations

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


async def test_create_then_show(admin: httpx.AsyncClient) -> None:
    name = await create_organization(admin, "acme", "ops@acme.test")
    data = document(await admin.get(f"/api/v2/organizations/{name}"), 200)["data"]
    assert (data["type"], data["id"]) == ("organizations", "acme")
    assert data["attributes"]["name"] == "acme"
    assert data["attributes"]["email"] == "ops@acme.test"
    assert data["attributes"]["external-id"].startswith("org-")
    assert data["attributes"]["permissions"]["can-create-workspace"] is True
    missing = await admin.get("/api/v2/organizations/no-such-org")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["status"] == "404"


async def test_list_pages(admin: httpx.AsyncClient) -> None:
    names = {await create_organization(admin, f"org-{i}") for i in range(5)}
    seen: list[str] = []
    for number, size, next_page in ((1, 2, 2), (2, 2, 3), (3, 2, None)):
        doc = document(
            await admin.get(
                "/api/v2/organizations", params={"page[number]": number, "page[size]": size}
            ),
            200,
        )
        assert doc["meta"]["pagination"] == {
            "current-page": number,
            "page-size": size,
            "prev-page": number - 1 or None,
            "next-page": next_page,
            "total-pages": 3,
            "total-count": 5,
        }
        seen += [org["id"] for org in doc["data"]]
    assert len(seen) == 5 and set(seen) == names


async def test_an_organization_without_access_is_not_found(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    await create_workspace(admin, org, "app")
    outsider = await make_user(admin, "outsider")
    async with app.client(outsider.token) as person:
        assert (await person.get(f"/api/v2/organizations/{org}")).status_code == 404
        listed = document(await person.get("/api/v2/organizations"), 200)
        assert listed["data"] == []
        assert listed["meta"]["pagination"]["total-count"] == 0
        assert (await person.get(f"/api/v2/organizations/{org}/workspaces")).status_code == 404
        assert (await person.get(f"/api/v2/organizations/{org}/workspaces/app")).status_code == 404
        body = {"data": {"type": "workspaces", "attributes": {"name": "intruder"}}}
        created = await person.post(
            f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT
        )
        assert created.status_code == 404
    names = document(await admin.get(f"/api/v2/organizations/{org}/workspaces"), 200)["data"]
    assert [ws["attributes"]["name"] for ws in names] == ["app"]
