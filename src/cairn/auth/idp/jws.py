"""Compact JWS parsing and signature checks for ID tokens, with a local algorithm allow-list.

Only asymmetric algorithms are ever accepted (RP-02): RS256 and ES256. ``none`` and HS* are
refused before any key is looked up, whatever the token header or the IdP's discovery says
(authlib's habit of trusting the IdP's list is what this avoids). A symmetric JWK (``oct``)
in a JWKS is never a key cairn verifies with.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cairn.auth.idp.errors import InvalidIdToken
from cairn.crypto import b64url_decode

ALLOWED_ALGS: frozenset[str] = frozenset({"RS256", "ES256"})
_KTY_FOR_ALG = {"RS256": "RSA", "ES256": "EC"}
MIN_RSA_BITS = 2048
MAX_TOKEN_CHARS = 64 * 1024  # ID tokens with many groups are large, never this large

PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class PublicJwk:
    """One usable verification key from an IdP's JWKS."""

    kid: str | None
    kty: str
    alg: str | None
    key: PublicKey

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a token signed with ``alg``."""
        return _KTY_FOR_ALG.get(alg) == self.kty and self.alg in (None, alg)


def _int(value: object) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError("missing member")
    return int.from_bytes(b64url_decode(value), "big")


def parse_jwk(obj: object) -> PublicJwk | None:
    """A verification key from one JWKS member, or None when it is not one cairn may use
    (symmetric, encryption-only, an algorithm outside the allow-list, a weak or malformed
    key). Unusable members are skipped, never fatal: a JWKS may hold keys for other uses."""
    if not isinstance(obj, dict):
        return None
    kty, alg, use, kid = obj.get("kty"), obj.get("alg"), obj.get("use"), obj.get("kid")
    if use not in (None, "sig") or (alg is not None and alg not in ALLOWED_ALGS):
        return None
    if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
        return None
    if "d" in obj:  # a private key published by mistake: do not touch it
        return None
    try:
        if kty == "RSA":
            rsa_key = rsa.RSAPublicNumbers(_int(obj.get("e")), _int(obj.get("n"))).public_key()
            if rsa_key.key_size < MIN_RSA_BITS:
                return None
            return PublicJwk(kid=kid, kty="RSA", alg=alg, key=rsa_key)
        if kty == "EC" and obj.get("crv") == "P-256":
            numbers = ec.EllipticCurvePublicNumbers(
                _int(obj.get("x")), _int(obj.get("y")), ec.SECP256R1()
            )
            return PublicJwk(kid=kid, kty="EC", alg=alg, key=numbers.public_key())
    except (ValueError, TypeError, binascii.Error):
        return None
    return None  # "oct" (HS*), OKP, other curves: never


@dataclass(frozen=True)
class CompactJws:
    """A parsed, *unverified* compact JWS. Its repr never shows the token."""

    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        value = self.header.get("alg")
        return value if isinstance(value, str) else ""

    @property
    def kid(self) -> str | None:
        value = self.header.get("kid")
        return value if isinstance(value, str) else None

    def claims(self) -> dict[str, Any]:
        """The payload as a JSON object (only meaningful after the signature verified)."""
        try:
            value = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError):
            raise InvalidIdToken("the ID token's payload is not JSON", reason="malformed") from None
        if not isinstance(value, dict):
            raise InvalidIdToken("the ID token's payload is not a JSON object", reason="malformed")
        return value

    def __repr__(self) -> str:
        return f"CompactJws(alg={self.alg!r}, kid={self.kid!r})"


def parse_compact(token: str) -> CompactJws:
    """Split and decode ``header.payload.signature``; check the header's shape and that its
    algorithm is in the allow-list. Raises InvalidIdToken (never quoting the token)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidIdToken("the IdP returned no usable ID token", reason="malformed")
    parts = token.split(".")
    if len(parts) != 3:
        # Five parts would be an encrypted ID token (JWE), which cairn does not request.
        raise InvalidIdToken("the ID token is not a compact signed JWT", reason="malformed")
    try:
        header = json.loads(b64url_decode(parts[0]))
        payload = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidIdToken(
            "the ID token is not valid base64url/JSON", reason="malformed"
        ) from None
    if not isinstance(header, dict):
        raise InvalidIdToken("the ID token's header is not a JSON object", reason="malformed")
    jws = CompactJws(header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)
    if jws.alg not in ALLOWED_ALGS:
        shown = jws.alg[:20] if jws.alg.isascii() and jws.alg.isprintable() else "?"
        raise InvalidIdToken(
            f"the ID token is signed with {shown or 'no algorithm'!r}; cairn accepts only "
            f"{', '.join(sorted(ALLOWED_ALGS))} (configure the client at the IdP to sign ID "
            "tokens with RS256)",
            reason="alg-not-allowed",
        )
    if "crit" in header:  # RFC 7515 §4.1.11: extensions we do not understand must fail
        raise InvalidIdToken(
            "the ID token's header has critical extensions cairn does not support",
            reason="malformed",
        )
    if "kid" in header and not isinstance(header["kid"], str):
        raise InvalidIdToken("the ID token's 'kid' is not a string", reason="malformed")
    return jws


def verify_signature(jws: CompactJws, key: PublicJwk) -> bool:
    """Whether ``key`` made this signature with the header's algorithm."""
    alg = jws.alg
    if alg not in ALLOWED_ALGS or not key.fits(alg):
        return False
    try:
        if isinstance(key.key, rsa.RSAPublicKey):
            key.key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
        if len(jws.signature) != 64:  # RFC 7518 §3.4: R || S, 32 bytes each for P-256
            return False
        r = int.from_bytes(jws.signature[:32], "big")
        s = int.from_bytes(jws.signature[32:], "big")
        key.key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False
