"""H1 (security findings 2026-11-30): nested JSON in a state must neither exhaust memory nor
poison the workspace. A state (or JSON state) nesting deeper than `inspect.MAX_DEPTH` is refused
with a 422 and never committed or made current, inline or hosted, even when the nesting starts
after the header (past ijson's first 64 KiB buffer, where the header check used to stop); a
version that was committed before whole states were checked and cannot be processed is marked
by housekeeping, which moves on; request bodies have a bounded depth too.

The depths used here are small enough for the code before the fix to survive them (it
committed such states: that is what these tests catch) yet above the bound."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cairn.state.inspect import MAX_DEPTH
from cairn.state.model import StateVersion
from cairn.workspaces.model import Workspace as WorkspaceRow
from tests.support.app import CT, InProcessCairn, Workspace, document, organization_and_workspace
from tests.support.statefile import (
    md5_hex,
    new_lineage,
    null_resource,
    state_file,
    version_body,
)

pytestmark = pytest.mark.anyio

DEEP = MAX_DEPTH + 1000


def bomb(lineage: str, depth: int = DEEP) -> bytes:
    """The finding's state: a valid header, one output padding the first 64 KiB, then
    `resources` nested `depth` levels deep."""
    head = (
        '{"version":4,"terraform_version":"1.0.3","serial":1,"lineage":"' + lineage + '",'
        '"outputs":{"pad":{"type":"string","value":"'
    )
    tail = '"}},"resources":'
    pad = "x" * (65536 - len(head) - len(tail) - 4)
    return (head + pad + tail).encode() + b"[" * depth + b"]" * depth + b"}"


def body_for(raw: bytes, lineage: str, *, inline: bool = True) -> dict[str, Any]:
    """The state-version document for `raw` (serial 1), which need not be loadable JSON."""
    attributes: dict[str, Any] = {"serial": 1, "lineage": lineage, "md5": md5_hex(raw)}
    if inline:
        attributes["state"] = base64.b64encode(raw).decode()
    return {"data": {"type": "state-versions", "attributes": attributes}}


def nested_json(depth: int) -> bytes:
    return b'{"format_version":"1.0","values":' + b"[" * depth + b"]" * depth + b"}"


async def locked_workspace(admin: httpx.AsyncClient) -> Workspace:
    ws = await organization_and_workspace(admin)
    lock = {"data": {"type": "", "attributes": {"reason": "held by a test"}}}
    document(await admin.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=lock), 200)
    return ws


async def create_version(
    admin: httpx.AsyncClient, ws: Workspace, body: dict[str, Any]
) -> httpx.Response:
    return await admin.post(f"/api/v2/workspaces/{ws.id}/state-versions", json=body, headers=CT)


async def assert_nothing_committed(admin: httpx.AsyncClient, ws: Workspace) -> None:
    current = await admin.get(f"/api/v2/workspaces/{ws.id}/current-state-version")
    assert current.status_code == 404, current.text
    listed = document(await admin.get(f"/api/v2/workspaces/{ws.id}/state-versions"), 200)
    assert listed["data"] == []


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    (error,) = document(response, status)["errors"]
    assert isinstance(error, dict)
    return error


# ---- inline ---------------------------------------------------------------------------------


async def test_an_inline_state_nested_too_deeply_is_refused(admin: httpx.AsyncClient) -> None:
    ws = await locked_workspace(admin)
    lineage = new_lineage()
    raw = bomb(lineage)
    body = body_for(raw, lineage)
    error = error_of(await create_version(admin, ws, body), 422)
    assert error["source"] == {"pointer": "/data/attributes/state"}
    assert f"more than {MAX_DEPTH} levels deep" in error["detail"]
    await assert_nothing_committed(admin, ws)


async def test_an_inline_state_that_is_not_json_after_the_header_is_refused(
    admin: httpx.AsyncClient,
) -> None:
    """Nothing but the header used to be read before commit: a state broken after it became
    current and could never be counted."""
    ws = await locked_workspace(admin)
    lineage = new_lineage()
    raw = state_file(1, lineage)
    broken = raw.split(b'"resources"')[0] + b'"resources": [{"mode": ' + b"\x00garbage"
    body = body_for(broken, lineage)
    error = error_of(await create_version(admin, ws, body), 422)
    assert error["source"] == {"pointer": "/data/attributes/state"}
    assert "not valid JSON" in error["detail"]
    await assert_nothing_committed(admin, ws)


async def test_an_inline_json_state_nested_too_deeply_is_refused(
    admin: httpx.AsyncClient,
) -> None:
    ws = await locked_workspace(admin)
    body = version_body(state_file(1, new_lineage()))
    body["data"]["attributes"]["json-state"] = base64.b64encode(nested_json(DEEP)).decode()
    error = error_of(await create_version(admin, ws, body), 422)
    assert error["source"] == {"pointer": "/data/attributes/json-state"}
    assert f"more than {MAX_DEPTH} levels deep" in error["detail"]
    await assert_nothing_committed(admin, ws)


async def test_a_state_at_the_bound_is_accepted_and_counted(admin: httpx.AsyncClient) -> None:
    ws = await locked_workspace(admin)
    lineage = new_lineage()
    # The top-level object and the `resources` array are two of the levels.
    raw = bomb(lineage, depth=MAX_DEPTH - 1)
    body = body_for(raw, lineage)
    body["data"]["attributes"]["json-state"] = base64.b64encode(nested_json(MAX_DEPTH - 1)).decode()
    created = document(await create_version(admin, ws, body), 201)["data"]
    assert created["attributes"]["resources-processed"] is True
    assert created["attributes"]["hosted-json-state-download-url"]


# ---- hosted (two-step) upload ---------------------------------------------------------------


async def test_a_hosted_upload_nested_too_deeply_is_refused(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await locked_workspace(admin)
    lineage = new_lineage()
    raw = bomb(lineage)
    body = body_for(raw, lineage, inline=False)
    pending = document(await create_version(admin, ws, body), 201)
    url = pending["data"]["attributes"]["hosted-state-upload-url"]
    async with app.client() as anonymous:
        error = error_of(await anonymous.put(url, content=raw), 422)
    assert f"more than {MAX_DEPTH} levels deep" in error["detail"]
    shown = document(await admin.get(f"/api/v2/state-versions/{pending['data']['id']}"), 200)
    assert shown["data"]["attributes"]["status"] == "pending"
    await assert_nothing_committed(admin, ws)


async def test_a_hosted_json_state_nested_too_deeply_is_refused(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await locked_workspace(admin)
    raw = state_file(1, new_lineage())
    pending = document(await create_version(admin, ws, version_body(raw, inline=False)), 201)
    attributes = pending["data"]["attributes"]
    async with app.client() as anonymous:
        refused = await anonymous.put(
            attributes["hosted-json-state-upload-url"], content=nested_json(DEEP)
        )
        error = error_of(refused, 422)
        assert f"more than {MAX_DEPTH} levels deep" in error["detail"]
        stored = await anonymous.put(attributes["hosted-state-upload-url"], content=raw)
        assert stored.status_code == 200, stored.text
    shown = document(await admin.get(f"/api/v2/state-versions/{pending['data']['id']}"), 200)
    assert shown["data"]["attributes"]["status"] == "finalized"
    assert shown["data"]["attributes"]["hosted-json-state-download-url"] is None


# ---- versions committed before whole states were checked ------------------------------------


async def plant(app: InProcessCairn, admin: httpx.AsyncClient, ws: Workspace, raw: bytes) -> str:
    """Commit a good version, then make it what the code before the fix could commit: its
    bytes `raw`, its resources not yet counted."""
    good = state_file(1, new_lineage())
    sv_id: str = document(await create_version(admin, ws, version_body(good)), 201)["data"]["id"]
    writer = app.ctx.blobs.writer(max_size=len(raw) + 1)
    writer.write(raw)
    ref = writer.commit()
    with app.ctx.db.unit_of_work(write=True) as s:
        s.execute(
            update(StateVersion)
            .where(StateVersion.id == sv_id)
            .values(sha256=ref.sha256, size=ref.size, md5=md5_hex(raw), resource_count=-1)
        )
        s.execute(update(WorkspaceRow).where(WorkspaceRow.id == ws.id).values(resource_count=0))
        s.commit()
    return sv_id


async def test_housekeeping_marks_an_unprocessable_version_and_moves_on(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    poisoned_ws, healthy_ws = await locked_workspace(admin), await locked_workspace(admin)
    poisoned = await plant(app, admin, poisoned_ws, bomb(new_lineage()))
    healthy = await plant(
        app, admin, healthy_ws, state_file(1, new_lineage(), resources=[null_resource("a", 2)])
    )

    assert app.ctx.states.process_pending() == 2  # at start, and every housekeeping pass
    shown = document(await admin.get(f"/api/v2/state-versions/{poisoned}"), 200)
    assert shown["data"]["attributes"]["resources-processed"] is False
    with app.ctx.db.unit_of_work() as s:
        row = s.get(StateVersion, poisoned)
        assert row is not None and row.resource_count == -2  # marked: never retried
    counted = document(await admin.get(f"/api/v2/state-versions/{healthy}"), 200)
    assert counted["data"]["attributes"]["resources-processed"] is True
    healthy_doc = document(await admin.get(f"/api/v2/workspaces/{healthy_ws.id}"), 200)
    assert healthy_doc["data"]["attributes"]["resource-count"] == 2
    assert app.ctx.states.process_pending() == 0  # the next start does not try again

    # Nothing that reads it fails: safe-delete counts the current version first (it used to
    # run the bomb in the request), and a rollback to it is refused.
    lineage = new_lineage()
    newer = version_body(state_file(2, lineage), lineage=lineage, force=True)
    document(await create_version(admin, poisoned_ws, newer), 201)
    rollback = {
        "data": {
            "type": "state-versions",
            "relationships": {
                "rollback-state-version": {"data": {"type": "state-versions", "id": poisoned}}
            },
        }
    }
    refused = await admin.patch(
        f"/api/v2/workspaces/{poisoned_ws.id}/state-versions", json=rollback, headers=CT
    )
    assert error_of(refused, 422)["source"] == {
        "pointer": "/data/relationships/rollback-state-version"
    }


async def test_safe_delete_of_a_workspace_whose_state_cannot_be_processed(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await locked_workspace(admin)
    await plant(app, admin, ws, bomb(new_lineage()))
    document(await admin.post(f"/api/v2/workspaces/{ws.id}/actions/unlock"), 200)
    deleted = await admin.post(f"/api/v2/workspaces/{ws.id}/actions/safe-delete", headers=CT)
    assert deleted.status_code in (204, 409), deleted.text


# ---- request bodies -------------------------------------------------------------------------


async def test_a_request_body_nested_too_deeply_is_a_bad_request(
    admin: httpx.AsyncClient,
) -> None:
    value: Any = "deep"
    for _ in range(80):
        value = [value]
    body = {"data": {"type": "organizations", "attributes": {"name": "deep", "x": value}}}
    response = await admin.post("/api/v2/organizations", json=body, headers=CT)
    assert "levels deep" in error_of(response, 400)["detail"]
    assert (await admin.get("/api/v2/organizations/deep")).status_code == 404
