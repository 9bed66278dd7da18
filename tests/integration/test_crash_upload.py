"""A crash (SIGKILL) during a state upload never damages the current state.

DESIGN.md: "A blob is written and verified before the row that points at it commits, so a
crash never leaves a current state version without its bytes." Each test locks a workspace,
stores version 1, starts uploading a large version 2, kills the server with SIGKILL (by pid)
while the bytes are on their way, starts it again on the same data dir and database, and
checks that version 1 is still current and byte-for-byte intact, that the lock survived, and
that a new upload works. Run on SQLite with filesystem blobs and on PostgreSQL with
`--blob-store database` (CAIRN_BLOB_STORE=database).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import start_server
from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.statefile import (
    md5_hex,
    new_lineage,
    null_resource,
    post_version,
    state_file,
    upload_inline,
    version_body,
)

LARGE = 50 * 1024 * 1024
CHUNK = 1024 * 1024
# The upload pauses after this many bytes until the server has been killed.
KILL_AFTER = 12 * CHUNK


@pytest.fixture(scope="module")
def crash_server(
    request: pytest.FixtureRequest,
    backend: str,
    admin_token: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CairnServer]:
    """One plain-HTTP server per backend for this module; tests kill and restart it."""
    env = {"CAIRN_BLOB_STORE": "database"} if backend == "postgres" else {}
    data_dir = tmp_path_factory.mktemp(f"crash-{backend}")
    srv = start_server(request, data_dir, backend, admin_token, plain_http=True, env=env)
    expected_store = "database" if backend == "postgres" else "filesystem"
    assert f"blobs:     {expected_store}" in srv.output(), srv.output()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def srv(crash_server: CairnServer) -> CairnServer:
    """The module's server, running (a previous test may have left it killed)."""
    if not crash_server.running:
        crash_server.start()
    return crash_server


@dataclass
class Seeded:
    """A locked workspace whose current state is version 1."""

    workspace_id: str
    admin_id: str
    lineage: str
    raw1: bytes
    v1: dict[str, Any]


def seed(api: httpx.Client) -> Seeded:
    admin_id = tfe.document(api.get("/api/v2/account/details"), 200)["data"]["id"]
    org = tfe.create_organization(api, tfe.unique_name("crash"))
    workspace_id = tfe.create_workspace(api, org, "precious")
    tfe.workspace_action(api, workspace_id, "lock")
    lineage = new_lineage()
    raw1 = state_file(
        1,
        lineage,
        outputs={"greeting": {"value": "hello", "type": "string"}},
        resources=[null_resource("kept", 2)],
    )
    v1 = upload_inline(api, workspace_id, raw1)
    return Seeded(workspace_id, admin_id, lineage, raw1, v1)


def large_version(seeded: Seeded, serial: int = 2) -> bytes:
    return state_file(serial, seeded.lineage, resources=[null_resource("big")], pad_to=LARGE)


class PausingBody:
    """A request body streamed in CHUNK pieces, slowly. With `pause_after`, it stops after
    that many bytes until `resume` is set, so the test can kill the server while the upload
    is half done. Used as a context manager, it always resumes on exit (never hangs)."""

    def __init__(self, data: bytes, pause_after: int | None = None) -> None:
        self._pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
        self._pause_after = pause_after
        self.length = len(data)
        self.paused = threading.Event()
        self.resume = threading.Event()

    def __enter__(self) -> PausingBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.resume.set()

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for piece in self._pieces:
            due = self._pause_after is not None and sent >= self._pause_after
            if due and not self.paused.is_set():
                self.paused.set()
                self.resume.wait(timeout=60)
            yield piece
            sent += len(piece)
            time.sleep(0.005)  # a slow client


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting until {what}")


def partial_blob_written(srv: CairnServer) -> bool:
    """The server has started storing the upload: a temporary blob exists with some bytes."""
    if srv.database_url is None:  # filesystem store: <data-dir>/blobs/tmp/upload-*
        tmp = srv.data_dir / "blobs" / "tmp"
        return any(p.stat().st_size > 0 for p in tmp.glob("upload-*"))
    with psycopg.connect(srv.database_url) as conn:  # database store: chunks under tmp-<hex>
        row = conn.execute("SELECT count(*) FROM blob_chunks WHERE sha256 LIKE 'tmp-%'").fetchone()
    return bool(row and row[0] > 0)


