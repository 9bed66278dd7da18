"""Finding I4: the id-token ``audience`` is checked like names and run IDs.

An audience is compared byte for byte by the cloud that verifies the token; a control
character, an invisible format character, an empty or over-long value, or a list longer than a
token may carry is a 422 whose pointer names the member (``/audience``) or the list entry
(``/audience/<index>``). Nothing is minted. Ordinary audiences (a URL, an ARN-like string, a
list of two) still mint.
"""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from tests.support.app import document, organization_and_workspace

pytestmark = pytest.mark.anyio


async def _mint(client: httpx.AsyncClient, ws_id: str, audience: Any) -> httpx.Response:
    return await client.post(
        f"/api/cairn/v1/workspaces/{ws_id}/id-tokens",
        json={"audience": audience, "run_phase": "plan"},
    )


@pytest.mark.parametrize(
    ("audience", "pointer", "says"),
    [
        ("x\u0000y", "/audience", "NUL"),
        ("sts.amazonaws.com\n", "/audience", "spaces"),
        ("a\u001bb", "/audience", "U+001B"),
        ("a\u0085b", "/audience", "U+0085"),
        ("a\u200bb", "/audience", "U+200B"),
        ("a\u202eb", "/audience", "U+202E"),
        ("a\u2028b", "/audience", "U+2028"),
        ("", "/audience", "empty"),
        ("   ", "/audience", "empty"),
        ("a" * 513, "/audience", "longer than 512"),
        (["ok", "x\u0007y"], "/audience/1", "U+0007"),
        (["ok", ""], "/audience/1", "empty"),
        (["ok", 3], "/audience/1", "string"),
        ([f"aud-{i}" for i in range(11)], "/audience", "at most 10"),
        ([], "/audience", "required"),
        (None, "/audience", "required"),
    ],
)
async def test_bad_audiences_are_422_naming_the_pointer(
    admin: httpx.AsyncClient, audience: Any, pointer: str, says: str
) -> None:
    ws = await organization_and_workspace(admin)
    errors = document(await _mint(admin, ws.id, audience), 422)["errors"]
    assert errors[0]["source"] == {"pointer": pointer}
    assert says in errors[0]["detail"]


@pytest.mark.parametrize(
    "audience",
    [
        "sts.amazonaws.com",
        "api://AzureADTokenExchange",
        "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/c",
        "a" * 512,
        ["vault.example.com", "sts.amazonaws.com"],
        [f"aud-{i}" for i in range(10)],
        "ünïcödé-audience",
    ],
)
async def test_ordinary_audiences_still_mint(admin: httpx.AsyncClient, audience: Any) -> None:
    ws = await organization_and_workspace(admin)
    token = document(await _mint(admin, ws.id, audience), 201)["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == audience
