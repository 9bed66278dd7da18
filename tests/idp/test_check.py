"""``IdpClient.check()`` at start: settings and the IdP's discovery document (RP-02), each
refusal a ConfigError that names what to change."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.auth.idp import IdpClient, IdpConfigError, IdpSettings, IdpUnreachable
from cairn.auth.idp.settings import is_loopback, make_http_client
from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.db.engine import Database
from cairn.errors import ConfigError
from tests.idp.fakes import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeIdp


def settings(**overrides: Any) -> IdpSettings:
    values: dict[str, Any] = {
        "issuer": "https://idp.example.test",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
    }
    values.update(overrides)
    return IdpSettings(**values)


def check(
    idp: FakeIdp, cfg: IdpSettings, db: Database, keyring: Keyring, clock: FrozenClock
) -> None:
    with idp.client() as http:
        IdpClient(cfg, db, keyring, clock, http).check()


@pytest.fixture
def run(fake_idp: FakeIdp, db: Database, keyring: Keyring, clock: FrozenClock) -> Any:
    def go(cfg: IdpSettings | None = None, **discovery: Any) -> None:
        fake_idp.discovery_extra.update(discovery)
        check(fake_idp, cfg or settings(issuer=fake_idp.issuer), db, keyring, clock)

    return go


def test_a_good_provider_passes(run: Any) -> None:
    run()


@pytest.mark.parametrize(
    ("discovery", "message"),
    [
        ({"id_token_signing_alg_values_supported": ["HS256"]}, "accepts only ES256, RS256"),
        ({"id_token_signing_alg_values_supported": ["HS256", "HS512"]}, "never HS"),
        ({"id_token_signing_alg_values_supported": ["RS256", "none"]}, "'none'"),
        ({"id_token_signing_alg_values_supported": ["PS256"]}, "enable RS256"),
        ({"id_token_signing_alg_values_supported": None}, "id_token_signing_alg_values"),
        ({"id_token_signing_alg_values_supported": "RS256"}, "malformed"),
        ({"issuer": "https://other.example.test"}, "set CAIRN_OIDC_ISSUER to exactly"),
        ({"jwks_uri": "http://idp.example.test/jwks"}, "plain http on a non-loopback"),
        ({"token_endpoint": "http://idp.example.test/token"}, "plain http"),
        ({"authorization_endpoint": None}, "no authorization_endpoint"),
        ({"code_challenge_methods_supported": ["plain"]}, "S256"),
        ({"token_endpoint_auth_methods_supported": ["private_key_jwt"]}, "client_secret_basic"),
    ],
)
def test_unusable_provider_is_refused(run: Any, discovery: dict[str, Any], message: str) -> None:
    with pytest.raises(IdpConfigError) as err:
        run(**discovery)
    assert isinstance(err.value, ConfigError)
    assert message in str(err.value)


def test_hs256_next_to_rs256_is_accepted_with_a_warning(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Keycloak and Auth0 advertise every algorithm they can do, HS256 included. The local
    allow-list still refuses an HS256 token (test_id_token), so the provider is usable."""
    with caplog.at_level(logging.WARNING, logger="cairn.auth.idp"):
        run(id_token_signing_alg_values_supported=["HS256", "RS256", "PS256"])
    assert "symmetric" in caplog.text


@pytest.mark.parametrize(
    "issuer",
    ["http://idp.example.test", "http://10.0.0.5:8080", "http://127.0.0.1.nip.io"],
)
def test_http_issuer_on_a_non_loopback_host_is_refused(
    issuer: str, db: Database, keyring: Keyring, clock: FrozenClock
) -> None:
    idp = FakeIdp(issuer=issuer)
    with pytest.raises(IdpConfigError) as err:
        check(idp, settings(issuer=issuer), db, keyring, clock)
    assert "CAIRN_OIDC_ISSUER" in str(err.value) and "https" in str(err.value)
    assert idp.requests == {}  # refused before any request


@pytest.mark.parametrize(
    "issuer", ["http://127.0.0.1:5556", "http://localhost:5556/realms/x", "http://[::1]:5556"]
)
def test_http_issuer_on_loopback_is_allowed(
    issuer: str, db: Database, keyring: Keyring, clock: FrozenClock
) -> None:
    idp = FakeIdp(issuer=issuer)
    check(idp, settings(issuer=issuer), db, keyring, clock)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_id": ""}, "CAIRN_OIDC_CLIENT_ID"),
        ({"client_secret": ""}, "CAIRN_OIDC_CLIENT_SECRET"),
        ({"scopes": ("email",)}, "'openid'"),
        ({"issuer": "https://idp.example.test?x=1"}, "query or fragment"),
        ({"issuer": "idp.example.test"}, "not an absolute https URL"),
        ({"redirect_uri": "/auth/oidc/callback"}, "redirect URI"),
        ({"ca_file": Path("/nonexistent/ca.pem")}, "CAIRN_OIDC_CA_FILE"),
    ],
)
def test_bad_settings_are_refused(
    overrides: dict[str, Any],
    message: str,
    fake_idp: FakeIdp,
    db: Database,
    keyring: Keyring,
    clock: FrozenClock,
) -> None:
    with pytest.raises(IdpConfigError) as err:
        check(fake_idp, settings(**overrides), db, keyring, clock)
    assert message in str(err.value)


def test_unreachable_idp_is_a_distinct_config_error(
    db: Database, keyring: Keyring, clock: FrozenClock
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as http:
        client = IdpClient(settings(), db, keyring, clock, http)
        with pytest.raises(IdpUnreachable) as err:
            client.check()
    assert "CAIRN_OIDC_ISSUER" in str(err.value)


def test_secret_not_in_repr() -> None:
    cfg = settings()
    assert CLIENT_SECRET not in repr(cfg)
    assert CLIENT_SECRET not in str(cfg)


def test_ca_file_must_be_pem(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(IdpConfigError):
        make_http_client(settings(ca_file=bad))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_discovery_is_rechecked_later_and_a_downgrade_stops_logins(
    fake_idp: FakeIdp, fake_client: IdpClient, clock: FrozenClock
) -> None:
    """RP-02: the algorithm check runs again when discovery is re-read (hourly)."""
    from datetime import timedelta

    from cairn.auth.idp import IdpUnavailable

    fake_client.begin("r")
    fake_idp.discovery_extra["id_token_signing_alg_values_supported"] = ["HS256"]
    clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(IdpUnavailable) as err:
        fake_client.begin("r")
    assert err.value.reason == "discovery-invalid"
