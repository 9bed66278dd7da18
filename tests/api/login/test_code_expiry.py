"""`terraform login` over HTTP, in-process, with time moved instead of waited for: the code the
authorization endpoint hands to Terraform's loopback listener is redeemed at `/oauth/token` for
an API token within `CODE_TTL`, once; at and after `CODE_TTL` it is refused with an RFC 6749
`invalid_grant`. (The service rules in detail: tests/unit/auth/test_login.py; the real `terraform
login`: tests/e2e/test_terraform_login.py.)"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from cairn.auth.login import CODE_TTL, s256
from tests.support.app import InProcessCairn, document

pytestmark = pytest.mark.anyio

REDIRECT = "http://localhost:10007/login"


def terraform_verifier() -> str:
    """The verifier format of Terraform's login command: `<uuid>.<9 digits>`."""
    return f"{uuid.uuid4()}.{uuid.uuid4().int % 10**9:09d}"


async def authorize(client: httpx.AsyncClient, token: str, verifier: str) -> str:
    """The token form posted to /oauth/authorization; returns the code from the redirect."""
    state = str(uuid.uuid4())
    form = {
        "client_id": "terraform-cli",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "state": state,
        "token": token,
    }
    response = await client.post("/oauth/authorization", data=form)
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = dict(parse_qsl(urlsplit(location).query))
    assert query["state"] == state
    return query["code"]


async def redeem(client: httpx.AsyncClient, code: str, verifier: str) -> httpx.Response:
    form = {
        "client_id": "terraform-cli",
        "code": code,
        "code_verifier": verifier,
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
    }
    response = await client.post("/oauth/token", data=form)
    assert response.headers["cache-control"] == "no-store"
    return response


def refused(response: httpx.Response) -> str:
    """An RFC 6749 §5.2 `invalid_grant` answer; returns its description."""
    body: dict[str, Any] = document(response, 400)
    assert body["error"] == "invalid_grant", body
    assert "access_token" not in body
    description: str = body["error_description"]
    return description


@pytest.mark.parametrize(
    "age",
    [CODE_TTL, CODE_TTL + timedelta(seconds=1), timedelta(days=1)],
    ids=["at-ttl", "ttl+1s", "1d"],
)
async def test_an_expired_code_is_refused(app: InProcessCairn, age: timedelta) -> None:
    async with app.client() as client:
        verifier = terraform_verifier()
        code = await authorize(client, app.admin_token, verifier)
        app.advance(age)
        assert "expired" in refused(await redeem(client, code, verifier))


async def test_a_code_inside_its_lifetime_gives_a_working_token_once(
    app: InProcessCairn,
) -> None:
    async with app.client() as client:
        verifier = terraform_verifier()
        code = await authorize(client, app.admin_token, verifier)
        app.advance(CODE_TTL - timedelta(seconds=1))
        body = document(await redeem(client, code, verifier), 200)
        assert body["token_type"] == "bearer"
        token = body["access_token"]
        assert token.startswith("cairn_") and token != app.admin_token

        # Used once: the same code is refused now, and still refused once it has expired.
        assert "already used" in refused(await redeem(client, code, verifier))
        app.advance(timedelta(minutes=10))
        refused(await redeem(client, code, verifier))

    async with app.client(token) as person:
        me = document(await person.get("/api/v2/account/details"), 200)
        assert me["data"]["attributes"]["username"] == "admin"
