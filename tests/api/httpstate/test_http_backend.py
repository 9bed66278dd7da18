"""Terraform's ``http`` backend (issue 12): every rule of ``/api/cairn/v1/http-state/…``,
in-process, with requests shaped as Terraform 1.0.3's ``internal/backend/remote-state/http``
client sends them (Basic auth, ``LOCK``/``UNLOCK`` with the lock info JSON, ``POST ?ID=``
with ``Content-MD5``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app import (
    InProcessCairn,
    Person,
    Workspace,
    build,
    document,
    grant,
    make_user,
    organization_and_workspace,
)
from tests.support.statefile import new_lineage, null_resource, state_file

pytestmark = pytest.mark.anyio


def basic(token: str, username: str = "anyone") -> dict[str, str]:
    value = base64.b64encode(f"{username}:{token}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def lock_info(lock_id: str | None = None, who: str = "alice@laptop") -> dict[str, Any]:
    return {
        "ID": lock_id or str(uuid.uuid4()),
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": who,
        "Version": "1.0.3",
        "Created": "2026-01-01T12:00:00.123456Z",
        "Path": "",
    }


def md5_b64(raw: bytes) -> str:
    return base64.b64encode(hashlib.md5(raw).digest()).decode()


class Backend:
    """One Terraform process's view of one workspace through the http backend."""

    def __init__(self, app: InProcessCairn, ws: Workspace, token: str) -> None:
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.app), base_url=app.url, headers=basic(token)
        )
        self.url = f"/api/cairn/v1/http-state/{ws.org}/{ws.name}"
        self.lock_id: str | None = None

    async def get(self) -> httpx.Response:
        return await self.client.get(self.url)

    async def lock(self, method: str = "LOCK", path: str = "") -> httpx.Response:
        info = lock_info()
        response = await self.client.request(method, self.url + path, json=info)
        if response.status_code == 200:
            self.lock_id = info["ID"]
        return response

    async def unlock(self, lock_id: str | None = None, method: str = "UNLOCK") -> httpx.Response:
        info = lock_info(lock_id or self.lock_id)
        path = "" if method == "UNLOCK" else "/lock"
        return await self.client.request(method, self.url + path, json=info)

    async def post(self, raw: bytes, lock_id: str | None = None, **headers: str) -> httpx.Response:
        chosen = lock_id or self.lock_id
        params = {"ID": chosen} if chosen else {}
        sent = {"Content-Type": "application/json", "Content-MD5": md5_b64(raw), **headers}
        return await self.client.post(self.url, content=raw, params=params, headers=sent)

    async def aclose(self) -> None:
        await self.client.aclose()


@pytest.fixture
async def ws(admin: httpx.AsyncClient) -> Workspace:
    return await organization_and_workspace(admin)


@pytest.fixture
async def tf(app: InProcessCairn, ws: Workspace) -> AsyncIterator[Backend]:
    backend = Backend(app, ws, app.admin_token)
    yield backend
    await backend.aclose()


async def versions(admin: httpx.AsyncClient, ws: Workspace) -> list[dict[str, Any]]:
    doc = document(await admin.get(f"/api/v2/workspaces/{ws.id}/state-versions"), 200)
    data: list[dict[str, Any]] = doc["data"]
    return data


async def workspace(admin: httpx.AsyncClient, ws: Workspace) -> dict[str, Any]:
    doc = document(await admin.get(f"/api/v2/workspaces/{ws.id}"), 200)
    attributes: dict[str, Any] = doc["data"]["attributes"]
    return attributes


# ---- authentication ---------------------------------------------------------------------------


async def test_no_or_bad_credentials_are_401_with_a_basic_challenge(
    app: InProcessCairn, ws: Workspace
) -> None:
    url = f"/api/cairn/v1/http-state/{ws.org}/{ws.name}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url=app.url) as c:
        for headers in ({}, basic("not-a-token"), {"Authorization": "Basic !!!"}, basic("")):
            for method in ("GET", "POST", "LOCK", "UNLOCK"):
                response = await c.request(method, url, headers=headers, content=b"{}")
                assert response.status_code == 401, (method, headers, response.text)
                assert response.headers["www-authenticate"].startswith('Basic realm="cairn"')
                assert response.json()["errors"][0]["detail"]


async def test_token_as_basic_password_any_username_or_bearer(
    app: InProcessCairn, ws: Workspace
) -> None:
    url = f"/api/cairn/v1/http-state/{ws.org}/{ws.name}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url=app.url) as c:
        for headers in (
            basic(app.admin_token, "gitlab-ci-token"),
            basic(app.admin_token, ""),
            {"Authorization": f"Bearer {app.admin_token}"},
        ):
            response = await c.get(url, headers=headers)
            assert response.status_code == 204, response.text  # no state yet


