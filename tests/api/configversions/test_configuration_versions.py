"""Configuration versions through the TFE API: create, upload through the signed single-use
URL, show, list, download; the URL's expiry on the injected clock; the size limit; bad
archives → ``errored`` with the reason (and 422 to the PUT); who may do what; the
``after_upload`` hook; the blob's life."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from cairn.configversions.model import ConfigurationVersion
from tests.support.app import (
    CT,
    InProcessCairn,
    Workspace,
    build,
    document,
    grant,
    make_user,
    organization_and_workspace,
)
from tests.support.configtar import file, symlink, targz

pytestmark = pytest.mark.anyio

CREATE = {"data": {"type": "configuration-versions", "attributes": {}}}


def create_body(**attributes: Any) -> dict[str, Any]:
    return {"data": {"type": "configuration-versions", "attributes": attributes}}


async def create(client: httpx.AsyncClient, ws: Workspace, **attributes: Any) -> dict[str, Any]:
    response = await client.post(
        f"/api/v2/workspaces/{ws.id}/configuration-versions",
        json=create_body(**attributes),
        headers=CT,
    )
    data: dict[str, Any] = document(response, 201)["data"]
    return data


async def put(app: InProcessCairn, url: str, content: bytes, **headers: str) -> httpx.Response:
    async with app.client() as anonymous:  # go-tfe sends no token to an upload URL
        return await anonymous.put(url, content=content, headers=headers)


async def show(client: httpx.AsyncClient, cv_id: str) -> dict[str, Any]:
    data: dict[str, Any] = document(
        await client.get(f"/api/v2/configuration-versions/{cv_id}"), 200
    )["data"]
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_create_upload_show_list_download(
    any_app: InProcessCairn, anyio_backend: str
) -> None:
    app = any_app
    async with app.client(app.admin_token) as admin:
        ws = await organization_and_workspace(admin)
        cv = await create(admin, ws, speculative=True)
        attrs = cv["attributes"]
        assert cv["id"].startswith("cv-") and cv["type"] == "configuration-versions"
        assert attrs["status"] == "pending" and attrs["speculative"] is True
        assert attrs["auto-queue-runs"] is True  # HCP Terraform's default
        assert attrs["source"] == "tfe-api" and attrs["provisional"] is False
        assert attrs["error"] is None and attrs["error-message"] is None
        assert attrs["upload-url"].startswith(f"{app.url}/api/v2/configuration-versions/")
        assert cv["relationships"]["ingress-attributes"]["data"] is None

        # The URL is shown only in the create answer; a pending version has nothing to fetch.
        shown = await show(admin, cv["id"])
        assert shown["attributes"]["upload-url"] is None
        assert shown["attributes"]["status"] == "pending"
        assert (
            await admin.get(f"/api/v2/configuration-versions/{cv['id']}/download")
        ).status_code == 404

        archive = targz([file("main.tf"), file("modules/m/main.tf", b"# module\n")])
        assert (await put(app, attrs["upload-url"], archive)).status_code == 200
        shown = await show(admin, cv["id"])
        assert shown["attributes"]["status"] == "uploaded"
        assert shown["attributes"]["status-timestamps"] == {
            "uploaded-at": "2026-01-01T12:00:00.000Z"
        }
        assert shown["links"]["download"] == f"/api/v2/configuration-versions/{cv['id']}/download"

        got = await admin.get(f"/api/v2/configuration-versions/{cv['id']}/download")
        assert got.status_code == 200 and got.content == archive
        assert got.headers["content-length"] == str(len(archive))

        second = await create(admin, ws, **{"auto-queue-runs": False})
        listed = document(
            await admin.get(f"/api/v2/workspaces/{ws.id}/configuration-versions"), 200
        )
        assert {d["id"] for d in listed["data"]} == {cv["id"], second["id"]}
        assert all(d["attributes"]["upload-url"] is None for d in listed["data"])
        assert listed["meta"]["pagination"]["total-count"] == 2
        paged = document(
            await admin.get(
                f"/api/v2/workspaces/{ws.id}/configuration-versions?page[size]=1&page[number]=2"
            ),
            200,
        )
        assert len(paged["data"]) == 1 and paged["meta"]["pagination"]["total-pages"] == 2

        included = await admin.get(
            f"/api/v2/configuration-versions/{cv['id']}?include=ingress_attributes"
        )
        assert document(included, 200)["data"]["id"] == cv["id"]
        ingress = await admin.get(f"/api/v2/configuration-versions/{cv['id']}/ingress-attributes")
        assert document(ingress, 200) == {"data": None}

        # Included with runs' include=configuration_version later: loadable by ID.
        assert (await admin.get("/api/v2/configuration-versions/cv-nope")).status_code == 404


async def test_the_cli_is_the_source_when_it_says_so(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    response = await admin.post(
        f"/api/v2/workspaces/{ws.id}/configuration-versions",
        json=create_body(**{"auto-queue-runs": False, "speculative": False}),
        headers={**CT, "Terraform-Version": "1.0.3"},
    )
    assert document(response, 201)["data"]["attributes"]["source"] == "terraform"
    bad = await admin.post(
        f"/api/v2/workspaces/{ws.id}/configuration-versions",
        json=create_body(**{"auto-queue-runs": "yes"}),
        headers=CT,
    )
    assert bad.status_code == 422 and "auto-queue-runs" in bad.text


# ---- the URL ------------------------------------------------------------------------------------


async def test_an_upload_url_works_once_whatever_the_outcome(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    good = await create(admin, ws)
    url = good["attributes"]["upload-url"]
    assert (await put(app, url, targz())).status_code == 200
    again = await put(app, url, targz())
    assert again.status_code == 409 and "already been used" in again.text

    refused = await create(admin, ws)
    url = refused["attributes"]["upload-url"]
    assert (await put(app, url, b"not a tarball")).status_code == 422
    again = await put(app, url, targz())
    assert again.status_code == 409
    assert (await show(admin, refused["id"]))["attributes"]["status"] == "errored"

    # Moved to another version, or altered: refused without a hint.
    other = await create(admin, ws)
    token = url.rsplit("/", 1)[1]
    moved = f"{app.url}/api/v2/configuration-versions/{other['id']}/hosted-upload/{token}"
    assert (await put(app, moved, targz())).status_code == 401
    assert (await put(app, other["attributes"]["upload-url"] + "x", targz())).status_code == 401
    assert (await show(admin, other["id"]))["attributes"]["status"] == "pending"


async def test_an_upload_url_expires(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    ws = await organization_and_workspace(admin)
    cv = await create(admin, ws)
    app.advance(timedelta(seconds=app.settings.upload_url_ttl_seconds + 1))
    late = await put(app, cv["attributes"]["upload-url"], targz())
    assert late.status_code == 401 and "expired" in late.text
    assert (await show(admin, cv["id"]))["attributes"]["status"] == "pending"
    # Housekeeping errors what can no longer be uploaded.
    app.advance(timedelta(hours=1))
    assert app.ctx.configversions.expire_stale_pending(app.clock.now()) == 1
    shown = (await show(admin, cv["id"]))["attributes"]
    assert shown["status"] == "errored" and "expired" in shown["error-message"]


# ---- limits and bad archives --------------------------------------------------------------------


@pytest.fixture
def small(
    tmp_path: Path, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InProcessCairn]:
    """A cairn whose configuration archives may be 64 KiB (inflated: 640 KiB)."""
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    instance = build(tmp_path / "data", admin_token, max_config_bytes=64 * 1024)
    try:
        yield instance
    finally:
        instance.close()


@pytest.mark.parametrize("declared", [True, False])
async def test_an_archive_over_the_limit_is_refused_and_errored(
    small: InProcessCairn, anyio_backend: str, declared: bool
) -> None:
    async with small.client(small.admin_token) as admin:
        ws = await organization_and_workspace(admin)
        cv = await create(admin, ws)
        big = targz([file("noise.bin", os.urandom(80 * 1024))])
        url = cv["attributes"]["upload-url"]
        if declared:
            response = await put(small, url, big)
        else:  # no Content-Length: chunked, counted as it streams

            async def body() -> Any:
                for i in range(0, len(big), 8192):
                    yield big[i : i + 8192]

            async with small.client() as anonymous:
                response = await anonymous.put(url, content=body())
        assert response.status_code == 413, response.text
        assert "CAIRN_MAX_CONFIG_MB" in response.text
        shown = (await show(admin, cv["id"]))["attributes"]
        assert shown["status"] == "errored" and "larger than 64 KiB" in shown["error-message"]
        assert "CAIRN_MAX_CONFIG_MB" in shown["error-message"]
        assert not small.ctx.blobs.exists(sha256(big))
        assert (await put(small, url, targz())).status_code == 409


async def test_a_decompression_bomb_is_errored(small: InProcessCairn, anyio_backend: str) -> None:
    async with small.client(small.admin_token) as admin:
        ws = await organization_and_workspace(admin)
        cv = await create(admin, ws)
        bomb = targz([file("zeros", b"\0" * (1024 * 1024))])
        assert len(bomb) < 64 * 1024
        response = await put(small, cv["attributes"]["upload-url"], bomb)
        assert response.status_code == 422 and "inflates to more than" in response.text
        assert (await show(admin, cv["id"]))["attributes"]["status"] == "errored"


BAD = {
    "not gzip": (b"just text", "not gzip-compressed"),
    "absolute path": (targz([file("/etc/passwd")]), "absolute path"),
    "dot-dot": (targz([file("../../x.tf")]), "'..' component"),
    "escaping link": (
        targz([file("main.tf"), symlink("x", "../../etc")]),
        "outside the configuration",
    ),
    "truncated": (targz()[:-10], "truncated"),
}


@pytest.mark.parametrize("kind", list(BAD))
async def test_bad_archives_are_errored_with_the_reason(
    app: InProcessCairn, admin: httpx.AsyncClient, kind: str
) -> None:
    body, says = BAD[kind]
    ws = await organization_and_workspace(admin)
    cv = await create(admin, ws)
    response = await put(app, cv["attributes"]["upload-url"], body)
    assert response.status_code == 422, response.text
    detail = response.json()["errors"][0]["detail"]
    assert says in detail
    shown = (await show(admin, cv["id"]))["attributes"]
    assert shown["status"] == "errored" and shown["error-message"] == detail
    assert shown["error"] == "upload-failed" and "errored-at" in shown["status-timestamps"]
    assert not app.ctx.blobs.exists(sha256(body))
    assert (
        await admin.get(f"/api/v2/configuration-versions/{cv['id']}/download")
    ).status_code == 404


# ---- who may ------------------------------------------------------------------------------------


async def test_who_may_create_read_and_download(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    reader, planner, stranger = (
        await make_user(admin, "reader"),
        await make_user(admin, "planner"),
        await make_user(admin, "stranger"),
    )
    await grant(admin, ws, reader, "read")
    await grant(admin, ws, planner, "plan")
    path = f"/api/v2/workspaces/{ws.id}/configuration-versions"
    async with app.client(planner.token) as p:
        cv = await create(p, ws)
        assert (await put(app, cv["attributes"]["upload-url"], targz())).status_code == 200
    async with app.client(reader.token) as r:
        refused = await r.post(path, json=CREATE, headers=CT)
        assert refused.status_code == 403 and "run:plan" in refused.text
        assert (await show(r, cv["id"]))["attributes"]["status"] == "uploaded"
        assert len(document(await r.get(path), 200)["data"]) == 1
        assert (
            await r.get(f"/api/v2/configuration-versions/{cv['id']}/download")
        ).status_code == 200
    async with app.client(stranger.token) as x:
        assert (await x.post(path, json=CREATE, headers=CT)).status_code == 404
        assert (await x.get(f"/api/v2/configuration-versions/{cv['id']}")).status_code == 404
        assert (
            await x.get(f"/api/v2/configuration-versions/{cv['id']}/download")
        ).status_code == 404
        assert (await x.get(path)).status_code == 404
    async with app.client() as anonymous:
        assert (await anonymous.post(path, json=CREATE, headers=CT)).status_code == 401
        assert (
            await anonymous.get(f"/api/v2/configuration-versions/{cv['id']}")
        ).status_code == 401
    made = await admin.post(f"/api/v2/organizations/{ws.org}/authentication-token", headers=CT)
    org_token = document(made, 201)["data"]["attributes"]["token"]
    async with app.client(org_token) as o:
        refused = await o.post(path, json=CREATE, headers=CT)
        assert refused.status_code == 403 and "organization token" in refused.text


# ---- after upload -------------------------------------------------------------------------------


async def test_after_upload_hooks_run_for_auto_queue_runs(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    seen: list[tuple[str, str, bool]] = []

    def hook(s: Session, cv: ConfigurationVersion) -> None:
        seen.append((cv.id, cv.status, s.in_transaction()))

    app.ctx.configversions.after_upload.append(hook)
    ws = await organization_and_workspace(admin)
    auto = await create(admin, ws)
    manual = await create(admin, ws, **{"auto-queue-runs": False})
    assert (await put(app, manual["attributes"]["upload-url"], targz())).status_code == 200
    assert seen == []
    assert (await put(app, auto["attributes"]["upload-url"], targz())).status_code == 200
    assert seen == [(auto["id"], "uploaded", True)]

    def refuse(s: Session, cv: ConfigurationVersion) -> None:
        from cairn.errors import Conflict

        raise Conflict("the workspace is locked by a test; no run can be queued")

    app.ctx.configversions.after_upload.append(refuse)
    failing = await create(admin, ws)
    response = await put(app, failing["attributes"]["upload-url"], targz([file("other.tf")]))
    assert response.status_code == 409 and "locked by a test" in response.text
    shown = (await show(admin, failing["id"]))["attributes"]
    assert shown["status"] == "errored" and "locked by a test" in shown["error-message"]


# ---- blobs --------------------------------------------------------------------------------------


async def test_a_deleted_workspace_loses_its_archives(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    doomed = await organization_and_workspace(admin)
    keeper = await organization_and_workspace(admin)
    gone = targz([file("main.tf", b"# doomed " + os.urandom(8).hex().encode())])
    kept = targz([file("main.tf", b"# kept " + os.urandom(8).hex().encode())])
    for ws, body in ((doomed, gone), (keeper, kept)):
        cv = await create(admin, ws)
        assert (await put(app, cv["attributes"]["upload-url"], body)).status_code == 200
    assert (await admin.delete(f"/api/v2/workspaces/{doomed.id}")).status_code == 204
    app.advance(app.settings.blob_grace + timedelta(seconds=1))
    app.ctx.collector.sweep()
    assert not app.ctx.blobs.exists(sha256(gone))
    assert app.ctx.blobs.exists(sha256(kept))


async def test_a_large_archive_streams_through(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    """Several MiB (fed a MiB at a time while the next arrives) come back byte for byte."""
    ws = await organization_and_workspace(admin)
    cv = await create(admin, ws)
    big = targz([file("main.tf"), file("blob.bin", os.urandom(3 * 1024 * 1024 + 7))])
    assert (await put(app, cv["attributes"]["upload-url"], big)).status_code == 200
    got = await admin.get(f"/api/v2/configuration-versions/{cv['id']}/download")
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == sha256(big)
