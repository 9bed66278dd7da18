"""The IdP key cache (RP-05..RP-07) against the FakeIdp, counting upstream JWKS requests."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cairn.auth.idp import IdpUnavailable, InvalidIdToken, JwksCache
from cairn.auth.idp.jwks import KeyLookup, cache_ttl
from cairn.auth.idp.jws import parse_jwk
from cairn.clock import FrozenClock
from cairn.identity.keys import public_jwk
from tests.idp.fakes import FakeIdp, SigningKey

JWKS = "/jwks"


@pytest.fixture
def http(fake_idp: FakeIdp) -> Iterator[httpx.Client]:
    with fake_idp.client() as client:
        yield client


@pytest.fixture
def cache(http: httpx.Client, clock: FrozenClock) -> JwksCache:
    return JwksCache(http, clock)


def lookup_fn(cache: JwksCache, idp: FakeIdp) -> Callable[..., KeyLookup]:
    def lookup(kid: str | None, alg: str = "RS256") -> KeyLookup:
        return cache.lookup(idp.issuer, idp.issuer + JWKS, kid, alg)

    return lookup


def reason(fn: Callable[[], object]) -> str:
    try:
        fn()
    except (InvalidIdToken, IdpUnavailable) as exc:
        return exc.reason
    return "ok"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, 300),
        ({"cache-control": "public, max-age=60"}, 300),
        ({"cache-control": "public, max-age=3600"}, 3600),
        ({"cache-control": "max-age=3600", "age": "600"}, 3000),
        ({"cache-control": "max-age=864000"}, 86400),
        ({"cache-control": "no-store"}, 300),
        ({"cache-control": "no-cache, max-age=3600"}, 300),
        ({"cache-control": "max-age=abc"}, 300),
        ({"cache-control": "s-maxage=3600"}, 300),
    ],
)
def test_ttl_from_cache_control_is_clamped(headers: dict[str, str], seconds: int) -> None:
    assert cache_ttl(httpx.Headers(headers)) == timedelta(seconds=seconds)


def test_known_kid_is_served_from_cache_until_the_ttl(
    cache: JwksCache, fake_idp: FakeIdp, clock: FrozenClock
) -> None:
    fake_idp.jwks_cache_control = "public, max-age=7200"
    lookup = lookup_fn(cache, fake_idp)
    for _ in range(100):
        assert lookup(fake_idp.keys[0].kid).refreshed is False
    clock.advance(timedelta(hours=1))
    lookup(fake_idp.keys[0].kid)
    assert fake_idp.requests[JWKS] == 1
    clock.advance(timedelta(hours=1))
    lookup(fake_idp.keys[0].kid)
    assert fake_idp.requests[JWKS] == 2


def test_es256_key_and_alg_matching(cache: JwksCache, fake_idp: FakeIdp) -> None:
    lookup = lookup_fn(cache, fake_idp)
    [key] = lookup(fake_idp.keys[1].kid, "ES256").keys
    assert key.kty == "EC"
    assert len(lookup(None, "RS256").keys) == 1  # no kid: every key that fits the alg
    assert reason(lambda: lookup(fake_idp.keys[1].kid, "RS256")) == "no-matching-key"
    assert fake_idp.requests[JWKS] == 1


def test_rotation_is_picked_up_by_one_forced_refresh(cache: JwksCache, fake_idp: FakeIdp) -> None:
    lookup = lookup_fn(cache, fake_idp)
    lookup(fake_idp.keys[0].kid)
    new = SigningKey.rsa()
    fake_idp.keys.insert(0, new)
    result = lookup(new.kid)
    assert result.refreshed is True and result.keys[0].kid == new.kid
    assert fake_idp.requests[JWKS] == 2
    assert lookup(new.kid).refreshed is False
    assert cache.stats(fake_idp.issuer).forced_refreshes == 1


def test_forged_kids_from_a_cold_cache_cost_one_fetch(cache: JwksCache, fake_idp: FakeIdp) -> None:
    lookup = lookup_fn(cache, fake_idp)
    reasons = {reason(lambda: lookup(secrets.token_hex(8))) for _ in range(1000)}
    assert reasons == {"unknown-kid"}
    assert fake_idp.requests[JWKS] == 1
    assert cache.stats(fake_idp.issuer).local_rejections == 999


def test_concurrent_forged_kids_share_one_fetch(cache: JwksCache, fake_idp: FakeIdp) -> None:
    lookup = lookup_fn(cache, fake_idp)
    lookup(fake_idp.keys[0].kid)
    fake_idp.jwks_delay = 0.2  # concurrent misses arrive while the refresh is in flight
    barrier = threading.Barrier(32)

    def forged(_: int) -> str:
        barrier.wait()
        return reason(lambda: lookup(secrets.token_hex(8)))

    with ThreadPoolExecutor(max_workers=32) as pool:
        reasons = list(pool.map(forged, range(32)))
    assert set(reasons) == {"unknown-kid"}
    assert fake_idp.requests[JWKS] == 2  # warm-up + one shared refresh


def test_concurrent_logins_after_rotation_share_one_fetch_and_all_recover(
    cache: JwksCache, fake_idp: FakeIdp
) -> None:
    lookup = lookup_fn(cache, fake_idp)
    lookup(fake_idp.keys[0].kid)
    new = SigningKey.rsa()
    fake_idp.keys.insert(0, new)
    fake_idp.jwks_delay = 0.2
    barrier = threading.Barrier(16)

    def login(_: int) -> bool:
        barrier.wait()
        return lookup(new.kid).keys[0].kid == new.kid

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert all(pool.map(login, range(16)))
    assert fake_idp.requests[JWKS] == 2


def test_cooldown_then_negative_cache(
    http: httpx.Client, fake_idp: FakeIdp, clock: FrozenClock
) -> None:
    cache = JwksCache(
        http, clock, cooldown=timedelta(seconds=30), negative_ttl=timedelta(minutes=5)
    )
    lookup = lookup_fn(cache, fake_idp)
    lookup(fake_idp.keys[0].kid)
    assert reason(lambda: lookup("forged-1")) == "unknown-kid"
    assert fake_idp.requests[JWKS] == 2
    # Within the cooldown even a real new key waits (fails locally, no fetch).
    new = SigningKey.rsa()
    fake_idp.keys.insert(0, new)
    assert reason(lambda: lookup(new.kid)) == "unknown-kid"
    assert fake_idp.requests[JWKS] == 2
    clock.advance(timedelta(seconds=31))
    # The forged kid is remembered (negative cache): no fetch for it after the cooldown...
    assert reason(lambda: lookup("forged-1")) == "unknown-kid"
    assert fake_idp.requests[JWKS] == 2
    # ...while the real new kid, refused inside the cooldown, now refreshes and verifies.
    assert lookup(new.kid).refreshed is True
    assert fake_idp.requests[JWKS] == 3
    clock.advance(timedelta(minutes=6))
    assert reason(lambda: lookup("forged-1")) == "unknown-kid"
    assert fake_idp.requests[JWKS] == 4  # the negative entry expired


def test_negative_cache_is_bounded(
    http: httpx.Client, fake_idp: FakeIdp, clock: FrozenClock
) -> None:
    cache = JwksCache(http, clock, cooldown=timedelta(0), negative_size=2)
    lookup = lookup_fn(cache, fake_idp)
    lookup(fake_idp.keys[0].kid)
    for kid in ("a", "b", "c"):
        lookup_reason = reason(lambda kid=kid: lookup(kid))  # type: ignore[misc]
        assert lookup_reason == "unknown-kid"
    assert fake_idp.requests[JWKS] == 4
    reason(lambda: lookup("c"))  # still remembered
    assert fake_idp.requests[JWKS] == 4
    reason(lambda: lookup("a"))  # evicted (oldest of three with room for two): fetched again
    assert fake_idp.requests[JWKS] == 5


def test_failed_fetch_keeps_the_last_good_key_set(
    cache: JwksCache, fake_idp: FakeIdp, clock: FrozenClock
) -> None:
    lookup = lookup_fn(cache, fake_idp)
    known = fake_idp.keys[0].kid
    lookup(known)
    fake_idp.jwks_status = 500
    clock.advance(timedelta(minutes=6))  # past the 5-minute TTL
    assert lookup(known).keys[0].kid == known  # refetch failed; last good set used
    assert fake_idp.requests[JWKS] == 2
    for _ in range(50):
        lookup(known)  # no hammering of a failing IdP: retried after the cooldown only
    assert fake_idp.requests[JWKS] == 2
    clock.advance(timedelta(seconds=61))
    # An unknown kid cannot be checked while the IdP is down: 503, not 401.
    assert reason(lambda: lookup("new-kid")) == "jwks-unavailable"
    assert reason(lambda: lookup("other-new-kid")) == "jwks-unavailable"  # cooldown, local
    assert fake_idp.requests[JWKS] == 3  # one attempt for both unknown kids
    assert lookup(known).keys[0].kid == known
    stats = cache.stats(fake_idp.issuer)
    assert stats.failed_fetches >= 2 and stats.fetches == fake_idp.requests[JWKS]
    # The IdP recovers: after the cooldown an unknown kid refreshes again.
    fake_idp.jwks_status = 200
    new = SigningKey.rsa()
    fake_idp.keys.insert(0, new)
    clock.advance(timedelta(seconds=61))
    assert lookup(new.kid).refreshed is True


def test_cold_cache_with_the_idp_down_is_503(cache: JwksCache, fake_idp: FakeIdp) -> None:
    fake_idp.jwks_status = 502
    assert reason(lambda: lookup_fn(cache, fake_idp)(fake_idp.keys[0].kid)) == "jwks-unavailable"


def test_a_jwks_without_usable_keys_is_a_failed_fetch(
    cache: JwksCache, fake_idp: FakeIdp, clock: FrozenClock
) -> None:
    lookup = lookup_fn(cache, fake_idp)
    known = fake_idp.keys[0].kid
    lookup(known)
    hs_only = {"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "hs"}]}
    fake_idp.discovery_extra["jwks_uri"] = None

    def hs_transport(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=hs_only)

    with httpx.Client(transport=httpx.MockTransport(hs_transport)) as http:
        downgraded = JwksCache(http, clock)
        assert reason(lambda: lookup_fn(downgraded, fake_idp)("hs", "RS256")) == "jwks-unusable"


def test_caches_are_per_issuer(cache: JwksCache, fake_idp: FakeIdp) -> None:
    other = "https://other.example.test"
    cache.lookup(fake_idp.issuer, fake_idp.issuer + JWKS, fake_idp.keys[0].kid, "RS256")
    cache.lookup(other, fake_idp.issuer + JWKS, fake_idp.keys[0].kid, "RS256")
    assert fake_idp.requests[JWKS] == 2
    assert cache.stats(other).fetches == 1


def _rsa_jwk(bits: int, **extra: str) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return {**public_jwk(key.public_key()), **extra}


@pytest.mark.parametrize(
    ("member", "usable"),
    [
        (_rsa_jwk(2048, kid="k"), True),
        (_rsa_jwk(2048, kid="k", alg="RS256", use="sig"), True),
        (_rsa_jwk(1024, kid="weak"), False),
        (_rsa_jwk(2048, kid="k", use="enc"), False),
        (_rsa_jwk(2048, kid="k", alg="RS512"), False),
        (_rsa_jwk(2048, kid="k", alg="HS256"), False),
        (_rsa_jwk(2048, kid="k", d="private-part"), False),
        ({"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}, False),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, False),
        ({"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"}, False),
        ({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}, False),  # not on the curve
        ({"kty": "RSA", "n": "!!", "e": "AQAB"}, False),
        ("not-an-object", False),
    ],
)
def test_jwk_members_cairn_will_not_verify_with(member: object, usable: bool) -> None:
    assert (parse_jwk(member) is not None) is usable
