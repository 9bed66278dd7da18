"""Logging in against a real OpenID Provider (panva's oidc-provider, run by node).

The browser is played by an httpx client that follows the IdP's redirects with a cookie jar
until they reach cairn's redirect URI, which is never served: its query is handed to
``complete()`` as the callback would.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from cairn.auth.idp import IdpClient, IdpLogin, IdpUnavailable, InvalidIdToken, LoginStateInvalid
from cairn.auth.idp.jws import parse_compact
from cairn.clock import FrozenClock
from cairn.db.engine import Database
from tests.idp.conftest import audit_events
from tests.idp.fakes import SigningKey
from tests.support.oidc_op import OidcOp

ClientFactory = Callable[..., IdpClient]


def login(client: IdpClient, op: OidcOp, resume: str = "resume-me") -> IdpLogin:
    return client.complete(op.authorize(client.begin(resume)))


def details(event: object) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(event.details)  # type: ignore[attr-defined]
    return parsed


def test_login_returns_the_idp_user(
    op_client_factory: ClientFactory, oidc_op: OidcOp, db: Database
) -> None:
    client = op_client_factory()
    url = client.begin("client_id=terraform-cli&state=abc")
    assert url.startswith(oidc_op.issuer + "/auth?")
    assert "code_challenge_method=S256" in url and "plain" not in url

    result = client.complete(oidc_op.authorize(url))

    assert result == IdpLogin(
        issuer=oidc_op.issuer,
        subject="alice",
        email="alice@example.test",
        name="Alice Example",
        groups=["platform", "readers"],
        resume="client_id=terraform-cli&state=abc",
        email_verified=True,
    )
    [event] = audit_events(db)
    assert (event.outcome, event.subject, event.actor_name) == (
        "success",
        "alice",
        "alice@example.test",
    )
    assert "kid_refresh" not in details(event)


def test_replayed_callback_is_refused(
    op_client_factory: ClientFactory, oidc_op: OidcOp, db: Database
) -> None:
    client = op_client_factory()
    callback = oidc_op.authorize(client.begin("r"))
    client.complete(callback)

    with pytest.raises(LoginStateInvalid) as err:
        client.complete(callback)

    assert err.value.status == 400 and err.value.reason == "replayed"
    assert [(e.outcome, details(e).get("reason")) for e in audit_events(db)] == [
        ("success", None),
        ("failure", "replayed"),
    ]


def test_expired_state_is_refused(
    op_client_factory: ClientFactory, oidc_op: OidcOp, clock: FrozenClock
) -> None:
    client = op_client_factory()
    callback = oidc_op.authorize(client.begin("r"))
    clock.advance(timedelta(minutes=10, seconds=1))

    with pytest.raises(LoginStateInvalid) as err:
        client.complete(callback)

    assert err.value.status == 400 and err.value.reason == "expired"


def test_key_rotation_between_begin_and_callback_still_logs_in(
    op_client_factory: ClientFactory, oidc_op: OidcOp, db: Database
) -> None:
    client = op_client_factory()
    login(client, oidc_op)  # warm the JWKS cache with the current key
    fetches = oidc_op.jwks_requests()

    url = client.begin("after-rotation")
    new_kid = oidc_op.rotate()
    result = client.complete(oidc_op.authorize(url))

    assert result.subject == "alice" and result.resume == "after-rotation"
    assert oidc_op.jwks_requests() == fetches + 1  # exactly the one forced refresh
    last = audit_events(db)[-1]
    assert last.outcome == "success"
    assert details(last)["kid"] == new_kid
    assert details(last)["kid_refresh"] == "recovered"
    # The next login needs no refresh at all.
    login(client, oidc_op)
    assert oidc_op.jwks_requests() == fetches + 1
    assert "kid_refresh" not in details(audit_events(db)[-1])


def test_jwks_outage_keeps_known_keys_and_refuses_unknown_ones(
    op_client_factory: ClientFactory, oidc_op: OidcOp, db: Database, clock: FrozenClock
) -> None:
    client = op_client_factory()
    login(client, oidc_op)
    oidc_op.fail_jwks(True)
    try:
        assert login(client, oidc_op).subject == "alice"
        # Past the cache's TTL (5 min: the OP sends no Cache-Control) the refetch fails, and
        # the last good key set still verifies tokens signed with a known key.
        clock.advance(timedelta(minutes=6))
        assert login(client, oidc_op).subject == "alice"

        url = client.begin("r")
        oidc_op.rotate()
        with pytest.raises(IdpUnavailable) as err:
            client.complete(oidc_op.authorize(url))
        assert err.value.status == 503
    finally:
        oidc_op.fail_jwks(False)
    last = audit_events(db)[-1]
    assert last.outcome == "failure"
    assert details(last)["kid_refresh"] == "fetch-failed"
    assert [e.outcome for e in audit_events(db)] == ["success"] * 3 + ["failure"]


def test_forged_kid_storm_costs_at_most_one_jwks_fetch(
    op_client_factory: ClientFactory, oidc_op: OidcOp
) -> None:
    client = op_client_factory()
    login(client, oidc_op)
    fetches = oidc_op.jwks_requests()
    attacker = SigningKey.rsa()
    tokens = [
        attacker.sign({"iss": oidc_op.issuer, "sub": "mallory"}, kid=secrets.token_hex(8))
        for _ in range(1000)
    ]
    jwks_uri = oidc_op.issuer + "/jwks"

    def verify(token: str) -> str:
        jws = parse_compact(token)
        try:
            client.jwks.lookup(oidc_op.issuer, jwks_uri, jws.kid, jws.alg)
        except InvalidIdToken as exc:
            return exc.reason
        return "accepted"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(verify, tokens))

    assert set(outcomes) == {"unknown-kid"}
    assert oidc_op.jwks_requests() - fetches <= 1
    stats = client.jwks.stats(oidc_op.issuer)
    assert stats.forced_refreshes <= 1
    # Real logins are not affected by the storm.
    assert login(client, oidc_op).subject == "alice"
