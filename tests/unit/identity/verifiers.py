"""Independent verifiers, used the way a cloud uses them: discovery → jwks_uri → JWKS → kid.

Each parsed JWKS is cached by its exact bytes, as a verifier caches by ETag.

PyJWT and jwcrypto check ``exp``/``nbf`` against the wall clock, while these tests run on a
FrozenClock that jumps months ahead; so PyJWT's time checks are off and done here against the
frozen ``now``, and jwcrypto is given ``now`` through ``check_claims`` (its documented way).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jwt as pyjwt
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt

from cairn.identity import discovery

Web = Mapping[str, bytes]


def publish(
    issuer: str, jwks: discovery.Document, algs: tuple[str, ...] = ("RS256", "ES256")
) -> dict[str, bytes]:
    """The two documents a verifier fetches, keyed by URL."""
    config = discovery.openid_configuration(issuer, signing_algs=algs)
    return {issuer + discovery.DISCOVERY_PATH: config.body, issuer + discovery.JWKS_PATH: jwks.body}


def fetch_jwks(web: Web, issuer: str) -> bytes:
    config = json.loads(web[issuer + discovery.DISCOVERY_PATH])
    assert config["issuer"] == issuer
    return web[config["jwks_uri"]]


@lru_cache(maxsize=16)
def _pyjwt_keyset(body: bytes) -> pyjwt.PyJWKSet:
    return pyjwt.PyJWKSet.from_json(body.decode())


@lru_cache(maxsize=16)
def _jwcrypto_keyset(body: bytes) -> jc_jwk.JWKSet:
    return jc_jwk.JWKSet.from_json(body)


def verify_pyjwt(
    token: str, web: Web, *, issuer: str, audience: str, now: datetime
) -> dict[str, Any]:
    keyset = _pyjwt_keyset(fetch_jwks(web, issuer))
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = keyset[kid]  # raises KeyError when the kid is not published
    # The algorithm comes from the published key, never from the token's header.
    claims: dict[str, Any] = pyjwt.decode(
        token,
        key,
        algorithms=[key.algorithm_name],
        audience=audience,
        issuer=issuer,
        options={
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"],
        },
    )
    ts = now.timestamp()
    if not claims["nbf"] <= ts < claims["exp"]:
        raise pyjwt.ExpiredSignatureError(f"not valid at {now}")
    return claims


def verify_jwcrypto(
    token: str, web: Web, *, issuer: str, audience: str, now: datetime
) -> dict[str, Any]:
    keyset = _jwcrypto_keyset(fetch_jwks(web, issuer))
    ts = math.floor(now.timestamp())
    checked = jc_jwt.JWT(
        jwt=token,
        key=keyset,
        algs=["RS256", "ES256"],
        expected_type="JWS",
        # exp must be > now (fails when exp < ts + 1), nbf ≤ now; no leeway.
        check_claims={"iss": issuer, "aud": audience, "exp": ts + 1, "nbf": ts},
    )
    claims: dict[str, Any] = json.loads(checked.claims)
    return claims


def verify_both(
    token: str, web: Web, *, issuer: str, audience: str, now: datetime
) -> dict[str, Any]:
    """Verify with both libraries; they must agree on the claims."""
    a = verify_pyjwt(token, web, issuer=issuer, audience=audience, now=now)
    b = verify_jwcrypto(token, web, issuer=issuer, audience=audience, now=now)
    assert a == b
    return a
