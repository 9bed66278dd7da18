"""cairn.auth.login with a clock we can move: authorization codes expire within 5 minutes, are
single-use and bound to PKCE S256, the redirect URI and the client; the authorization request
rules; RFC 7636's S256 test vector. (The real `terraform login` is in
tests/e2e/test_terraform_login.py.)"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import select

from cairn.audit.model import AuditEvent
from cairn.auth.login import (
    CODE_TTL,
    AuthorizationRequest,
    LoginRejected,
    LoginService,
    OAuthError,
    parse_authorization,
    s256,
)
from cairn.auth.model import OAuthCode
from cairn.auth.tokens import TokenService
from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.db.engine import Database, make_engine
from cairn.errors import Unauthorized
from cairn.migrations.migrate import upgrade

MASTER = "unit-test-master-secret-0123456789abcdef"
REDIRECT = "http://localhost:10007/login"


@dataclass
class Login:
    db: Database
    clock: FrozenClock
    tokens: TokenService
    service: LoginService
    admin_token: str


@pytest.fixture
def login(tmp_path: Path) -> Iterator[Login]:
    db = Database(make_engine(f"sqlite:///{tmp_path / 'login.db'}"))
    upgrade(db.engine)
    clock = FrozenClock()
    keyring = Keyring(MASTER)
    tokens = TokenService(db, keyring, clock)
    admin_token = tokens.bootstrap_admin_token()
    assert admin_token is not None
    try:
        yield Login(db, clock, tokens, LoginService(db, keyring, clock, tokens), admin_token)
    finally:
        db.dispose()


def terraform_verifier() -> str:
    """The verifier format of Terraform's login command: `<uuid>.<9 digits>`."""
    return f"{uuid.uuid4()}.{uuid.uuid4().int % 10**9:09d}"


def request(verifier: str, redirect: str = REDIRECT) -> AuthorizationRequest:
    return parse_authorization(
        {
            "client_id": "terraform-cli",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
            "redirect_uri": redirect,
            "response_type": "code",
            "state": str(uuid.uuid4()),
        }
    )


def code_of(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["code"]


def token_form(code: str, verifier: str, redirect: str = REDIRECT) -> dict[str, str]:
    return {
        "client_id": "terraform-cli",
        "code": code,
        "code_verifier": verifier,
        "grant_type": "authorization_code",
        "redirect_uri": redirect,
    }


def redeem_fails(login: Login, form: dict[str, str]) -> str:
    with pytest.raises(OAuthError) as caught:
        login.service.redeem(form, source="127.0.0.1")
    assert caught.value.error == "invalid_grant"
    assert caught.value.status_code == 400
    return caught.value.detail


def test_rfc7636_s256_vector() -> None:
    assert (
        s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_code_ttl_is_at_most_five_minutes() -> None:
    assert timedelta(0) < CODE_TTL <= timedelta(minutes=5)


@pytest.mark.parametrize(
    "age",
    [CODE_TTL, CODE_TTL + timedelta(seconds=1), timedelta(hours=1), timedelta(days=30)],
    ids=["at-ttl", "ttl+1s", "1h", "30d"],
)
def test_expired_code_is_refused(login: Login, age: timedelta) -> None:
    verifier = terraform_verifier()
    code = code_of(
        login.service.login_with_token(login.admin_token, request(verifier), source="127.0.0.1")
    )
    login.clock.advance(age)
    assert "expired" in redeem_fails(login, token_form(code, verifier))
    login.clock.advance(timedelta(seconds=1))
    assert "expired" in redeem_fails(login, token_form(code, verifier))


def test_code_just_inside_its_lifetime_works_once(login: Login) -> None:
    verifier = terraform_verifier()
    code = code_of(
        login.service.login_with_token(login.admin_token, request(verifier), source="127.0.0.1")
    )
    login.clock.advance(CODE_TTL - timedelta(seconds=1))
    token = login.service.redeem(token_form(code, verifier), source="127.0.0.1")
    caller = login.tokens.authenticate(token)
    assert caller.name == "admin"
    assert "already used" in redeem_fails(login, token_form(code, verifier))


def test_expired_attempt_is_audited_without_secrets(login: Login) -> None:
    verifier = terraform_verifier()
    code = code_of(
        login.service.login_with_token(login.admin_token, request(verifier), source="10.1.2.3")
    )
    login.clock.advance(CODE_TTL + timedelta(minutes=1))
    redeem_fails(login, token_form(code, verifier))
    with login.db.unit_of_work() as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id)))
        stored = list(s.scalars(select(OAuthCode)))
    assert [(e.action, e.outcome) for e in events] == [
        ("auth.login.authorize", "success"),
        ("auth.login.token", "failure"),
    ]
    assert events[0].source_address == "10.1.2.3"
    assert "expired" in json.loads(events[1].details)["reason"]
    for e in events:
        text = f"{e.subject} {e.details}"
        assert code not in text and verifier not in text and login.admin_token not in text
    assert [c.code_hash for c in stored] != [code]
    assert stored[0].expires_at - stored[0].created_at == CODE_TTL


