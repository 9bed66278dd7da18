"""A project's ``workspace-count`` (pytfe's ``Project.workspace_count`` is an int) counts the
project's workspaces the caller may read: an owner sees all of them, a person granted one
workspace sees one, and nobody learns of workspaces they cannot read."""

from __future__ import annotations

import httpx
import pytest

from tests.support.app import CT, InProcessCairn, create_organization, document, make_user

pytestmark = pytest.mark.anyio


async def test_workspace_count_is_the_readable_workspaces_of_the_project(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    body = {"data": {"type": "projects", "attributes": {"name": "Prod"}}}
    created = document(
        await admin.post(f"/api/v2/organizations/{org}/projects", json=body, headers=CT), 201
    )
    prod = created["data"]["id"]
    assert created["data"]["attributes"]["workspace-count"] == 0
    for name in ("app", "db", "dev-x"):
        ws = {
            "data": {
                "type": "workspaces",
                "attributes": {"name": name},
                "relationships": {"project": {"data": {"type": "projects", "id": prod}}},
            }
        }
        made = await admin.post(f"/api/v2/organizations/{org}/workspaces", json=ws, headers=CT)
        document(made, 201)
    shown = document(await admin.get(f"/api/v2/projects/{prod}"), 200)
    assert shown["data"]["attributes"]["workspace-count"] == 3
    listed = document(await admin.get(f"/api/v2/organizations/{org}/projects"), 200)
    counts = {p["attributes"]["name"]: p["attributes"]["workspace-count"] for p in listed["data"]}
    assert counts == {"Default Project": 0, "Prod": 3}

    rita = await make_user(admin, "rita")
    grant = {"role": "read", "workspaces": "app", "user": rita.username}
    document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)
    async with app.client(rita.token) as person:
        mine = document(await person.get(f"/api/v2/organizations/{org}/projects"), 200)
        seen = {p["attributes"]["name"]: p["attributes"]["workspace-count"] for p in mine["data"]}
        assert seen.get("Prod") == 1
