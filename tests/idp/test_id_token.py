"""ID-token checks (RP-02, RP-03), one locally signed token per case, through ``complete()``
against the in-process FakeIdp: every case must be refused with its own reason, and none of
them may trigger a JWKS refresh except a genuinely unknown kid."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from cairn.auth.idp import IdpClient, InvalidIdToken
from cairn.auth.idp.claims import at_hash
from cairn.clock import FrozenClock
from cairn.db.engine import Database
from tests.idp.conftest import audit_events
from tests.idp.fakes import CLIENT_ID, CLIENT_SECRET, FakeIdp, SigningKey, parse_authorization, sign

TokenMaker = Callable[[FakeIdp, str, int], str]  # (idp, nonce, now) -> token


def rs(**claims: Any) -> TokenMaker:
    """A token from the IdP's RSA key with these claim overrides (None drops a claim)."""
    return lambda idp, nonce, now: idp.keys[0].sign(idp.claims(nonce, **claims))


def with_times(**offsets: int) -> TokenMaker:
    """Claims at ``now + offset`` seconds for each named time claim."""

    def make(idp: FakeIdp, nonce: str, now: int) -> str:
        times = {name: now + delta for name, delta in offsets.items()}
        return idp.keys[0].sign(idp.claims(nonce, **times))

    return make


@dataclass(frozen=True)
class Case:
    name: str
    token: TokenMaker
    reason: str


CASES = [
    Case("wrong iss", rs(iss="https://evil.example.test"), "wrong-issuer"),
    Case("iss with trailing slash", rs(iss="https://idp.example.test/"), "wrong-issuer"),
    Case("aud without client_id", rs(aud="another-client"), "wrong-audience"),
    Case("aud list without client_id", rs(aud=["a", "b"], azp="a"), "wrong-audience"),
    Case("aud missing", rs(aud=None), "bad-claim"),
    Case("several aud, no azp", rs(aud=[CLIENT_ID, "other"]), "wrong-azp"),
    Case("several aud, azp wrong", rs(aud=[CLIENT_ID, "other"], azp="other"), "wrong-azp"),
    Case("azp wrong with one aud", rs(azp="other"), "wrong-azp"),
    Case("expired", with_times(iat=-600, exp=-61), "expired"),
    Case("exp missing", rs(exp=None), "bad-claim"),
    Case("exp not a number", rs(exp="tomorrow"), "bad-claim"),
    Case("iat in the future beyond skew", with_times(iat=61, exp=600), "issued-in-future"),
    Case("iat missing", rs(iat=None), "bad-claim"),
    Case("iat too old", with_times(iat=-(11 * 60 + 61), exp=600), "too-old"),
    Case("nbf in the future", with_times(nbf=120), "not-yet-valid"),
    Case("nonce mismatch", rs(nonce="someone-elses-nonce"), "nonce-mismatch"),
    Case("nonce missing", rs(nonce=None), "nonce-mismatch"),
    Case("sub missing", rs(sub=None), "bad-claim"),
    Case("sub too long", rs(sub="x" * 256), "bad-claim"),
    Case("at_hash wrong", rs(at_hash=at_hash("another-access-token")), "at-hash-mismatch"),
    Case("groups not a list of strings", rs(groups=[{"id": 1}]), "bad-claim"),
    Case("email not a string", rs(email=["a@b"]), "bad-claim"),
    Case(
        "alg none",
        lambda idp, nonce, now: sign(idp.claims(nonce), alg="none", kid=idp.keys[0].kid),
        "alg-not-allowed",
    ),
    Case(
        "alg HS256 keyed with the client secret",
        lambda idp, nonce, now: sign(idp.claims(nonce), alg="HS256", key=CLIENT_SECRET.encode()),
        "alg-not-allowed",
    ),
    Case(
        "alg HS256 with the RSA key's kid",
        lambda idp, nonce, now: sign(
            idp.claims(nonce), alg="HS256", key=CLIENT_SECRET.encode(), kid=idp.keys[0].kid
        ),
        "alg-not-allowed",
    ),
    Case(
        "unknown alg",
        lambda idp, nonce, now: sign(idp.claims(nonce), alg="XS999", kid=idp.keys[0].kid),
        "alg-not-allowed",
    ),
    Case(
        "RS512 (not allow-listed)",
        lambda idp, nonce, now: sign(idp.claims(nonce), alg="RS512", kid=idp.keys[0].kid),
        "alg-not-allowed",
    ),
    Case(
        "RS256 header over the EC key",
        lambda idp, nonce, now: sign(
            idp.claims(nonce), alg="RS256", key=idp.keys[0].private, kid=idp.keys[1].kid
        ),
        "no-matching-key",
    ),
    Case(
        "bad signature with a known kid",
        lambda idp, nonce, now: SigningKey.rsa(kid=idp.keys[0].kid).sign(idp.claims(nonce)),
        "bad-signature",
    ),
    Case(
        "payload altered after signing",
        lambda idp, nonce, now: _swap_payload(
            idp.keys[0].sign(idp.claims(nonce)), idp.claims(nonce, sub="admin")
        ),
        "bad-signature",
    ),
    Case(
        "critical header extension",
        lambda idp, nonce, now: idp.keys[0].sign(idp.claims(nonce), header={"crit": ["exp"]}),
        "malformed",
    ),
    Case("not a JWT", lambda idp, nonce, now: "not-a-jwt", "malformed"),
    Case(
        "encrypted (JWE) shape",
        lambda idp, nonce, now: "a.b.c.d.e",
        "malformed",
    ),
]


