"""Who gets an upload URL and what it can do (security findings 2026-11-30, L1, L2, M4):

* L1: only a caller who may write the state (state write access and the workspace's lock)
  receives `hosted-state-upload-url` / `hosted-json-state-upload-url`; a reader sees `null`.
  The JSON-state URL dies with its version: once the workspace is unlocked (or a newer version
  is current) it is refused, and `json-download` never serves bytes sent through it.
* L2: finishing an upload re-checks the uploader: access revoked or lock gone → refused, nothing
  stored.
* M4: a URL is used up by its first PUT whatever the outcome (wrong MD5, not a state, too
  large); the next PUT is a 409 saying to create a new state version; a refused upload leaves
  no blob behind.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    Person,
    Workspace,
    document,
    grant,
    make_user,
    organization_and_workspace,
)
from tests.support.statefile import new_lineage, state_file, version_body

pytestmark = pytest.mark.anyio

LOCK = {"data": {"type": "", "attributes": {"reason": "held by a test"}}}


async def people(app: InProcessCairn, admin: httpx.AsyncClient) -> tuple[Workspace, Person, Person]:
    """A workspace, a writer and a reader of it."""
    ws = await organization_and_workspace(admin)
    writer, reader = await make_user(admin, "writer"), await make_user(admin, "reader")
    await grant(admin, ws, writer, "write")
    await grant(admin, ws, reader, "read")
    return ws, writer, reader


async def pending(
    client: httpx.AsyncClient, ws: Workspace, raw: bytes, *, lock: bool = True
) -> dict[str, Any]:
    """Lock `ws` as `client` (unless `lock` is False) and create a pending version for `raw`."""
    if lock:
        document(await client.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=LOCK), 200)
    response = await client.post(
        f"/api/v2/workspaces/{ws.id}/state-versions",
        json=version_body(raw, inline=False),
        headers=CT,
    )
    data: dict[str, Any] = document(response, 201)["data"]
    assert data["attributes"]["status"] == "pending"
    return data


async def put(app: InProcessCairn, url: str, content: bytes, **headers: str) -> httpx.Response:
    async with app.client() as anonymous:  # go-tfe sends no token to an upload URL
        return await anonymous.put(url, content=content, headers=headers)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- L1 -----------------------------------------------------------------------------------------


async def test_a_reader_gets_no_upload_urls(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    ws, writer, reader = await people(app, admin)
    raw = state_file(1, new_lineage())
    async with app.client(writer.token) as w, app.client(reader.token) as r:
        sv = await pending(w, ws, raw)
        assert sv["attributes"]["hosted-state-upload-url"]
        assert sv["attributes"]["hosted-json-state-upload-url"]
        seen = document(await r.get(f"/api/v2/state-versions/{sv['id']}"), 200)["data"]
        assert seen["attributes"]["hosted-state-upload-url"] is None
        assert seen["attributes"]["hosted-json-state-upload-url"] is None
        # The writer, who holds the lock, still gets them.
        again = document(await w.get(f"/api/v2/state-versions/{sv['id']}"), 200)["data"]
        assert again["attributes"]["hosted-state-upload-url"]


async def test_a_writer_without_the_lock_gets_no_upload_urls(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws, writer, _ = await people(app, admin)
    other = await make_user(admin, "other-writer")
    await grant(admin, ws, other, "write")
    async with app.client(writer.token) as w, app.client(other.token) as o:
        sv = await pending(w, ws, state_file(1, new_lineage()))
        seen = document(await o.get(f"/api/v2/state-versions/{sv['id']}"), 200)["data"]
    assert seen["attributes"]["hosted-state-upload-url"] is None
    assert seen["attributes"]["hosted-json-state-upload-url"] is None


async def test_the_json_url_dies_with_its_version(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws, writer, _ = await people(app, admin)
    raw = state_file(1, new_lineage())
    async with app.client(writer.token) as w:
        sv = await pending(w, ws, raw)
        json_url = sv["attributes"]["hosted-json-state-upload-url"]
        assert (await put(app, sv["attributes"]["hosted-state-upload-url"], raw)).status_code == 200
        document(await w.post(f"/api/v2/workspaces/{ws.id}/actions/unlock"), 200)
        late = await put(app, json_url, b'{"format_version": "1.0"}')
        assert late.status_code in (404, 409), late.text
        shown = document(await w.get(f"/api/v2/state-versions/{sv['id']}"), 200)["data"]
        assert shown["attributes"]["hosted-json-state-download-url"] is None
        assert (await w.get(f"/api/v2/state-versions/{sv['id']}/json-download")).status_code == 404


async def test_the_json_url_takes_json_once_while_its_upload_runs(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """go-tfe PUTs the state and the JSON state at once: the JSON URL still works right after
    the state was finalized (the lock still held), once, and only for JSON."""
    ws, writer, _ = await people(app, admin)
    lineage = new_lineage()
    raw = state_file(1, lineage)
    async with app.client(writer.token) as w:
        sv = await pending(w, ws, raw)
        json_url = sv["attributes"]["hosted-json-state-upload-url"]
        assert (await put(app, sv["attributes"]["hosted-state-upload-url"], raw)).status_code == 200
        json_state = b'{"format_version": "1.0", "values": {}}'
        assert (await put(app, json_url, json_state)).status_code == 200
        assert (await put(app, json_url, json_state)).status_code == 409
        got = await w.get(f"/api/v2/state-versions/{sv['id']}/json-download")
        assert got.status_code == 200 and got.content == json_state

        sv2 = await pending(w, ws, state_file(2, lineage), lock=False)
        not_json = await put(app, sv2["attributes"]["hosted-json-state-upload-url"], b"not json")
        assert not_json.status_code == 422, not_json.text
        assert not app.ctx.blobs.exists(sha256(b"not json"))


# ---- L2 -----------------------------------------------------------------------------------------


async def test_a_revoked_uploader_cannot_finish(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws, writer, _ = await people(app, admin)
    lineage = new_lineage()
    raw = state_file(1, lineage)
    async with app.client(writer.token) as w:
        sv = await pending(w, ws, raw)
    grants = document(await admin.get(f"/api/cairn/v1/organizations/{ws.org}/grants"), 200)
    (mine,) = [g["id"] for g in grants["data"] if g["user"] == writer.username]
    assert (await admin.delete(f"/api/cairn/v1/grants/{mine}")).status_code == 204

    refused = await put(app, sv["attributes"]["hosted-state-upload-url"], raw)
    assert refused.status_code in (403, 404), refused.text
    assert not app.ctx.blobs.exists(sha256(raw))
    current = await admin.get(f"/api/v2/workspaces/{ws.id}/current-state-version")
    assert current.status_code == 404  # nothing became current


async def test_an_uploader_who_lost_the_lock_cannot_finish(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws, writer, _ = await people(app, admin)
    raw = state_file(1, new_lineage())
    async with app.client(writer.token) as w:
        sv = await pending(w, ws, raw)
    forced = await admin.post(f"/api/v2/workspaces/{ws.id}/actions/force-unlock")
    assert forced.status_code == 200, forced.text
    refused = await put(app, sv["attributes"]["hosted-state-upload-url"], raw)
    assert refused.status_code == 409, refused.text
    assert "lock" in document(refused, 409)["errors"][0]["detail"]
    assert not app.ctx.blobs.exists(sha256(raw))


# ---- M4 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda raw: raw.replace(b'"serial": 1', b'"serial": 1 '), id="wrong-md5"),
        pytest.param(lambda raw: b"not a state at all", id="not-json"),
    ],
)
async def test_a_refused_put_uses_up_the_url_and_leaves_no_blob(
    app: InProcessCairn, admin: httpx.AsyncClient, bad: Any
) -> None:
    ws = await organization_and_workspace(admin)
    raw = state_file(1, new_lineage())
    sv = await pending(admin, ws, raw)
    url = sv["attributes"]["hosted-state-upload-url"]
    garbage = bad(raw)
    first = await put(app, url, garbage)
    assert first.status_code == 422, first.text
    assert not app.ctx.blobs.exists(sha256(garbage))

    second = await put(app, url, raw)
    assert second.status_code == 409, second.text
    assert "create a new state version" in document(second, 409)["errors"][0]["detail"]
    assert not app.ctx.blobs.exists(sha256(raw))
    shown = document(await admin.get(f"/api/v2/state-versions/{sv['id']}"), 200)["data"]
    assert shown["attributes"]["status"] == "pending"
    assert shown["attributes"]["hosted-state-upload-url"] is None  # used up


async def test_a_too_large_put_uses_up_the_url(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    raw = state_file(1, new_lineage())
    sv = await pending(admin, ws, raw)
    url = sv["attributes"]["hosted-state-upload-url"]
    too_large = str(app.settings.max_state_bytes + 1)
    first = await put(app, url, b"{}", **{"Content-Length": too_large})
    assert first.status_code == 413, first.text
    second = await put(app, url, raw)
    assert second.status_code == 409, second.text