def test_wrong_verifier_burns_the_code(login: Login) -> None:
    verifier = terraform_verifier()
    code = code_of(
        login.service.login_with_token(login.admin_token, request(verifier), source="127.0.0.1")
    )
    assert "code_verifier" in redeem_fails(login, token_form(code, terraform_verifier()))
    assert "already used" in redeem_fails(login, token_form(code, verifier))


def test_wrong_redirect_burns_the_code(login: Login) -> None:
    verifier = terraform_verifier()
    code = code_of(
        login.service.login_with_token(login.admin_token, request(verifier), source="127.0.0.1")
    )
    other = "http://localhost:10008/login"
    assert "redirect_uri" in redeem_fails(login, token_form(code, verifier, other))
    redeem_fails(login, token_form(code, verifier))


@pytest.mark.parametrize("suffix", ["\n", " ", "%"])
def test_verifier_with_trailing_junk_is_refused(login: Login, suffix: str) -> None:
    verifier = terraform_verifier()
    code = code_of(
        login.service.login_with_token(login.admin_token, request(verifier), source="127.0.0.1")
    )
    with pytest.raises(OAuthError) as caught:
        login.service.redeem(token_form(code, verifier + suffix), source="127.0.0.1")
    assert caught.value.error == "invalid_request"


def test_bad_token_issues_no_code(login: Login) -> None:
    with pytest.raises(Unauthorized):
        login.service.login_with_token(
            "cairn_" + "x" * 43, request(terraform_verifier()), source=""
        )
    with login.db.unit_of_work() as s:
        assert list(s.scalars(select(OAuthCode))) == []


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"code_challenge_method": "plain"}, "S256"),
        ({"code_challenge": ""}, "code_challenge"),
        ({"redirect_uri": "http://evil.example:10007/login"}, "this machine"),
        ({"redirect_uri": "http://localhost:9999/login"}, "port"),
        ({"redirect_uri": "http://localhost:10011/login"}, "port"),
        ({"redirect_uri": "http://localhost:9999999/login"}, "port"),
        ({"redirect_uri": "ftp://localhost:10007/login"}, "http"),
        ({"client_id": "other"}, "client_id"),
        ({"response_type": "token"}, "response_type"),
        ({"state": ""}, "state"),
        ({"code_challenge": s256("x" * 43) + "\n"}, "code_challenge"),
    ],
)
def test_authorization_request_rules(override: dict[str, str], needle: str) -> None:
    params = {
        "client_id": "terraform-cli",
        "code_challenge": s256(terraform_verifier()),
        "code_challenge_method": "S256",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "state": "s",
        **override,
    }
    with pytest.raises(LoginRejected) as caught:
        parse_authorization(params)
    assert needle in caught.value.detail


@pytest.mark.parametrize(
    "redirect",
    [
        "http://localhost:10000/login",
        "http://localhost:10009/login",
        "http://127.0.0.1:10005/login",
        "http://[::1]:10005/login",
    ],
)
def test_loopback_redirects_accepted(redirect: str) -> None:
    assert request(terraform_verifier(), redirect).redirect_uri == redirect
