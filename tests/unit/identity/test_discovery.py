"""Discovery and JWKS documents: shape, published keys only, ETags, issuer rules."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cairn.identity import discovery, keys, tokens
from cairn.identity.errors import IdentityConfigError
from cairn.identity.keys import SigningKey

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ISSUER = "https://cairn.example.com"


def _key(
    version: int, state: keys.KeyState, alg: keys.Alg = "ES256", **times: datetime
) -> SigningKey:
    generated = keys.generate(alg)
    return SigningKey(
        id=f"key-{version}",
        version=version,
        kid=generated.kid,
        alg=alg,
        state=state,
        created_at=NOW - timedelta(days=100),
        published_at=NOW - timedelta(days=100),
        public_jwk=dict(generated.public_jwk),
        **times,
    )


def test_openid_configuration_shape() -> None:
    doc = discovery.openid_configuration(ISSUER)
    config = json.loads(doc.body)
    assert config == {
        "issuer": ISSUER,
        "jwks_uri": "https://cairn.example.com/.well-known/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
        "claims_supported": [
            *tokens.STANDARD_CLAIMS,
            *tokens.TERRAFORM_CLAIMS,
            tokens.SPECULATIVE_CLAIM,
        ],
    }
    assert b" " not in doc.body  # compact
    assert doc.headers() == {
        "content-type": "application/json",
        "cache-control": "public, max-age=300",
        "etag": doc.etag,
    }


def test_signing_algs_are_filtered_and_ordered() -> None:
    config = json.loads(
        discovery.openid_configuration(ISSUER, signing_algs=["ES256", "RS256"]).body
    )
    assert config["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]
    with pytest.raises(IdentityConfigError):
        discovery.openid_configuration(ISSUER, signing_algs=["EdDSA"])


def test_jwks_holds_only_published_keys_active_first() -> None:
    retired_live = _key(
        3, "retired", activated_at=NOW, retired_at=NOW, retire_until=NOW + timedelta(seconds=1)
    )
    retired_gone = _key(2, "retired", activated_at=NOW, retired_at=NOW, retire_until=NOW)
    revoked = _key(4, "revoked", revoked_at=NOW)
    active = _key(10, "active", activated_at=NOW)
    nxt = _key(11, "next")
    doc = discovery.jwks([retired_gone, nxt, revoked, retired_live, active], NOW)
    kids = [k["kid"] for k in json.loads(doc.body)["keys"]]
    assert kids == [active.kid, nxt.kid, retired_live.kid]
    later = discovery.jwks(
        [retired_gone, nxt, revoked, retired_live, active], NOW + timedelta(seconds=1)
    )
    assert [k["kid"] for k in json.loads(later.body)["keys"]] == [active.kid, nxt.kid]
    assert later.etag != doc.etag


def test_jwks_entries_are_public_jwks() -> None:
    keyset = [_key(1, "active", "RS256", activated_at=NOW), _key(2, "next", "ES256")]
    entries = json.loads(discovery.jwks(keyset, NOW).body)["keys"]
    assert entries == [dict(k.public_jwk) for k in keyset]
    for entry in entries:
        assert entry["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(entry)


def test_etag_is_strong_stable_and_conditional() -> None:
    keyset = [_key(1, "active", activated_at=NOW)]
    a, b = discovery.jwks(keyset, NOW), discovery.jwks(keyset, NOW)
    assert a.body == b.body and a.etag == b.etag
    assert a.etag.startswith('"') and a.etag.endswith('"') and not a.etag.startswith("W/")
    assert a.matches(a.etag)
    assert a.matches(f'"other", {a.etag}')
    assert a.matches(f"W/{a.etag}")  # If-None-Match uses weak comparison (RFC 9110 §13.1.2)
    assert a.matches("*")
    assert not a.matches(None)
    assert not a.matches('"other"')


def test_revoked_key_leaves_at_once() -> None:
    active = _key(1, "active", activated_at=NOW)
    before = json.loads(discovery.jwks([active], NOW).body)["keys"]
    revoked = replace(active, state="revoked", revoked_at=NOW)
    after = json.loads(discovery.jwks([revoked], NOW).body)["keys"]
    assert before and after == []


@pytest.mark.parametrize(
    "url", ["https://cairn.example.com", "https://cairn.example.com/tfc", "https://a.b.c/x/y"]
)
def test_good_issuers(url: str) -> None:
    assert discovery.check_issuer(url) == url


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://cairn.example.com", "https"),
        ("https://cairn.example.com/", "'/'"),
        ("https://cairn.example.com:8443", "port"),
        ("https://cairn.example.com?x", "query"),
        ("https://cairn.example.com#x", "fragment"),
        ("https://user:pw@cairn.example.com", "credentials"),
        ("cairn.example.com", "absolute"),
    ],
)
def test_bad_issuers(url: str, problem: str) -> None:
    with pytest.raises(IdentityConfigError, match=problem):
        discovery.check_issuer(url)


def test_development_issuers_may_use_http_and_a_port() -> None:
    assert discovery.check_issuer("http://localhost:8443", strict=False)
    with pytest.raises(IdentityConfigError):
        discovery.check_issuer("http://localhost:8443/", strict=False)