def crash(srv: CairnServer, body: PausingBody, request: Future[httpx.Response]) -> None:
    """SIGKILL the server (by pid), let the client carry on, and check it saw a dead peer."""
    assert srv.running
    srv.kill9()
    body.resume.set()
    with pytest.raises(httpx.TransportError):
        response = request.result(timeout=60)
        pytest.fail(f"the upload got an answer from a killed server: {response.status_code}")


def assert_version1_intact(srv: CairnServer, token: str, seeded: Seeded) -> None:
    """After a restart: version 1 is current, its bytes are exact, the lock is still held."""
    with srv.client(token) as api:
        current = tfe.current_state_version(api, seeded.workspace_id)
        assert current["id"] == seeded.v1["id"]
        assert current["attributes"]["serial"] == 1
        assert current["attributes"]["status"] == "finalized"
        assert current["attributes"]["md5"] == md5_hex(seeded.raw1)
        downloaded = tfe.download_state(api, current)
        assert downloaded == seeded.raw1
        assert md5_hex(downloaded) == current["attributes"]["md5"]

        listing = tfe.document(
            api.get(f"/api/v2/workspaces/{seeded.workspace_id}/state-versions"), 200
        )
        assert [v["id"] for v in listing["data"]] == [seeded.v1["id"]]
        assert listing["meta"]["pagination"]["total-count"] == 1

        ws = tfe.document(api.get(f"/api/v2/workspaces/{seeded.workspace_id}"), 200)["data"]
        assert ws["attributes"]["locked"] is True, "a lock must survive a restart"
        assert ws["relationships"]["locked-by"]["data"] == {"id": seeded.admin_id, "type": "users"}
        assert ws["relationships"]["current-state-version"]["data"]["id"] == seeded.v1["id"]


def hosted_upload(api: httpx.Client, workspace_id: str, raw: bytes) -> dict[str, Any]:
    """Step 1 of the two-step upload: a pending version with its upload URL."""
    body = version_body(raw, inline=False)
    data: dict[str, Any] = post_version(api, workspace_id, body).json()["data"]
    assert data["attributes"]["status"] == "pending", data
    assert data["attributes"]["hosted-state-upload-url"], data
    return data


def put_bytes(url: str, content: bytes | PausingBody) -> httpx.Response:
    """PUT to an upload URL the way go-tfe ≥ 1.28 does: no Authorization header."""
    headers = {"Content-Type": "application/octet-stream", "Accept": "application/json, */*"}
    if isinstance(content, PausingBody):
        headers["Content-Length"] = str(content.length)
    with httpx.Client(timeout=60.0) as http:
        return http.put(url, content=content, headers=headers)


def post_inline(
    srv: CairnServer, token: str, workspace_id: str, body: PausingBody
) -> httpx.Response:
    """POST an inline state version whose JSON:API document is streamed from `body`."""
    with srv.client(token) as api:
        return api.post(
            f"/api/v2/workspaces/{workspace_id}/state-versions",
            content=body,
            headers={"Content-Type": tfe.JSONAPI, "Content-Length": str(body.length)},
        )


def inline_document(raw: bytes) -> bytes:
    """The JSON:API document of an inline upload of `raw` (base64 inside), as bytes."""
    return json.dumps(version_body(raw)).encode()


def small_version_2(seeded: Seeded) -> bytes:
    return state_file(2, seeded.lineage, resources=[null_resource("after-crash")])