# ---- the write cycle, and the TFE API seeing it -----------------------------------------------


async def test_lock_write_read_unlock_shows_in_the_tfe_api(
    admin: httpx.AsyncClient, ws: Workspace, tf: Backend
) -> None:
    assert (await tf.get()).status_code == 204
    assert (await tf.lock()).status_code == 200
    attributes = await workspace(admin, ws)
    assert attributes["locked"] is True

    lineage = new_lineage()
    raw = state_file(1, lineage, resources=[null_resource("a")], outputs={})
    written = await tf.post(raw)
    assert written.status_code == 200, written.text
    assert written.json()["serial"] == 1

    got = await tf.get()
    assert got.status_code == 200
    assert got.content == raw
    assert got.headers["content-md5"] == md5_b64(raw)

    raw2 = state_file(2, lineage, resources=[null_resource("a"), null_resource("b")])
    assert (await tf.post(raw2)).status_code == 200
    history = await versions(admin, ws)
    assert [v["attributes"]["serial"] for v in history] == [2, 1]

    assert (await tf.unlock()).status_code == 200
    assert (await workspace(admin, ws))["locked"] is False
    current = document(await admin.get(f"/api/v2/workspaces/{ws.id}/current-state-version"), 200)
    assert current["data"]["attributes"]["serial"] == 2


async def test_lock_and_unlock_on_the_lock_path_with_other_methods(
    admin: httpx.AsyncClient, ws: Workspace, tf: Backend
) -> None:
    for take, release in (("POST", "DELETE"), ("PUT", "UNLOCK"), ("LOCK", "DELETE")):
        assert (await tf.lock(take, "/lock")).status_code == 200
        assert (await workspace(admin, ws))["locked"] is True
        assert (await tf.unlock(method=release)).status_code == 200
        assert (await workspace(admin, ws))["locked"] is False


async def test_a_retried_lock_with_the_same_id_is_taken(tf: Backend) -> None:
    info = lock_info()
    assert (await tf.client.request("LOCK", tf.url, json=info)).status_code == 200
    assert (await tf.client.request("LOCK", tf.url, json=info)).status_code == 200
    again = await tf.client.request("LOCK", tf.url, json=lock_info())
    assert again.status_code == 423


# ---- the lock, both directions ----------------------------------------------------------------


async def test_a_held_lock_is_423_with_the_holders_lock_info(
    app: InProcessCairn, ws: Workspace, tf: Backend
) -> None:
    first = lock_info(who="alice@laptop")
    assert (await tf.client.request("LOCK", tf.url, json=first)).status_code == 200
    second = Backend(app, ws, app.admin_token)
    try:
        refused = await second.lock()
        assert refused.status_code == 423
        assert refused.json() == first  # what Terraform prints: who holds it, since when
        # A second process of the same user cannot write or release the first one's lock.
        raw = state_file(1, new_lineage())
        mismatch = await second.post(raw, lock_id=str(uuid.uuid4()))
        assert mismatch.status_code == 409
        assert first["ID"] in mismatch.json()["errors"][0]["detail"]
        no_id = await second.post(raw)
        assert no_id.status_code == 409
        wrong = await second.unlock(str(uuid.uuid4()))
        assert wrong.status_code == 409
    finally:
        await second.aclose()
    assert (await tf.get()).status_code == 204  # nothing stored


async def test_a_tfe_api_lock_refuses_the_backend(
    admin: httpx.AsyncClient, app: InProcessCairn, ws: Workspace
) -> None:
    lock = {"data": {"type": "", "attributes": {"reason": "maintenance"}}}
    document(await admin.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=lock), 200)
    writer = await make_user(admin, "writer")
    await grant(admin, ws, writer, "write")
    other = Backend(app, ws, writer.token)
    try:
        refused = await other.lock()
        assert refused.status_code == 423
        info = refused.json()
        assert set(info) >= {"ID", "Operation", "Who", "Created", "Info"}
        assert info["Who"] == "User 'admin'"
        assert "maintenance" in info["Info"]
        assert info["Created"] == "2026-01-01T12:00:00Z"
        written = await other.post(state_file(1, new_lineage()))
        assert written.status_code == 423
    finally:
        await other.aclose()
    assert await versions(admin, ws) == []


