"""Finding L3: anonymous requests to ``terraform login``'s endpoints cannot make cairn write
without limit.

- Failed token-form logins and failed ``/oauth/token`` requests spend the client address's
  bucket (``CAIRN_LOGIN_RATE_BURST``, refilled at ``CAIRN_LOGIN_RATE_PER_MINUTE``); once it is
  empty the answer is a 429 with ``Retry-After`` (an HTML page for the browser, RFC 6749 JSON
  for Terraform), before any work. Other addresses and successful logins are not affected.
- Failed logins are audited one by one ten times per address and window
  (``CAIRN_LOGIN_AUDIT_WINDOW``), the rest as one ``auth.login.failures`` event with their
  count.
- With an IdP, each ``GET /oauth/authorization`` (which stores a pending login) spends the
  bucket, an address has at most ``CAIRN_LOGIN_PENDING_PER_ADDRESS`` logins pending, and
  housekeeping deletes expired ones.

The probe's reproducer: 1,000 requests wrote 1,000 audit rows; 500 GETs wrote 500
``login_states`` rows.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cairn.app import create_app
from cairn.audit.model import AuditEvent
from cairn.auth.idp import IdpClient, IdpSettings
from cairn.auth.login import s256
from cairn.auth.model import LoginState
from cairn.auth.throttle import LoginLimits
from tests.api.login.test_code_expiry import REDIRECT, authorize, redeem, terraform_verifier
from tests.idp.fakes import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeIdp
from tests.support.app import InProcessCairn, build

pytestmark = pytest.mark.anyio

ATTACKER = "203.0.113.66"
NEIGHBOUR = "198.51.100.7"
INDIVIDUAL = LoginLimits().audit_individual  # failures recorded one by one per window


def _from(app: InProcessCairn, address: str) -> httpx.AsyncClient:
    """A client whose connection comes from ``address``."""
    transport = httpx.ASGITransport(app=app.app, client=(address, 50123))
    return httpx.AsyncClient(transport=transport, base_url=app.url)


def _form(token: str) -> dict[str, str]:
    return {
        "client_id": "terraform-cli",
        "code_challenge": s256(terraform_verifier()),
        "code_challenge_method": "S256",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "state": "s",
        "token": token,
    }


def _token_form() -> dict[str, str]:
    return {
        "client_id": "terraform-cli",
        "code": "x",
        "code_verifier": "a" * 43,
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
    }


def _events(app: InProcessCairn, action: str) -> list[AuditEvent]:
    with app.ctx.db.unit_of_work() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _states(app: InProcessCairn) -> int:
    with app.ctx.db.unit_of_work() as s:
        return int(s.scalar(select(func.count()).select_from(LoginState)) or 0)


async def test_failed_form_logins_are_limited_per_address_and_their_audit_capped(
    app: InProcessCairn,
) -> None:
    burst = app.settings.login_rate_burst
    async with _from(app, ATTACKER) as attacker:
        for _ in range(burst):
            response = await attacker.post("/oauth/authorization", data=_form("cairn_wrong"))
            assert response.status_code == 401
        limited = await attacker.post("/oauth/authorization", data=_form("cairn_wrong"))
        assert limited.status_code == 429, limited.text
        assert limited.headers["content-type"].startswith("text/html")
        assert int(limited.headers["retry-after"]) >= 1
        assert "too many failed logins from your address" in limited.text
        # the admin's own token from that address waits too: nothing is checked meanwhile
        assert (
            await attacker.post("/oauth/authorization", data=_form(app.admin_token))
        ).status_code == 429

    async with _from(app, NEIGHBOUR) as neighbour:  # another address has its own budget
        assert (
            await neighbour.post("/oauth/authorization", data=_form("cairn_x"))
        ).status_code == 401
        await authorize(neighbour, app.admin_token, terraform_verifier())

    failures = [e for e in _events(app, "auth.login.authorize") if e.outcome == "failure"]
    by_address = Counter(e.source_address for e in failures)
    assert by_address == {ATTACKER: INDIVIDUAL, NEIGHBOUR: 1}  # then counted, not recorded
    assert not _events(app, "auth.login.failures")  # the window is not over yet

    app.advance(app.settings.login_audit_window)
    app.ctx.login.housekeeping()
    (summary,) = _events(app, "auth.login.failures")
    details = json.loads(summary.details)
    assert details["count"] == burst - INDIVIDUAL and details["address"] == ATTACKER
    assert details["failed_action"] == "auth.login.authorize"
    assert details["reasons"] == {"invalid token": burst - INDIVIDUAL}
    async with _from(app, ATTACKER) as attacker:  # the bucket has refilled meanwhile
        assert (
            await attacker.post("/oauth/authorization", data=_form("cairn_x"))
        ).status_code == 401
        await authorize(attacker, app.admin_token, terraform_verifier())
    failures = [e for e in _events(app, "auth.login.authorize") if e.outcome == "failure"]
    assert len(failures) == INDIVIDUAL + 2  # a new window records again


async def test_failed_token_requests_are_limited_with_an_oauth_error(app: InProcessCairn) -> None:
    burst = app.settings.login_rate_burst
    async with _from(app, ATTACKER) as attacker:
        for _ in range(burst):
            response = await attacker.post("/oauth/token", data=_token_form())
            assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
        limited = await attacker.post("/oauth/token", data=_token_form())
    assert limited.status_code == 429
    assert limited.json()["error"] == "temporarily_unavailable"
    assert "too many failed token requests" in limited.json()["error_description"]
    assert int(limited.headers["retry-after"]) >= 1
    assert len(_events(app, "auth.login.token")) == INDIVIDUAL


async def test_successful_logins_spend_nothing(app: InProcessCairn) -> None:
    async with _from(app, ATTACKER) as person:
        for _ in range(app.settings.login_rate_burst + 5):
            verifier = terraform_verifier()
            code = await authorize(person, app.admin_token, verifier)
            assert (await redeem(person, code, verifier)).status_code == 200


def with_idp(base: InProcessCairn, fake: FakeIdp) -> tuple[InProcessCairn, httpx.Client]:
    """``base``'s services with an IdP (the in-process FakeIdp) in front of the login."""
    http = fake.client()
    settings = IdpSettings(
        issuer=fake.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,  # what the FakeIdp expects
    )
    ctx = base.ctx
    ctx.idp = IdpClient(
        settings,
        ctx.db,
        ctx.keyring,
        ctx.clock,
        http,
        max_pending_per_address=base.settings.login_pending_per_address,
    )
    ctx.idp.check()
    return InProcessCairn(create_app(ctx), ctx, base.clock, base.admin_token), http


