"""M4 and L7 (security findings 2026-11-30), through the API on both blob stores.

M4: deleting a workspace or an organization used to leave its state bytes (secrets included)
in the blob store forever, and a rejected hosted upload left its body there too. Now the blob
collector (housekeeping) deletes every blob no state version references once it is older than
the grace period: after a sweep the deleted workspace's secret marker is in no blob file and no
chunk row, while a blob another workspace still references survives and downloads.

L7: a full disk during an upload answers 507 with a JSON:API error saying nothing was stored,
and nothing changed (the version stays pending, no temporary is left)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cairn.blobs.model import BlobChunk
from tests.support.app import (
    CT,
    InProcessCairn,
    Workspace,
    build,
    create_organization,
    create_workspace,
    document,
)
from tests.support.statefile import new_lineage, state_file, version_body

pytestmark = pytest.mark.anyio

LOCK = {"data": {"type": "", "attributes": {"reason": "held by a test"}}}


@pytest.fixture(params=["filesystem", "database"])
def cairn(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[InProcessCairn]:
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    instance = build(tmp_path / "data", admin_token, blob_store=request.param)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
async def api(cairn: InProcessCairn, anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    async with cairn.client(cairn.admin_token) as client:
        yield client


def stored_bytes(cairn: InProcessCairn) -> list[bytes]:
    """Every byte the blob store keeps: blob files (and temporaries) or chunk rows."""
    if cairn.settings.blob_store == "database":
        with cairn.ctx.db.unit_of_work() as s:
            return [bytes(d) for d in s.scalars(select(BlobChunk.data))]
    root = cairn.settings.data_dir / "blobs"
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


def holds(cairn: InProcessCairn, marker: str) -> bool:
    return any(marker.encode() in data for data in stored_bytes(cairn))


def housekeeping(cairn: InProcessCairn) -> None:
    """One turn of the blob-reclaiming background job."""
    cairn.ctx.collector.sweep()


def secret_state(serial: int, lineage: str, marker: str) -> bytes:
    outputs = {"k": {"value": marker, "type": "string", "sensitive": True}}
    return state_file(serial, lineage, outputs=outputs)


async def store_inline(api: httpx.AsyncClient, ws: Workspace, raw: bytes) -> dict[str, Any]:
    response = await api.post(
        f"/api/v2/workspaces/{ws.id}/state-versions", json=version_body(raw), headers=CT
    )
    data: dict[str, Any] = document(response, 201)["data"]
    return data


async def lock(api: httpx.AsyncClient, ws: Workspace) -> None:
    document(await api.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=LOCK), 200)


async def unlock(api: httpx.AsyncClient, ws: Workspace) -> None:
    document(await api.post(f"/api/v2/workspaces/{ws.id}/actions/unlock"), 200)


async def download_current(api: httpx.AsyncClient, ws: Workspace) -> bytes:
    current = document(await api.get(f"/api/v2/workspaces/{ws.id}/current-state-version"), 200)
    url = current["data"]["attributes"]["hosted-state-download-url"]
    response = await api.get(url)
    assert response.status_code == 200, response.text
    return response.content


async def test_deleted_workspaces_and_organizations_lose_their_state_bytes(
    cairn: InProcessCairn, api: httpx.AsyncClient
) -> None:
    org = await create_organization(api)
    doomed = await create_workspace(api, org)
    keeper = await create_workspace(api, await create_organization(api))
    doomed_org = await create_organization(api)
    doomed_org_ws = await create_workspace(api, doomed_org)

    # The same bytes in two workspaces: one blob, referenced twice.
    lineage = new_lineage()
    shared = secret_state(1, lineage, "SHARED-" + os.urandom(8).hex())
    workspace_secret = "SECRET-WS-" + os.urandom(8).hex()
    org_secret = "SECRET-ORG-" + os.urandom(8).hex()
    garbage = "GARBAGE-" + os.urandom(8).hex()
    for ws in (doomed, keeper, doomed_org_ws):
        await lock(api, ws)
    await store_inline(api, doomed, shared)
    await store_inline(api, doomed, secret_state(2, lineage, workspace_secret))
    await store_inline(api, keeper, shared)
    await store_inline(api, doomed_org_ws, secret_state(1, new_lineage(), org_secret))

    # A rejected hosted upload (wrong MD5) leaves no body behind (discarded at once, or at the
    # latest by the sweep).
    real = state_file(2, lineage)
    pending = await api.post(
        f"/api/v2/workspaces/{keeper.id}/state-versions",
        json=version_body(real, inline=False),
        headers=CT,
    )
    url = document(pending, 201)["data"]["attributes"]["hosted-state-upload-url"]
    async with cairn.client() as anonymous:
        refused = await anonymous.put(url, content=(garbage * 1000).encode())
    assert refused.status_code == 422, refused.text

    for ws in (doomed, keeper, doomed_org_ws):
        await unlock(api, ws)
    assert (await api.delete(f"/api/v2/workspaces/{doomed.id}")).status_code == 204
    assert (await api.delete(f"/api/v2/organizations/{doomed_org}")).status_code == 204
    assert holds(cairn, workspace_secret) and holds(cairn, org_secret)

    housekeeping(cairn)  # within the grace period: an upload's row may be about to commit
    assert holds(cairn, workspace_secret) and holds(cairn, org_secret)

    cairn.advance(cairn.settings.blob_grace + timedelta(minutes=1))
    housekeeping(cairn)
    assert not holds(cairn, workspace_secret), "the deleted workspace's state is still stored"
    assert not holds(cairn, org_secret), "the deleted organization's state is still stored"
    assert not holds(cairn, garbage), "a rejected upload's body is still stored"
    # The blob the other workspace references survives, and downloads.
    assert await download_current(api, keeper) == shared


async def test_a_full_disk_during_an_upload_is_507_and_changes_nothing(
    cairn: InProcessCairn, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = await create_workspace(api, await create_organization(api))
    await lock(api, ws)
    lineage = new_lineage()
    first = state_file(1, lineage)
    await store_inline(api, ws, first)
    big = state_file(2, lineage, pad_to=3 * 1024 * 1024)
    before = stored_bytes(cairn)

    with disk_full(cairn, monkeypatch):
        inline = await api.post(
            f"/api/v2/workspaces/{ws.id}/state-versions", json=version_body(big), headers=CT
        )
        pending = document(
            await api.post(
                f"/api/v2/workspaces/{ws.id}/state-versions",
                json=version_body(big, inline=False),
                headers=CT,
            ),
            201,
        )["data"]
        async with cairn.client() as anonymous:
            hosted = await anonymous.put(
                pending["attributes"]["hosted-state-upload-url"], content=big
            )
    for response in (inline, hosted):
        error = document(response, 507)["errors"][0]
        assert error["status"] == "507"
        assert "disk is full" in error["detail"] and "nothing was stored" in error["detail"]
    assert stored_bytes(cairn) == before  # no blob, no temporary
    shown = document(await api.get(f"/api/v2/state-versions/{pending['id']}"), 200)
    assert shown["data"]["attributes"]["status"] == "pending"
    assert await download_current(api, ws) == first
    # Space is back: the same state stores fine.
    await store_inline(api, ws, big)
    assert await download_current(api, ws) == big


async def test_a_full_database_while_the_row_commits_is_507(
    cairn: InProcessCairn, api: httpx.AsyncClient
) -> None:
    """The blob is stored but the database is full when the version's row commits (L7's
    observed 500): 507, no version; the orphaned blob goes with the next sweep past grace."""
    ws = await create_workspace(api, await create_organization(api))
    await lock(api, ws)
    marker = "ORPHAN-" + os.urandom(8).hex()
    # A large output value: its row needs many new pages of the database.
    raw = secret_state(1, new_lineage(), marker + "x" * 400_000)
    with sqlite_full(cairn, spare_pages=0):
        response = await api.post(
            f"/api/v2/workspaces/{ws.id}/state-versions", json=version_body(raw), headers=CT
        )
    error = document(response, 507)["errors"][0]
    assert "disk is full" in error["detail"]
    listed = document(await api.get(f"/api/v2/workspaces/{ws.id}/state-versions"), 200)
    assert listed["data"] == []
    cairn.advance(cairn.settings.blob_grace + timedelta(minutes=1))
    housekeeping(cairn)
    assert not holds(cairn, marker)


@contextlib.contextmanager
def sqlite_full(cairn: InProcessCairn, spare_pages: int) -> Iterator[None]:
    """SQLite's size limit a few pages above the database's size: past it every write fails
    with SQLITE_FULL ("database or disk is full"), as on a full disk."""
    from sqlalchemy import event, text

    engine = cairn.ctx.db.engine
    with cairn.ctx.db.unit_of_work() as s:
        pages = int(s.execute(text("PRAGMA page_count")).scalar_one())

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + spare_pages}")

    event.listen(engine, "connect", on_connect)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "connect", on_connect)
        engine.dispose()


@contextlib.contextmanager
def disk_full(cairn: InProcessCairn, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the store's disk full: SQLite's size limit for the database store (SQLITE_FULL,
    as on a full disk), /dev/full under each blob file for the filesystem store (the kernel
    answers every write with ENOSPC)."""
    if cairn.settings.blob_store == "database":
        with sqlite_full(cairn, spare_pages=64):
            yield
        return
    real_fdopen = os.fdopen

    def full_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "fdopen", full_fdopen)
        yield
