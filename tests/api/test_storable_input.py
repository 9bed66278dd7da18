"""Findings M3, L5 and L6: input that no database can store, odd digits in page parameters and
malformed lock bodies are 4xx answers that change nothing, on SQLite and on PostgreSQL.

- M3: a NUL byte (or a lone surrogate) in any JSON string — value or member name — is a 422
  pointing at it; in a path or query parameter a 400 naming the parameter. Never a 500, never
  written. On PostgreSQL these were 500s whose logged exception carried the statement's
  parameters; the engines now hide them (``hide_parameters=True``).
- L5: superscript two or an Arabic-Indic digit in ``page[size]`` / ``page[number]`` is a 400
  (ASCII digits only); a 5,000-digit page number is capped like any other large one, not a 500.
- L6: a lock request whose body is not a JSON:API object is refused and takes no lock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, StatementError

from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
)

SECRET = "TOPSECRET-PG-PASSWORD-42"


@pytest.fixture
async def client(any_app: InProcessCairn, anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    async with any_app.client(any_app.admin_token) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    errors: list[dict[str, Any]] = document(response, status)["errors"]
    assert len(errors) == 1
    return errors[0]


async def _workspace(client: httpx.AsyncClient, ws_id: str) -> dict[str, Any]:
    attrs: dict[str, Any] = document(await client.get(f"/api/v2/workspaces/{ws_id}"), 200)["data"][
        "attributes"
    ]
    return attrs


# ---- M3: JSON:API bodies ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("attribute", "raw"),
    [
        ("description", '"a\\u0000b"'),
        ("working-directory", '"dir\\u0000"'),
        ("description", '"lone \\ud800 surrogate"'),
    ],
)
async def test_unstorable_attribute_is_422_and_changes_nothing(
    client: httpx.AsyncClient, attribute: str, raw: str
) -> None:
    org = await create_organization(client)
    ws = await create_workspace(client, org, description="before")
    before = await _workspace(client, ws.id)
    body = (
        '{"data": {"type": "workspaces", "attributes": {"' + attribute + '": ' + raw + "}}}"
    ).encode()
    response = await client.patch(f"/api/v2/workspaces/{ws.id}", content=body, headers=CT)
    err = _error(response, 422)
    assert err["source"] == {"pointer": f"/data/attributes/{attribute}"}
    assert await _workspace(client, ws.id) == before


@pytest.mark.anyio
async def test_nul_in_a_member_name_or_list_item_is_422(client: httpx.AsyncClient) -> None:
    org = await create_organization(client)
    ws = await create_workspace(client, org)
    named = b'{"data": {"type": "workspaces", "attributes": {"x\\u0000y": "v"}}}'
    err = _error(await client.patch(f"/api/v2/workspaces/{ws.id}", content=named, headers=CT), 422)
    assert err["source"] == {"pointer": "/data/attributes"}
    listed = {
        "data": [
            {"type": "tags", "attributes": {"name": "ok"}},
            {"type": "tags", "attributes": {"name": "b\x00"}},
        ]
    }
    err = _error(
        await client.post(
            f"/api/v2/workspaces/{ws.id}/relationships/tags", json=listed, headers=CT
        ),
        422,
    )
    assert err["source"] == {"pointer": "/data/1/attributes/name"}


@pytest.mark.anyio
async def test_nul_in_a_new_organization_is_422_and_nothing_is_created(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "data": {"type": "organizations", "attributes": {"name": "nul-org", "email": "a\x00@b"}}
    }
    err = _error(await client.post("/api/v2/organizations", json=body, headers=CT), 422)
    assert err["source"] == {"pointer": "/data/attributes/email"}
    _error(await client.get("/api/v2/organizations/nul-org"), 404)


@pytest.mark.anyio
async def test_nul_in_the_lock_reason_is_422_and_takes_no_lock(client: httpx.AsyncClient) -> None:
    ws = await create_workspace(client, await create_organization(client))
    body = {"data": {"attributes": {"reason": "why\x00"}}}
    response = await client.post(f"/api/v2/workspaces/{ws.id}/actions/lock", json=body, headers=CT)
    assert _error(response, 422)["source"] == {"pointer": "/data/attributes/reason"}
    assert (await _workspace(client, ws.id))["locked"] is False


# ---- M3: path and query parameters -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v2/organizations/a%00b", "org"),
        ("/api/v2/organizations/a%00b/workspaces/w", "org"),
        ("/api/v2/workspaces/ws-%00", "id"),
        ("/api/v2/organizations?q=a%00b", "q"),
    ],
)
async def test_nul_in_a_parameter_is_400_naming_it(
    client: httpx.AsyncClient, path: str, parameter: str
) -> None:
    err = _error(await client.get(path), 400)
    assert err["source"] == {"parameter": parameter}


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["search[name]", "search[tags]", "filter[project][id]"])
async def test_nul_in_a_workspace_list_query_is_400(client: httpx.AsyncClient, name: str) -> None:
    org = await create_organization(client)
    response = await client.get(f"/api/v2/organizations/{org}/workspaces", params={name: "a\x00"})
    assert _error(response, 400)["source"] == {"parameter": name}


@pytest.mark.anyio
async def test_nul_in_a_workspace_name_in_the_path_is_400(client: httpx.AsyncClient) -> None:
    org = await create_organization(client)
    response = await client.patch(
        f"/api/v2/organizations/{org}/workspaces/w%00x",
        json={"data": {"type": "workspaces", "attributes": {"description": "d"}}},
        headers=CT,
    )
    assert _error(response, 400)["source"] == {"parameter": "name"}


# ---- M3: the engine never shows statement parameters ---------------------------------------------


def test_database_errors_do_not_carry_parameters(
    any_app: InProcessCairn, caplog: pytest.LogCaptureFixture
) -> None:
    engine = any_app.ctx.db.engine
    assert engine.hide_parameters
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises((DBAPIError, StatementError)) as caught,
        engine.connect() as conn,
    ):
        # A NUL in the value: PostgreSQL refuses it; on SQLite the missing table does.
        conn.execute(text("INSERT INTO no_such_table (x) VALUES (:x)"), {"x": SECRET + "\x00"})
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(("output", "terraform_version"), [("x\x00y", "1.0.3"), ("ok", "1.0\x003")])
async def test_nul_inside_a_state_file_is_never_a_500_nor_logged(
    any_app: InProcessCairn,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    output: str,
    terraform_version: str,
) -> None:
    """State files are not JSON:API documents: a NUL where cairn keeps text is a 422 (nothing
    committed) and no log line carries the values."""
    ws = await create_workspace(client, await create_organization(client))
    document(await client.post(f"/api/v2/workspaces/{ws.id}/actions/lock", headers=CT), 200)
    lineage = str(uuid.uuid4())
    state = {
        "version": 4,
        "terraform_version": terraform_version,
        "serial": 1,
        "lineage": lineage,
        "resources": [],
        "outputs": {
            "db_password": {"value": SECRET, "type": "string", "sensitive": True},
            output: {"value": 1, "type": "number"},
        },
    }
    raw = (json.dumps(state) + "\n").encode()
    attributes = {
        "serial": 1,
        "lineage": lineage,
        "md5": hashlib.md5(raw).hexdigest(),
        "state": base64.b64encode(raw).decode(),
    }
    with caplog.at_level(logging.DEBUG):
        response = await client.post(
            f"/api/v2/workspaces/{ws.id}/state-versions",
            json={"data": {"type": "state-versions", "attributes": attributes}},
            headers=CT,
        )
    assert SECRET not in caplog.text
    # An output's name and the Terraform version are kept as text: a 422 on both databases,
    # before anything is stored (tests/api/state/test_state_formats.py).
    _error(response, 422)
    current = await client.get(f"/api/v2/workspaces/{ws.id}/current-state-version")
    _error(current, 404)


# ---- L5: page parameters ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("page[size]", "\u00b2"),
        ("page[number]", "\u0661"),
        ("page[number]", "\u0663"),
        ("page[size]", "1\u00b2"),
    ],
)
async def test_non_ascii_digits_are_400(client: httpx.AsyncClient, name: str, value: str) -> None:
    org = await create_organization(client)
    response = await client.get(f"/api/v2/organizations/{org}/workspaces", params={name: value})
    assert _error(response, 400)["source"] == {"parameter": name}


@pytest.mark.anyio
async def test_a_huge_page_number_is_an_empty_page(client: httpx.AsyncClient) -> None:
    org = await create_organization(client)
    await create_workspace(client, org)
    response = await client.get(
        f"/api/v2/organizations/{org}/workspaces", params={"page[number]": "9" * 5000}
    )
    assert document(response, 200)["data"] == []
    response = await client.get(
        f"/api/v2/organizations/{org}/workspaces", params={"page[size]": "0" * 5000 + "1"}
    )
    assert len(document(response, 200)["data"]) == 1


# ---- L6: lock bodies -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[1,2]", 400),
        (b'"lock"', 400),
        (b"{not json", 400),
        (b'{"data": [1]}', 400),
        (b'{"data": "x"}', 400),
        (b'{"data": {"attributes": [1]}}', 422),
    ],
)
async def test_a_malformed_lock_body_takes_no_lock(
    client: httpx.AsyncClient, body: bytes, status: int
) -> None:
    ws = await create_workspace(client, await create_organization(client))
    response = await client.post(
        f"/api/v2/workspaces/{ws.id}/actions/lock", content=body, headers=CT
    )
    _error(response, status)
    assert (await _workspace(client, ws.id))["locked"] is False


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"data": null}', b'{"data": {"attributes": {"reason": "plan"}}}']
)
async def test_well_formed_lock_bodies_still_lock(client: httpx.AsyncClient, body: bytes) -> None:
    ws = await create_workspace(client, await create_organization(client))
    response = await client.post(
        f"/api/v2/workspaces/{ws.id}/actions/lock", content=body, headers=CT
    )
    document(response, 200)
    assert (await _workspace(client, ws.id))["locked"] is True