def test_kill_during_hosted_upload_keeps_previous_version(
    srv: CairnServer, admin_token: str
) -> None:
    with srv.client(admin_token) as api:
        seeded = seed(api)
        raw2 = large_version(seeded)
        pending = hosted_upload(api, seeded.workspace_id, raw2)
    upload_url = pending["attributes"]["hosted-state-upload-url"]

    with ThreadPoolExecutor(max_workers=1) as pool, PausingBody(raw2, KILL_AFTER) as body:
        request = pool.submit(put_bytes, upload_url, body)
        assert body.paused.wait(timeout=30), "the upload never got going"
        wait_for(lambda: partial_blob_written(srv), "part of the upload is in the blob store")
        crash(srv, body, request)

    srv.start()
    assert_version1_intact(srv, admin_token, seeded)

    # A new two-step upload works after the crash (a small version 2 keeps the test quick).
    raw2_small = small_version_2(seeded)
    with srv.client(admin_token) as api:
        retry = hosted_upload(api, seeded.workspace_id, raw2_small)
        tfe.expect(put_bytes(retry["attributes"]["hosted-state-upload-url"], raw2_small), 200)
        current = tfe.current_state_version(api, seeded.workspace_id)
        assert current["id"] == retry["id"]
        assert current["attributes"]["serial"] == 2
        assert current["attributes"]["md5"] == md5_hex(raw2_small)
        assert tfe.download_state(api, current) == raw2_small

        # The crashed upload's URL, completed now, cannot replace serial 2 by another serial 2.
        stale = put_bytes(upload_url, raw2)
        assert stale.status_code == 409, stale.text
        assert tfe.current_state_version(api, seeded.workspace_id)["id"] == retry["id"]
        tfe.workspace_action(api, seeded.workspace_id, "unlock")


def test_kill_during_inline_upload_keeps_previous_version(
    srv: CairnServer, admin_token: str
) -> None:
    with srv.client(admin_token) as api:
        seeded = seed(api)
    document = inline_document(large_version(seeded))

    with ThreadPoolExecutor(max_workers=1) as pool, PausingBody(document, 2 * KILL_AFTER) as body:
        request = pool.submit(post_inline, srv, admin_token, seeded.workspace_id, body)
        assert body.paused.wait(timeout=30), "the upload never got going"
        time.sleep(0.3)  # let the server read what is in flight
        crash(srv, body, request)

    srv.start()
    assert_version1_intact(srv, admin_token, seeded)

    raw2_small = small_version_2(seeded)
    with srv.client(admin_token) as api:
        v2 = upload_inline(api, seeded.workspace_id, raw2_small)
        assert v2["attributes"]["serial"] == 2
        current = tfe.current_state_version(api, seeded.workspace_id)
        assert current["id"] == v2["id"]
        assert tfe.download_state(api, current) == raw2_small
        tfe.workspace_action(api, seeded.workspace_id, "unlock")


def test_kill_while_inline_upload_is_being_stored(srv: CairnServer, admin_token: str) -> None:
    """Killed after the whole body arrived, while the server stores it: whichever version is
    current afterwards is complete, and its bytes match its md5."""
    with srv.client(admin_token) as api:
        seeded = seed(api)
    raw2 = large_version(seeded)

    with ThreadPoolExecutor(max_workers=1) as pool, PausingBody(inline_document(raw2)) as body:
        request = pool.submit(post_inline, srv, admin_token, seeded.workspace_id, body)
        wait_for(
            lambda: partial_blob_written(srv) or request.done(),
            "the server is storing the upload",
            timeout=60,
        )
        srv.kill9()
        try:
            answered: int | None = request.result(timeout=60).status_code
        except httpx.TransportError:
            answered = None

    srv.start()
    with srv.client(admin_token) as api:
        current = tfe.current_state_version(api, seeded.workspace_id)
        downloaded = tfe.download_state(api, current)
        assert md5_hex(downloaded) == current["attributes"]["md5"]
        if current["id"] == seeded.v1["id"]:
            assert answered is None, "the server answered 201, yet version 1 is still current"
            assert downloaded == seeded.raw1
        else:
            assert current["attributes"]["serial"] == 2
            assert downloaded == raw2
        ws = tfe.document(api.get(f"/api/v2/workspaces/{seeded.workspace_id}"), 200)["data"]
        assert ws["attributes"]["locked"] is True
        tfe.workspace_action(api, seeded.workspace_id, "unlock")
