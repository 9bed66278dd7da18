"""The hosted (two-step) state upload, in-process, by moving the clock: a state version created
without `state` is pending and carries a signed `hosted-state-upload-url`; a PUT to it within
`upload_url_ttl_seconds` stores the state and finalizes the version; after that the URL is
refused (401) and the version stays pending."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.support.app import CT, InProcessCairn, Workspace, document, organization_and_workspace
from tests.support.statefile import new_lineage, state_file, version_body

pytestmark = pytest.mark.anyio


async def pending_version(admin: httpx.AsyncClient, ws: Workspace, raw: bytes) -> dict[str, Any]:
    """Lock `ws` and create a state version for `raw` without its bytes."""
    lock = {"data": {"type": "", "attributes": {"reason": "held by a test"}}}
    document(await admin.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=lock), 200)
    response = await admin.post(
        f"/api/v2/workspaces/{ws.id}/state-versions",
        json=version_body(raw, inline=False),
        headers=CT,
    )
    data: dict[str, Any] = document(response, 201)["data"]
    assert data["attributes"]["status"] == "pending"
    assert data["attributes"]["hosted-state-download-url"] is None
    return data


async def status_of(admin: httpx.AsyncClient, sv_id: str) -> str:
    doc = document(await admin.get(f"/api/v2/state-versions/{sv_id}"), 200)
    status: str = doc["data"]["attributes"]["status"]
    return status


async def test_an_upload_url_works_within_its_lifetime(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    raw = state_file(1, new_lineage())
    sv = await pending_version(admin, ws, raw)
    url = sv["attributes"]["hosted-state-upload-url"]
    assert url.startswith(f"{app.url}/api/v2/state-versions/{sv['id']}/hosted-upload/")

    app.advance(timedelta(seconds=app.settings.upload_url_ttl_seconds - 1))
    async with app.client() as anonymous:  # the URL authorises itself (go-tfe sends no token)
        assert (await anonymous.put(url, content=raw)).status_code == 200
    assert await status_of(admin, sv["id"]) == "finalized"
    current = document(await admin.get(f"/api/v2/workspaces/{ws.id}/current-state-version"), 200)
    assert current["data"]["id"] == sv["id"]
    download = current["data"]["attributes"]["hosted-state-download-url"]
    assert (await admin.get(download)).content == raw


async def test_an_expired_upload_url_is_refused(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    raw = state_file(1, new_lineage())
    sv = await pending_version(admin, ws, raw)
    url = sv["attributes"]["hosted-state-upload-url"]

    app.advance(timedelta(seconds=app.settings.upload_url_ttl_seconds + 1))
    async with app.client() as anonymous:
        response = await anonymous.put(url, content=raw)
    assert response.status_code == 401, response.text
    assert "expired" in document(response, 401)["errors"][0]["detail"]
    assert await status_of(admin, sv["id"]) == "pending"
