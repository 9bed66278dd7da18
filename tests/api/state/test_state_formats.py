"""What a state file may hold, on SQLite and PostgreSQL, inline (Terraform 1.0.3's upload) and
through an upload URL:

* leniencies HCP Terraform has: `lineage` may be left out of an inline create (the state
  carries it); state format 3 (Terraform 0.11 and earlier: `modules` with `path`, `outputs`,
  `resources` per module) is stored as is, the root module's outputs become the version's
  outputs and its managed instances are counted;
* odd text inside a state: a lone UTF-16 surrogate in an output value is a clear 422 (never a
  500) and leaves no blob; a NUL in an output value is stored and answered faithfully; a NUL in
  an output's name or in `terraform_version` is a 422 on both databases.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.app import (
    CT,
    InProcessCairn,
    Workspace,
    create_organization,
    create_workspace,
    document,
)
from tests.support.statefile import md5_hex, new_lineage

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(any_app: InProcessCairn, anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    async with any_app.client(any_app.admin_token) as c:
        yield c


async def locked_workspace(client: httpx.AsyncClient) -> Workspace:
    ws = await create_workspace(client, await create_organization(client))
    document(await client.post(f"/api/v2/workspaces/{ws.id}/actions/lock", headers=CT), 200)
    return ws


def encoded(state: dict[str, Any]) -> bytes:
    return (json.dumps(state, indent=2) + "\n").encode()


async def create(
    client: httpx.AsyncClient,
    ws: Workspace,
    raw: bytes,
    *,
    lineage: str | None = None,
    **extra: Any,
) -> httpx.Response:
    header = json.loads(raw)
    attributes: dict[str, Any] = {
        "serial": header["serial"],
        "md5": md5_hex(raw),
        "state": base64.b64encode(raw).decode(),
        **extra,
    }
    if lineage is not None:
        attributes["lineage"] = lineage
    body = {"data": {"type": "state-versions", "attributes": attributes}}
    return await client.post(f"/api/v2/workspaces/{ws.id}/state-versions", json=body, headers=CT)


async def outputs_of(client: httpx.AsyncClient, sv_id: str) -> dict[str, Any]:
    listed = document(await client.get(f"/api/v2/state-versions/{sv_id}/outputs"), 200)["data"]
    found = {}
    for o in listed:  # the values themselves, sensitive ones too
        shown = document(await client.get(f"/api/v2/state-version-outputs/{o['id']}"), 200)
        found[o["attributes"]["name"]] = shown["data"]["attributes"]
    return found


def v4(lineage: str, outputs: dict[str, Any], *, serial: int = 1, tf: str = "1.0.3") -> bytes:
    return encoded(
        {
            "version": 4,
            "terraform_version": tf,
            "serial": serial,
            "lineage": lineage,
            "outputs": outputs,
            "resources": [],
        }
    )


# ---- lineage ------------------------------------------------------------------------------------


async def test_lineage_may_be_left_out_when_the_state_is_inline(
    client: httpx.AsyncClient,
) -> None:
    ws = await locked_workspace(client)
    lineage = new_lineage()
    raw = v4(lineage, {})
    data = document(await create(client, ws, raw), 201)["data"]
    assert data["attributes"]["status"] == "finalized"
    assert data["attributes"]["lineage"] == lineage
    assert data["attributes"]["state-version"] == 4
    # The next version must keep it (the lineage rule still applies).
    other = v4(new_lineage(), {}, serial=2)
    refused = await create(client, ws, other)
    assert refused.status_code == 409, refused.text


async def test_lineage_is_required_for_a_pending_version(client: httpx.AsyncClient) -> None:
    ws = await locked_workspace(client)
    body = {"data": {"type": "state-versions", "attributes": {"serial": 1, "md5": "0" * 32}}}
    response = await client.post(
        f"/api/v2/workspaces/{ws.id}/state-versions", json=body, headers=CT
    )
    error = document(response, 422)["errors"][0]
    assert error["source"] == {"pointer": "/data/attributes/lineage"}


# ---- format 3 -----------------------------------------------------------------------------------


def v3_state(lineage: str, serial: int = 1) -> bytes:
    """What Terraform 0.11 writes: one root module and a child module."""
    return encoded(
        {
            "version": 3,
            "terraform_version": "0.11.14",
            "serial": serial,
            "lineage": lineage,
            "modules": [
                {
                    "path": ["root"],
                    "outputs": {
                        "address": {"sensitive": False, "type": "string", "value": "10.0.0.1"},
                        "names": {"sensitive": False, "type": "list", "value": ["a", "b"]},
                        "password": {"sensitive": True, "type": "string", "value": "s3cret"},
                    },
                    "resources": {
                        "null_resource.web.0": {"type": "null_resource", "primary": {"id": "1"}},
                        "null_resource.web.1": {"type": "null_resource", "primary": {"id": "2"}},
                        "data.template_file.x": {"type": "template_file", "primary": {}},
                    },
                    "depends_on": [],
                },
                {
                    "path": ["root", "child"],
                    "outputs": {"inner": {"sensitive": False, "type": "string", "value": "no"}},
                    "resources": {"null_resource.inner": {"type": "null_resource"}},
                    "depends_on": [],
                },
            ],
        }
    )


async def test_a_format_3_state_is_stored_as_is(client: httpx.AsyncClient) -> None:
    ws = await locked_workspace(client)
    lineage = new_lineage()
    raw = v3_state(lineage)
    data = document(await create(client, ws, raw, lineage=lineage), 201)["data"]
    assert data["attributes"]["status"] == "finalized"
    assert data["attributes"]["terraform-version"] == "0.11.14"
    assert data["attributes"]["state-version"] == 3  # the file's format, as uploaded
    assert data["attributes"]["resources-processed"] is True
    shown = document(await client.get(f"/api/v2/state-versions/{data['id']}"), 200)["data"]
    assert shown["attributes"]["state-version"] == 3
    got = await client.get(data["attributes"]["hosted-state-download-url"])
    assert got.content == raw
    outputs = await outputs_of(client, data["id"])
    assert set(outputs) == {"address", "names", "password"}  # the root module's only
    assert outputs["address"]["value"] == "10.0.0.1"
    assert outputs["names"]["value"] == ["a", "b"]
    assert outputs["names"]["type"] == "array"
    assert outputs["password"]["sensitive"] is True
    workspace = document(await client.get(f"/api/v2/workspaces/{ws.id}"), 200)["data"]
    assert workspace["attributes"]["resource-count"] == 3  # managed instances, all modules


async def test_a_format_3_state_through_an_upload_url(
    any_app: InProcessCairn, client: httpx.AsyncClient
) -> None:
    ws = await locked_workspace(client)
    lineage = new_lineage()
    raw = v3_state(lineage)
    attributes = {"serial": 1, "md5": md5_hex(raw), "lineage": lineage}
    created = await client.post(
        f"/api/v2/workspaces/{ws.id}/state-versions",
        json={"data": {"type": "state-versions", "attributes": attributes}},
        headers=CT,
    )
    sv = document(created, 201)["data"]
    async with any_app.client() as anonymous:
        put = await anonymous.put(sv["attributes"]["hosted-state-upload-url"], content=raw)
    assert put.status_code == 200, put.text
    assert set(await outputs_of(client, sv["id"])) == {"address", "names", "password"}
    shown = document(await client.get(f"/api/v2/state-versions/{sv['id']}"), 200)["data"]
    assert shown["attributes"]["state-version"] == 3


# ---- odd text inside a state --------------------------------------------------------------------


async def test_a_lone_surrogate_in_an_output_is_422_and_stores_nothing(
    any_app: InProcessCairn, client: httpx.AsyncClient
) -> None:
    ws = await locked_workspace(client)
    lineage = new_lineage()
    # json.dumps writes the lone surrogate as the escape "\ud800" (valid JSON text).
    raw = v4(lineage, {"bad": {"value": "x\ud800y", "type": "string"}})
    assert b"\\ud800" in raw
    response = await create(client, ws, raw, lineage=lineage)
    error = document(response, 422)["errors"][0]
    assert "surrogate" in error["detail"]
    assert error["source"] == {"pointer": "/data/attributes/state"}
    assert not any_app.ctx.blobs.exists(hashlib.sha256(raw).hexdigest())
    current = await client.get(f"/api/v2/workspaces/{ws.id}/current-state-version")
    assert current.status_code == 404


async def test_a_nul_in_an_output_value_is_kept(client: httpx.AsyncClient) -> None:
    ws = await locked_workspace(client)
    lineage = new_lineage()
    value = {"text": "a\x00b", "list": ["\x00"]}
    raw = v4(lineage, {"odd": {"value": value, "type": ["object", {}], "sensitive": True}})
    data = document(await create(client, ws, raw, lineage=lineage), 201)["data"]
    assert (await outputs_of(client, data["id"]))["odd"]["value"] == value


@pytest.mark.parametrize(
    ("outputs", "tf"),
    [
        pytest.param({"x\x00y": {"value": 1, "type": "number"}}, "1.0.3", id="output-name"),
        pytest.param({}, "1.0\x003", id="terraform-version"),
    ],
)
async def test_a_nul_where_cairn_keeps_a_name_is_422(
    any_app: InProcessCairn, client: httpx.AsyncClient, outputs: dict[str, Any], tf: str
) -> None:
    ws = await locked_workspace(client)
    lineage = new_lineage()
    raw = v4(lineage, outputs, tf=tf)
    document(await create(client, ws, raw, lineage=lineage), 422)
    assert not any_app.ctx.blobs.exists(hashlib.sha256(raw).hexdigest())
