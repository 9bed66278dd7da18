"""NUL bytes and bytes that are not UTF-8 in the ``terraform login`` form bodies
(``application/x-www-form-urlencoded`` on ``/oauth/authorization`` and ``/oauth/token``) are a
400 naming the field — an HTML page for the browser's form, an RFC 6749 ``invalid_request`` for
Terraform's token request — never a 500, and nothing is written, on SQLite and PostgreSQL.

(Finding M3 made such values 4xx in JSON bodies and parameters; the login forms are parsed by
hand and were left out: on PostgreSQL a NUL in the redirect URI reached the INSERT of the code.)
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from cairn.audit.model import AuditEvent
from cairn.auth.login import s256
from cairn.auth.model import OAuthCode
from tests.api.login.test_code_expiry import REDIRECT, terraform_verifier
from tests.support.app import InProcessCairn

pytestmark = pytest.mark.anyio


def _authorization_form(admin_token: str, **changes: str) -> dict[str, str]:
    verifier = terraform_verifier()
    form = {
        "client_id": "terraform-cli",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "state": "s",
        "token": admin_token,
    }
    form.update(changes)
    return form


def _rows(app: InProcessCairn) -> tuple[int, int]:
    with app.ctx.db.unit_of_work() as s:
        codes = s.scalar(select(func.count()).select_from(OAuthCode)) or 0
        events = s.scalar(select(func.count()).select_from(AuditEvent)) or 0
        return int(codes), int(events)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redirect_uri", REDIRECT + "\x00x"),
        ("state", "s\x00"),
        ("token", "cairn_\x00"),
        ("code_challenge", "a\x00" * 22),
        ("extra\x00field", "x"),
    ],
)
async def test_nul_in_the_authorization_form_is_a_400_page(
    any_app: InProcessCairn, field: str, value: str
) -> None:
    before = _rows(any_app)
    form = _authorization_form(any_app.admin_token, **{field: value})
    async with any_app.client() as browser:
        response = await browser.post("/oauth/authorization", data=form)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "NUL" in response.text
    assert "location" not in response.headers
    assert any_app.admin_token not in response.text
    assert _rows(any_app) == before


async def test_bytes_that_are_not_utf8_are_a_400_page(any_app: InProcessCairn) -> None:
    before = _rows(any_app)
    form = _authorization_form(any_app.admin_token)
    body = "&".join(f"{k}={v}" for k, v in form.items() if k != "state").encode()
    for raw_state in (b"state=%ED%A0%80", b"state=\xff\xfe"):
        async with any_app.client() as browser:
            response = await browser.post(
                "/oauth/authorization",
                content=body + b"&" + raw_state,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert response.status_code == 400, response.text
        assert "not UTF-8" in response.text
    assert _rows(any_app) == before


@pytest.mark.parametrize("field", ["code", "code_verifier", "redirect_uri", "client_id"])
async def test_nul_in_the_token_request_is_invalid_request(
    any_app: InProcessCairn, field: str
) -> None:
    before = _rows(any_app)
    form = {
        "client_id": "terraform-cli",
        "code": "c" * 43,
        "code_verifier": terraform_verifier(),
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
    }
    form[field] = form[field] + "\x00"
    async with any_app.client() as terraform:
        response = await terraform.post("/oauth/token", data=form)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert field in body["error_description"] and "NUL" in body["error_description"]
    assert _rows(any_app) == before
