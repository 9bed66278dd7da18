"""Workspace show reads its row through Core (`workspaces.store.show`, issue 8): the document it
answers is the one the ORM path answers (the list), for a workspace with tags, a lock held by
a person and settings off their defaults; a missing organization, a hidden one and a missing
workspace keep their distinct answers."""

from __future__ import annotations

from typing import Any

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


async def test_show_answers_what_the_list_answers(admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "core-show")
    settings = {
        "data": {
            "type": "workspaces",
            "attributes": {
                "description": "read through Core",
                "auto-apply": True,
                "working-directory": "infra",
                "trigger-prefixes": ["modules/"],
                "global-remote-state": True,
            },
        }
    }
    document(await admin.patch(f"/api/v2/workspaces/{ws.id}", json=settings, headers=CT), 200)
    tags = {"data": [{"type": "tags", "attributes": {"name": n}} for n in ("web", "prod")]}
    tagged = await admin.post(
        f"/api/v2/workspaces/{ws.id}/relationships/tags", json=tags, headers=CT
    )
    assert tagged.status_code == 204, tagged.text
    lock = {"data": {"type": "", "attributes": {"reason": "core"}}}
    document(
        await admin.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=lock, headers=CT), 200
    )

    by_id = document(await admin.get(f"/api/v2/workspaces/{ws.id}"), 200)["data"]
    by_name = document(await admin.get(f"/api/v2/organizations/{org}/workspaces/core-show"), 200)
    listed: list[dict[str, Any]] = document(
        await admin.get(f"/api/v2/organizations/{org}/workspaces"), 200
    )["data"]
    assert by_id == by_name["data"] == listed[0]
    attributes = by_id["attributes"]
    assert attributes["tag-names"] == ["prod", "web"]
    assert attributes["locked"] is True and attributes["locked-reason"] == "core"
    assert attributes["working-directory"] == "infra" and attributes["auto-apply"] is True
    assert by_id["relationships"]["locked-by"]["data"]["type"] == "users"


async def test_show_by_name_tells_organization_from_workspace(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    await create_workspace(admin, org, "there")
    missing_org = await admin.get("/api/v2/organizations/no-such-org/workspaces/there")
    assert missing_org.status_code == 404
    assert "organization" in missing_org.json()["errors"][0]["detail"]
    missing_ws = await admin.get(f"/api/v2/organizations/{org}/workspaces/nope")
    assert missing_ws.status_code == 404
    assert "workspace" in missing_ws.json()["errors"][0]["detail"]
    stranger = await make_user(admin, "stranger")
    async with app.client(stranger.token) as c:
        # A hidden organization answers as a missing one, whether the workspace exists or not.
        hidden = await c.get(f"/api/v2/organizations/{org}/workspaces/there")
        absent = await c.get(f"/api/v2/organizations/{org}/workspaces/nope")
        assert hidden.status_code == absent.status_code == 404
        assert hidden.json() == absent.json()
        assert "organization" in hidden.json()["errors"][0]["detail"]