def _swap_payload(token: str, claims: dict[str, Any]) -> str:
    from cairn.crypto import b64url

    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


def run_login(client: IdpClient, idp: FakeIdp, clock: FrozenClock, maker: TokenMaker) -> Any:
    auth = parse_authorization(client.begin("resume"))
    now = int(clock.now().timestamp())
    idp.id_token = lambda nonce: maker(idp, nonce, now)
    return client.complete(idp.callback(auth))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_id_token_is_refused(
    case: Case, fake_client: IdpClient, fake_idp: FakeIdp, clock: FrozenClock, db: Database
) -> None:
    run_login(fake_client, fake_idp, clock, rs())  # warm up: the key set is cached
    fetches = fake_idp.requests["/jwks"]

    with pytest.raises(InvalidIdToken) as err:
        run_login(fake_client, fake_idp, clock, case.token)

    assert err.value.status == 401
    assert err.value.reason == case.reason
    assert fake_idp.requests["/jwks"] == fetches, "only an unknown kid may refresh the JWKS"
    event = audit_events(db)[-1]
    assert event.outcome == "failure"
    assert json.loads(event.details)["reason"] == case.reason
    assert "kid_refresh" not in json.loads(event.details)


def test_good_tokens_are_accepted(
    fake_client: IdpClient, fake_idp: FakeIdp, clock: FrozenClock
) -> None:
    """Positive controls for the cases above: each shape a real IdP may send."""
    ok = [
        rs(),
        rs(aud=[CLIENT_ID, "other"], azp=CLIENT_ID),
        rs(azp=CLIENT_ID),
        rs(at_hash=at_hash(fake_idp.access_token)),
        rs(groups="solo"),
        rs(groups=None, email=None, name=None, preferred_username="bob"),
        with_times(iat=59, exp=600),  # inside the 60 s skew
        with_times(iat=-650, exp=-59),  # just inside the age window and exp skew
        lambda idp, nonce, now: idp.keys[1].sign(idp.claims(nonce)),  # ES256
        lambda idp, nonce, now: sign(idp.claims(nonce), key=idp.keys[0].private),  # no kid
    ]
    results = [run_login(fake_client, fake_idp, clock, maker) for maker in ok]
    assert all(r.subject == "user-123" for r in results)
    assert results[4].groups == ["solo"]
    assert (results[5].groups, results[5].email, results[5].name) == ([], "", "")
    assert results[5].username == "bob" and results[0].username is None


def test_clock_skew_and_token_age_are_configurable(
    fake_idp: FakeIdp, fake_settings: Any, db: Database, keyring: Any, clock: FrozenClock
) -> None:
    with fake_idp.client() as http:
        strict = IdpClient(
            fake_settings, db, keyring, clock, http, leeway=timedelta(0), max_token_age=timedelta(0)
        )
        with pytest.raises(InvalidIdToken) as err:
            run_login(strict, fake_idp, clock, with_times(iat=-5, exp=600))
        assert err.value.reason == "too-old"
