"""Workspaces through the TFE API, in-process (one fresh app per test, so counts are exact):
create, show by name and by id, list with pagination meta, and access: a workspace a person
cannot read is a 404 (never a 403), a write on a workspace they can only read is a 403."""

from __future__ import annotations

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    Workspace,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

LOCK = {"data": {"type": "", "attributes": {"reason": "held by a test"}}}


async def test_create_then_show_by_name_and_by_id(admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "network-prod", description="the network")
    assert ws.id.startswith("ws-")
    by_name = document(await admin.get(f"/api/v2/organizations/{org}/workspaces/{ws.name}"), 200)
    by_id = document(await admin.get(f"/api/v2/workspaces/{ws.id}"), 200)
    assert by_name["data"] == by_id["data"]
    data = by_id["data"]
    assert (data["type"], data["id"]) == ("workspaces", ws.id)
    assert data["attributes"]["name"] == "network-prod"
    assert data["attributes"]["description"] == "the network"
    assert data["attributes"]["locked"] is False
    assert data["relationships"]["organization"]["data"]["id"] == org
    assert (await admin.get("/api/v2/workspaces/ws-0000000000000000")).status_code == 404
    assert (await admin.get(f"/api/v2/organizations/{org}/workspaces/nope")).status_code == 404


async def test_list_pages(admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    made = {(await create_workspace(admin, org, f"app-{i}")).id for i in range(5)}
    await create_workspace(admin, await create_organization(admin), "elsewhere")
    seen: list[str] = []
    for number, next_page in ((1, 2), (2, 3), (3, None)):
        doc = document(
            await admin.get(
                f"/api/v2/organizations/{org}/workspaces",
                params={"page[number]": number, "page[size]": 2},
            ),
            200,
        )
        assert doc["meta"]["pagination"] == {
            "current-page": number,
            "page-size": 2,
            "prev-page": number - 1 or None,
            "next-page": next_page,
            "total-pages": 3,
            "total-count": 5,
        }
        assert len(doc["data"]) == (1 if number == 3 else 2)
        seen += [ws["id"] for ws in doc["data"]]
    assert len(seen) == 5 and set(seen) == made


async def test_unreadable_is_404_and_read_only_writes_are_403(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    readable = await create_workspace(admin, org, "app-web")
    hidden = await create_workspace(admin, org, "secret")
    reader = await make_user(admin, "reader")
    grant = {"role": "read", "workspaces": "app-*", "user": reader.username}
    document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)

    async with app.client(reader.token) as person:
        listed = document(await person.get(f"/api/v2/organizations/{org}/workspaces"), 200)
        assert [ws["id"] for ws in listed["data"]] == [readable.id]
        assert listed["meta"]["pagination"]["total-count"] == 1

        assert (await person.get(f"/api/v2/workspaces/{readable.id}")).status_code == 200
        for ws, status in ((readable, 403), (hidden, 404)):
            assert await writes(person, ws) == [status] * 3, ws.name
        assert (await person.get(f"/api/v2/workspaces/{hidden.id}")).status_code == 404
        by_name = await person.get(f"/api/v2/organizations/{org}/workspaces/{hidden.name}")
        assert by_name.status_code == 404

    for ws in (readable, hidden):
        data = document(await admin.get(f"/api/v2/workspaces/{ws.id}"), 200)["data"]
        assert data["attributes"]["locked"] is False
        assert data["attributes"]["description"] in (None, "")


async def writes(client: httpx.AsyncClient, ws: Workspace) -> list[int]:
    """The statuses of a lock, an update and a delete of `ws`."""
    lock = await client.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=LOCK, headers=CT)
    body = {"data": {"type": "workspaces", "attributes": {"description": "changed"}}}
    update = await client.patch(f"/api/v2/workspaces/{ws.id}", json=body, headers=CT)
    delete = await client.delete(f"/api/v2/workspaces/{ws.id}")
    return [lock.status_code, update.status_code, delete.status_code]