async def test_a_backend_lock_refuses_the_tfe_api_and_runs(
    admin: httpx.AsyncClient, ws: Workspace, tf: Backend
) -> None:
    assert (await tf.lock()).status_code == 200
    lock = {"data": {"type": "", "attributes": {}}}
    refused = await admin.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=lock)
    assert refused.status_code == 409
    # The TFE API's unlock by the same holder releases it; the backend's ID is then stale.
    document(await admin.post(f"/api/v2/workspaces/{ws.id}/actions/unlock", json=lock), 200)
    stale = await tf.post(state_file(1, new_lineage()))
    assert stale.status_code == 409
    assert "not locked" in stale.json()["errors"][0]["detail"]


# ---- force-unlock and RBAC --------------------------------------------------------------------


async def _person(admin: httpx.AsyncClient, ws: Workspace, role: str | None) -> Person:
    person = await make_user(admin, role or "stranger")
    if role is not None:
        await grant(admin, ws, person, role)
    return person


async def test_force_unlock_needs_the_right_to_force_unlock(
    admin: httpx.AsyncClient, app: InProcessCairn, ws: Workspace
) -> None:
    writer = await _person(admin, ws, "write")
    owner = await _person(admin, ws, "admin")
    holder = Backend(app, ws, writer.token)
    other = Backend(app, ws, (await _person(admin, ws, "write")).token)
    boss = Backend(app, ws, owner.token)
    try:
        assert (await holder.lock()).status_code == 200
        assert holder.lock_id is not None
        # Another writer may not, with or without the ID.
        refused = await other.unlock(holder.lock_id)
        assert refused.status_code == 409
        assert "force-unlock" in refused.json()["errors"][0]["detail"]
        # Terraform 1.0.3's force-unlock sends UNLOCK with no body.
        assert (await other.client.request("UNLOCK", other.url)).status_code == 409
        # A workspace admin may; a wrong ID is refused even then.
        assert (await boss.unlock(str(uuid.uuid4()))).status_code == 409
        assert (await boss.client.request("UNLOCK", boss.url)).status_code == 200
        assert (await workspace(admin, ws))["locked"] is False
        # The former holder's write is refused: its lock is gone.
        assert (await holder.post(state_file(1, new_lineage()))).status_code == 409
        # The holder's own force-unlock (no body) works too.
        assert (await holder.lock()).status_code == 200
        assert (await holder.client.request("UNLOCK", holder.url)).status_code == 200
    finally:
        for b in (holder, other, boss):
            await b.aclose()
    trail = document(await admin.get("/api/cairn/v1/audit-events?page[size]=100"), 200)
    actions = [e["attributes"]["action"] for e in trail["data"]]
    assert "workspace.force_unlock" in actions


async def test_rbac_reader_writer_stranger(
    admin: httpx.AsyncClient, app: InProcessCairn, ws: Workspace, tf: Backend
) -> None:
    assert (await tf.lock()).status_code == 200
    raw = state_file(1, new_lineage())
    assert (await tf.post(raw)).status_code == 200
    assert (await tf.unlock()).status_code == 200
    reader = Backend(app, ws, (await _person(admin, ws, "read")).token)
    planner = Backend(app, ws, (await _person(admin, ws, "plan")).token)
    stranger = Backend(app, ws, (await _person(admin, ws, None)).token)
    try:
        assert (await reader.get()).content == raw
        assert (await reader.lock()).status_code == 403
        assert (await reader.post(state_file(2, new_lineage()))).status_code == 403
        assert (await planner.get()).status_code == 200
        assert (await planner.lock()).status_code == 403
        for method in ("GET", "LOCK", "POST"):
            response = await stranger.client.request(method, stranger.url, json=lock_info())
            assert response.status_code == 404, method
    finally:
        for b in (reader, planner, stranger):
            await b.aclose()
    assert len(await versions(admin, ws)) == 1


async def test_an_unknown_workspace_is_404_and_not_created(
    admin: httpx.AsyncClient, app: InProcessCairn, ws: Workspace
) -> None:
    ghost = Workspace(ws.org, "no-such-workspace", "")
    backend = Backend(app, ghost, app.admin_token)
    try:
        for response in (await backend.get(), await backend.lock()):
            assert response.status_code == 404
            assert "no-such-workspace" in response.json()["errors"][0]["detail"]
        assert (await backend.post(state_file(1, new_lineage()))).status_code == 404
    finally:
        await backend.aclose()
    missing = await admin.get(f"/api/v2/organizations/{ws.org}/workspaces/no-such-workspace")
    assert missing.status_code == 404


# ---- the state rules --------------------------------------------------------------------------