@pytest.fixture
def limited_app(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    admin_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[InProcessCairn]:
    """An in-process cairn with an IdP; ``request.param`` (indirect parametrization) overrides
    its settings."""
    for name in list(os.environ):
        if name.startswith("CAIRN_"):
            monkeypatch.delenv(name)
    settings: dict[str, Any] = getattr(request, "param", {})
    base = build(tmp_path / "data", admin_token, **settings)
    fake = FakeIdp(clock=base.clock)
    app, http = with_idp(base, fake)
    try:
        yield app
    finally:
        http.close()
        base.close()


def _authorize_query() -> dict[str, str]:
    form = _form("")
    del form["token"]
    return form


async def test_redirects_to_the_idp_spend_the_budget(limited_app: InProcessCairn) -> None:
    burst = limited_app.settings.login_rate_burst
    async with _from(limited_app, ATTACKER) as attacker:
        for _ in range(burst):
            response = await attacker.get("/oauth/authorization", params=_authorize_query())
            assert response.status_code == 302
        limited = await attacker.get("/oauth/authorization", params=_authorize_query())
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert _states(limited_app) == burst
    async with _from(limited_app, NEIGHBOUR) as neighbour:
        ok = await neighbour.get("/oauth/authorization", params=_authorize_query())
        assert ok.status_code == 302
    assert _states(limited_app) == burst + 1


@pytest.mark.parametrize(
    "limited_app",
    [{"login_rate_burst": 1000, "login_rate_per_minute": 1000, "login_pending_per_address": 5}],
    indirect=True,
)
async def test_pending_logins_are_bounded_per_address_and_purged(
    limited_app: InProcessCairn,
) -> None:
    async with _from(limited_app, "2001:db8:1:2::10") as attacker:
        for i in range(5):
            response = await attacker.get("/oauth/authorization", params=_authorize_query())
            assert response.status_code == 302, (i, response.text)
    # the same /64 is the same client
    async with _from(limited_app, "2001:db8:1:2::99") as attacker:
        limited = await attacker.get("/oauth/authorization", params=_authorize_query())
    assert limited.status_code == 429
    assert "5 logins from your address are already waiting" in limited.text
    assert 1 <= int(limited.headers["retry-after"]) <= 601
    assert _states(limited_app) == 5
    async with _from(limited_app, "2001:db8:1:3::10") as neighbour:
        ok = await neighbour.get("/oauth/authorization", params=_authorize_query())
        assert ok.status_code == 302

    limited_app.advance(timedelta(minutes=10))  # the pending logins expired: room again
    async with _from(limited_app, "2001:db8:1:2::10") as attacker:
        ok = await attacker.get("/oauth/authorization", params=_authorize_query())
        assert ok.status_code == 302
    limited_app.advance(timedelta(hours=2))
    limited_app.ctx.login.housekeeping()
    assert _states(limited_app) == 0
