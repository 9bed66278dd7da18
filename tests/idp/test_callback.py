"""The callback around the ID token (RP-01, RP-04, RP-09): pending logins, the IdP's answer,
the token request, races, and that no secret reaches a log line, an audit event or the
database in clear."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cairn.auth.idp import (
    IdpClient,
    IdpLoginRefused,
    IdpSettings,
    IdpUnavailable,
    LoginStateInvalid,
)
from cairn.auth.model import LoginState
from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.db.engine import Database
from cairn.errors import ApiError, BadRequest
from tests.idp.conftest import audit_events
from tests.idp.fakes import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeIdp, parse_authorization
from tests.support.oidc_op import OidcOp


def test_begin_builds_a_pkce_s256_request(fake_client: IdpClient, db: Database) -> None:
    auth = parse_authorization(fake_client.begin("resume"))
    assert auth.params == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": auth.state,
        "nonce": auth.nonce,
        "code_challenge": auth.challenge,
        "code_challenge_method": "S256",
    }
    # 32 random bytes each, base64url without padding.
    assert len(auth.state) == len(auth.nonce) == 43
    assert auth.state != auth.nonce
    with db.unit_of_work() as s:
        [row] = s.scalars(select(LoginState)).all()
    assert (row.expires_at - row.created_at).total_seconds() == 600
    assert row.used_at is None and row.resume == "resume"


def test_begin_keeps_the_authorization_endpoints_own_query(
    fake_idp: FakeIdp,
    fake_settings: IdpSettings,
    db: Database,
    keyring: Keyring,
    clock: FrozenClock,
) -> None:
    fake_idp.discovery_extra["authorization_endpoint"] = fake_idp.issuer + "/authorize?p=B2C_1"
    with fake_idp.client() as http:
        client = IdpClient(fake_settings, db, keyring, clock, http)
        url = client.begin("r")
    assert url.startswith(fake_idp.issuer + "/authorize?p=B2C_1&response_type=code&")


def test_resume_longer_than_the_column_is_refused(fake_client: IdpClient) -> None:
    with pytest.raises(BadRequest):
        fake_client.begin("x" * 2001)


def test_login_completes_and_the_token_request_carries_pkce_and_client_auth(
    fake_client: IdpClient, fake_idp: FakeIdp, db: Database
) -> None:
    auth = parse_authorization(fake_client.begin("resume-here"))
    login = fake_client.complete(fake_idp.callback(auth), source_address="203.0.113.9")

    assert (login.subject, login.email, login.name) == (
        "user-123",
        "bob@example.test",
        "Bob Example",
    )
    assert login.groups == ["platform", "readers"] and login.resume == "resume-here"
    [form] = fake_idp.token_requests
    assert form["grant_type"] == "authorization_code" and form["redirect_uri"] == REDIRECT_URI
    assert "client_secret" not in form  # sent as HTTP Basic, which the fake checked
    [event] = audit_events(db)
    assert (event.outcome, event.subject, event.source_address) == (
        "success",
        "user-123",
        "203.0.113.9",
    )
    assert json.loads(event.details)["groups"] == ["platform", "readers"]


def test_client_secret_post_when_basic_is_not_offered(
    fake_idp: FakeIdp,
    fake_settings: IdpSettings,
    db: Database,
    keyring: Keyring,
    clock: FrozenClock,
) -> None:
    fake_idp.discovery_extra["token_endpoint_auth_methods_supported"] = ["client_secret_post"]
    with fake_idp.client() as http:
        client = IdpClient(fake_settings, db, keyring, clock, http)
        auth = parse_authorization(client.begin("r"))
        with pytest.raises(IdpUnavailable) as err:  # the fake insists on Basic
            client.complete(fake_idp.callback(auth))
    assert err.value.reason == "client-rejected"
    [form] = fake_idp.token_requests
    assert (form["client_id"], form["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)


@pytest.mark.parametrize(
    ("query", "reason"),
    [({}, "missing"), ({"state": "made-up", "code": "c"}, "unknown")],
)
def test_missing_or_unknown_state(
    fake_client: IdpClient, db: Database, query: dict[str, str], reason: str
) -> None:
    with pytest.raises(LoginStateInvalid) as err:
        fake_client.complete(query)
    assert (err.value.status, err.value.reason) == (400, reason)
    assert audit_events(db) == []  # a made-up state is not a login attempt


def test_state_is_single_use_even_when_the_first_callback_fails(
    fake_client: IdpClient, fake_idp: FakeIdp
) -> None:
    auth = parse_authorization(fake_client.begin("r"))
    callback = fake_idp.callback(auth)
    with pytest.raises(IdpLoginRefused):
        fake_client.complete({**callback, "iss": "https://evil.example.test"})
    with pytest.raises(LoginStateInvalid) as err:
        fake_client.complete(callback)
    assert err.value.reason == "replayed"


def test_idp_error_answer(fake_client: IdpClient, fake_idp: FakeIdp, db: Database) -> None:
    auth = parse_authorization(fake_client.begin("r"))
    with pytest.raises(IdpLoginRefused) as err:
        fake_client.complete(
            {"state": auth.state, "iss": fake_idp.issuer, "error": "access_denied"}
        )
    assert err.value.status == 400 and "access_denied" in err.value.detail
    assert json.loads(audit_events(db)[-1].details)["reason"] == "idp-error"


def test_idp_error_text_is_not_echoed_when_odd(fake_client: IdpClient, fake_idp: FakeIdp) -> None:
    auth = parse_authorization(fake_client.begin("r"))
    with pytest.raises(IdpLoginRefused) as err:
        fake_client.complete(
            {"state": auth.state, "iss": fake_idp.issuer, "error": '<script>"x"</script>'}
        )
    assert "script" not in err.value.detail


@pytest.mark.parametrize("iss", [None, "https://evil.example.test", ""])
def test_rfc9207_iss_parameter_is_required_and_checked(
    fake_client: IdpClient, fake_idp: FakeIdp, iss: str | None
) -> None:
    auth = parse_authorization(fake_client.begin("r"))
    callback = fake_idp.callback(auth)
    if iss is None:
        del callback["iss"]
    else:
        callback["iss"] = iss
    with pytest.raises(IdpLoginRefused) as err:
        fake_client.complete(callback)
    assert err.value.reason == "wrong-iss-parameter" and err.value.status == 400
    assert fake_idp.token_requests == []  # refused before the code was redeemed


def test_iss_parameter_optional_when_not_advertised(
    fake_idp: FakeIdp,
    fake_settings: IdpSettings,
    db: Database,
    keyring: Keyring,
    clock: FrozenClock,
) -> None:
    fake_idp.iss_parameter = False
    with fake_idp.client() as http:
        client = IdpClient(fake_settings, db, keyring, clock, http)
        auth = parse_authorization(client.begin("r"))
        callback = fake_idp.callback(auth)
        assert "iss" not in callback
        assert client.complete(callback).subject == "user-123"
        # ...but when present it must still match.
        auth = parse_authorization(client.begin("r"))
        with pytest.raises(IdpLoginRefused):
            client.complete({**fake_idp.callback(auth), "iss": "https://evil.example.test"})


def test_missing_code(fake_client: IdpClient, fake_idp: FakeIdp) -> None:
    auth = parse_authorization(fake_client.begin("r"))
    with pytest.raises(IdpLoginRefused) as err:
        fake_client.complete({"state": auth.state, "iss": fake_idp.issuer})
    assert err.value.reason == "missing-code"


def test_oversized_parameters_are_refused(fake_client: IdpClient) -> None:
    with pytest.raises(BadRequest):
        fake_client.complete({"state": "s" * 513})


def test_wrong_pkce_verifier_is_refused_by_the_idp(
    fake_client: IdpClient, fake_idp: FakeIdp
) -> None:
    auth = parse_authorization(fake_client.begin("r"))
    fake_idp.codes["stolen"] = ("a-different-challenge", auth.nonce)
    with pytest.raises(IdpLoginRefused) as err:
        fake_client.complete({"state": auth.state, "code": "stolen", "iss": fake_idp.issuer})
    assert err.value.reason == "code-rejected"


@pytest.mark.parametrize(
    ("status", "error", "transport_error", "expected", "reason"),
    [
        (400, "invalid_grant", False, IdpLoginRefused, "code-rejected"),
        (400, "invalid_request", False, IdpLoginRefused, "token-request-refused"),
        (401, "invalid_client", False, IdpUnavailable, "client-rejected"),
        (500, None, False, IdpUnavailable, "token-endpoint-unavailable"),
        (503, None, False, IdpUnavailable, "token-endpoint-unavailable"),
        (200, None, True, IdpUnavailable, "token-endpoint-unavailable"),
    ],
)
def test_token_endpoint_failures(
    fake_client: IdpClient,
    fake_idp: FakeIdp,
    status: int,
    error: str | None,
    transport_error: bool,
    expected: type[ApiError],
    reason: str,
) -> None:
    auth = parse_authorization(fake_client.begin("r"))
    fake_idp.token_status, fake_idp.token_error = status, error
    fake_idp.token_transport_error = transport_error
    with pytest.raises(expected) as err:
        fake_client.complete(fake_idp.callback(auth))
    assert getattr(err.value, "reason", None) == reason


def test_unreachable_idp_at_begin_is_503(
    fake_settings: IdpSettings, db: Database, keyring: Keyring, clock: FrozenClock
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as http:
        client = IdpClient(fake_settings, db, keyring, clock, http)
        with pytest.raises(IdpUnavailable) as err:
            client.begin("r")
    assert err.value.status == 503


def test_two_callbacks_with_one_state_exactly_one_wins(
    fake_client: IdpClient, fake_idp: FakeIdp
) -> None:
    auth = parse_authorization(fake_client.begin("r"))
    callback = fake_idp.callback(auth)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        try:
            fake_client.complete(callback)
            result = "won"
        except LoginStateInvalid as exc:
            result = exc.reason
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["replayed"] * 7 + ["won"]
    assert len(fake_idp.token_requests) == 1


def test_changed_secret_key_between_begin_and_callback(
    fake_idp: FakeIdp,
    fake_settings: IdpSettings,
    db: Database,
    keyring: Keyring,
    clock: FrozenClock,
) -> None:
    with fake_idp.client() as http:
        auth = parse_authorization(IdpClient(fake_settings, db, keyring, clock, http).begin("r"))
        other = IdpClient(fake_settings, db, Keyring("another-master-key-" + "x" * 20), clock, http)
        with pytest.raises(LoginStateInvalid):  # the state hash no longer matches any row
            other.complete(fake_idp.callback(auth))


def test_no_secret_in_logs_audit_or_database(
    op_client_factory: object,
    oidc_op: OidcOp,
    db: Database,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RP-09 against the real OP: capture every secret of a login, then grep for them."""
    seen: dict[str, str] = {}

    def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/token"):
            form = dict(httpx.QueryParams(request.content.decode()))
            seen["code_verifier"] = form["code_verifier"]

    def on_response(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/token"):
            response.read()
            body = response.json()
            seen["id_token"], seen["access_token"] = body["id_token"], body["access_token"]

    assert callable(op_client_factory)
    client: IdpClient = op_client_factory(
        event_hooks={"request": [on_request], "response": [on_response]}
    )
    caplog.set_level(logging.DEBUG)
    url = client.begin("resume")
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    auth = parse_authorization(url)
    caplog.set_level(logging.WARNING)  # the test's own browser logs the URLs it follows
    callback = oidc_op.authorize(url)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    login = client.complete(callback)
    assert login.subject == "alice"
    # a failure path too (replay), which logs a warning and writes an audit event
    with pytest.raises(LoginStateInvalid):
        client.complete(callback)
    logged += caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    assert "IdP login" in logged and "httpcore" in logged  # the capture did capture

    secrets_ = {
        "state": auth.state,
        "nonce": auth.nonce,
        "code": callback["code"],
        "client_secret": oidc_op.client_secret,
        **seen,
    }
    assert set(secrets_) >= {"code_verifier", "id_token", "access_token"}
    audited = json.dumps([(e.actor_name, e.subject, e.details) for e in audit_events(db)])
    db.dispose()
    dump = b"".join(p.read_bytes() for p in tmp_path.glob("cairn.db*"))
    for name, value in secrets_.items():
        assert value not in logged, f"{name} was logged"
        assert value not in audited, f"{name} was audited"
        assert value.encode() not in dump, f"{name} is in the database in clear"
    assert repr(client.settings).count(oidc_op.client_secret) == 0