async def test_serial_lineage_and_idempotent_retry(
    admin: httpx.AsyncClient, ws: Workspace, tf: Backend
) -> None:
    assert (await tf.lock()).status_code == 200
    lineage = new_lineage()
    raw3 = state_file(3, lineage)
    assert (await tf.post(raw3)).status_code == 200
    assert (await tf.post(raw3)).status_code == 200  # a retried POST: the same version
    backwards = await tf.post(state_file(2, lineage))
    assert backwards.status_code == 409
    assert "never go backwards" in backwards.json()["errors"][0]["detail"]
    same_serial = await tf.post(
        state_file(3, lineage, outputs={"x": {"value": 1, "type": "number"}})
    )
    assert same_serial.status_code == 409
    other_lineage = await tf.post(state_file(4, new_lineage()))
    assert other_lineage.status_code == 409
    assert "lineage" in other_lineage.json()["errors"][0]["detail"]
    assert [v["attributes"]["serial"] for v in await versions(admin, ws)] == [3]
    assert (await tf.get()).content == raw3


async def test_bad_bodies_store_nothing(
    admin: httpx.AsyncClient, app: InProcessCairn, ws: Workspace, tf: Backend
) -> None:
    before = set(app.ctx.blobs.iter_stored())
    assert (await tf.lock()).status_code == 200
    lineage = new_lineage()
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (b"this is not a state", {}, 422),
        (b'{"version": 4, "serial": 1', {}, 422),  # cut short
        (json.dumps({"version": 4, "serial": 1}).encode(), {}, 422),  # no lineage
        (state_file(1, lineage), {"Content-MD5": md5_b64(b"other")}, 400),
        (state_file(1, lineage), {"Content-MD5": "not base64!"}, 400),
    ]
    for raw, headers, status in cases:
        response = await tf.post(raw, **headers)
        assert response.status_code == status, (raw[:40], response.text)
        assert response.json()["errors"][0]["detail"]
    bad_id = await tf.client.post(tf.url, params={"ID": "x" * 65}, content=state_file(1, lineage))
    assert bad_id.status_code == 400
    for body in (b"[1]", b"not json", json.dumps({"Who": "x"}).encode()):
        other = await tf.client.request("LOCK", tf.url + "/lock", content=body)
        assert other.status_code == 400, body
    assert await versions(admin, ws) == []
    assert (await tf.get()).status_code == 204
    assert set(app.ctx.blobs.iter_stored()) == before  # no blob committed


async def test_a_state_over_the_limit_is_413(tmp_path: Path, admin_token: str) -> None:
    small = build(tmp_path / "data", admin_token, max_state_bytes=4096)
    try:
        async with small.client(small.admin_token) as admin:
            ws = await organization_and_workspace(admin)
            tf = Backend(small, ws, small.admin_token)
            try:
                assert (await tf.lock()).status_code == 200
                big = state_file(1, new_lineage(), pad_to=8192)
                response = await tf.post(big)
                assert response.status_code == 413
                assert (await tf.get()).status_code == 204
            finally:
                await tf.aclose()
    finally:
        small.close()


async def test_a_write_without_locking_locks_for_the_write_only(
    admin: httpx.AsyncClient, ws: Workspace, tf: Backend
) -> None:
    """A backend configured without ``lock_address`` never locks: cairn locks for the write
    and releases it after, so the workspace is unlocked again."""
    raw = state_file(1, new_lineage())
    assert (await tf.post(raw)).status_code == 200
    assert (await workspace(admin, ws))["locked"] is False
    assert (await tf.get()).content == raw
    trail = document(await admin.get("/api/cairn/v1/audit-events?page[size]=100"), 200)
    actions = [e["attributes"]["action"] for e in trail["data"]]
    assert "workspace.lock" in actions and "workspace.unlock" in actions


async def test_delete_on_the_state_address_is_not_allowed(ws: Workspace, tf: Backend) -> None:
    response = await tf.client.delete(tf.url)
    assert response.status_code == 405


async def test_errors_are_json(tf: Backend) -> None:
    response = await tf.client.request("LOCK", tf.url, content=b"{")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/vnd.api+json")


async def test_of_concurrent_locks_exactly_one_wins(any_app: InProcessCairn) -> None:
    """On SQLite and PostgreSQL: the lock is one conditional UPDATE."""
    async with any_app.client(any_app.admin_token) as admin:
        ws = await organization_and_workspace(admin)
        backends = [Backend(any_app, ws, any_app.admin_token) for _ in range(8)]
        try:
            answers = await asyncio.gather(*(b.lock() for b in backends))
        finally:
            for b in backends:
                await b.aclose()
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] + [423] * 7
        winner = next(b for b in backends if b.lock_id is not None)
        assert all(a.json()["ID"] == winner.lock_id for a in answers)
        assert (await workspace(admin, ws))["locked"] is True
