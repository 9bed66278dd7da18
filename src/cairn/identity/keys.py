"""Signing keys: generation, public JWKs, RFC 7638 thumbprints, sealing, and key metadata.

Two kinds of object, kept apart on purpose:

* ``SigningKey`` is the metadata of one key (version, kid, state, timestamps, public JWK). It is
  what the lifecycle policy, the JWKS builder, the admin API and the logs handle. It holds no
  private material, so it can be printed, listed and cached freely.
* ``GeneratedKey`` (a fresh key pair) and the private keys returned by ``open_private_key`` hold
  the private key; their reprs are redacted.

The ``kid`` is the RFC 7638 JWK thumbprint of the public key: stable, opaque, and never an
ordering (TFE's verifier breakage came from ordering keys by their version as text). The
private key is stored as PKCS#8 DER sealed with AES-256-GCM (``cairn.crypto.Keyring``) with the
kid as associated data, so a sealed key copied to another row does not open.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cairn.clock import iso8601
from cairn.crypto import Keyring, b64url
from cairn.identity.errors import KeyMaterialError, KeySetCorrupt

Alg = Literal["RS256", "ES256"]
KeyState = Literal["next", "active", "retired", "revoked"]
ALGS: tuple[Alg, ...] = get_args(Alg)
STATES: tuple[KeyState, ...] = get_args(KeyState)

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

RSA_BITS = 2048
RSA_EXPONENT = 65537
_P256_BYTES = 32

# RFC 7638 §3.2: the thumbprint hashes only the required members, in lexicographic order.
_REQUIRED_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def as_alg(value: str) -> Alg:
    """Narrow a stored string to ``Alg`` (for rows read back from the database)."""
    for alg in ALGS:
        if value == alg:
            return alg
    raise KeyMaterialError(
        f"unsupported signing algorithm {value!r}; cairn signs with RS256 or ES256"
    )


def as_state(value: str) -> KeyState:
    """Narrow a stored string to ``KeyState`` (for rows read back from the database)."""
    for state in STATES:
        if value == state:
            return state
    raise KeySetCorrupt(f"unknown signing-key state {value!r}")


# --- thumbprints and JWKs ---------------------------------------------------------------------


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint of a public JWK: base64url (no padding) of the SHA-256 of its
    required members serialised in lexicographic order without whitespace.

    Raises KeyMaterialError for an unsupported ``kty``, a missing member, or a member that is not
    base64url without padding (RFC 7518 §6: padding is not allowed)."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _REQUIRED_MEMBERS:
        raise KeyMaterialError(f"JWK kty {kty!r} is not supported (RSA or EC)")
    members: dict[str, str] = {}
    for name in _REQUIRED_MEMBERS[kty]:
        value = jwk.get(name)
        if not isinstance(value, str) or not value:
            raise KeyMaterialError(f"{kty} JWK lacks its {name!r} member")
        if name not in ("kty", "crv") and not _B64URL.match(value):
            raise KeyMaterialError(
                f"JWK member {name!r} is not base64url without padding (RFC 7518 §6)"
            )
        members[name] = value
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _uint(value: int, length: int | None = None) -> str:
    # RFC 7518 §6.3.1 (n, e): minimal big-endian octets; §6.2.1 (x, y): full coordinate length.
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The public JWK published in the JWKS: kty, use=sig, alg, kid (thumbprint) and n/e or
    crv/x/y, all base64url without padding."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        members = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
        alg: Alg = "RS256"
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
        public_key.curve, ec.SECP256R1
    ):
        ec_numbers = public_key.public_numbers()
        members = {
            "kty": "EC",
            "crv": "P-256",
            "x": _uint(ec_numbers.x, _P256_BYTES),
            "y": _uint(ec_numbers.y, _P256_BYTES),
        }
        alg = "ES256"
    else:
        raise KeyMaterialError("only RSA and P-256 public keys can be published")
    return {"kty": members["kty"], "use": "sig", "alg": alg, "kid": thumbprint(members)} | {
        k: v for k, v in members.items() if k != "kty"
    }


def alg_of(private_key: PrivateKey) -> Alg:
    """The JWS algorithm a private key signs with; refuses keys cairn does not issue."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < RSA_BITS:
            raise KeyMaterialError(f"RSA key of {private_key.key_size} bits; at least {RSA_BITS}")
        return "RS256"
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
        private_key.curve, ec.SECP256R1
    ):
        return "ES256"
    raise KeyMaterialError("private key is neither RSA nor EC P-256")


# --- key pairs --------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class GeneratedKey:
    """A fresh key pair: the public JWK to store in clear and the private key to seal."""

    alg: Alg
    kid: str
    public_jwk: Mapping[str, str]
    private_key: PrivateKey = field(compare=False)

    def private_der(self) -> bytes:
        """The private key as unencrypted PKCS#8 DER: only ever passed to ``Keyring.seal``."""
        return private_key_der(self.private_key)

    def __repr__(self) -> str:
        return f"GeneratedKey(alg={self.alg!r}, kid={self.kid!r}, private_key=<redacted>)"


def generate(alg: Alg = "RS256") -> GeneratedKey:
    """A new signing key pair: RSA-2048 with e=65537 for RS256, P-256 for ES256."""
    private_key: PrivateKey
    if alg == "RS256":
        private_key = rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS)
    elif alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise KeyMaterialError(f"unsupported signing algorithm {alg!r}")
    return from_private_key(private_key)


def from_private_key(private_key: PrivateKey) -> GeneratedKey:
    """Wrap an existing private key (an imported key, or one opened from storage)."""
    jwk = public_jwk(private_key.public_key())
    return GeneratedKey(
        alg=alg_of(private_key), kid=jwk["kid"], public_jwk=jwk, private_key=private_key
    )


def private_key_der(private_key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER; confidentiality comes from sealing it, never from a password."""
    return private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(der: bytes, *, authenticated: bool = False) -> PrivateKey:
    """Load PKCS#8 DER back; only RSA (≥ 2048 bits) and EC P-256 keys are accepted.

    ``authenticated``: the bytes were just opened from AES-GCM under CAIRN_SECRET_KEY, so they
    are a key cairn generated itself; OpenSSL's RSA consistency check (about 25 ms per key) is
    then skipped. Never set it for a key from anywhere else."""
    try:
        key = serialization.load_der_private_key(
            der, password=None, unsafe_skip_rsa_key_validation=authenticated
        )
    except (ValueError, TypeError):
        raise KeyMaterialError("private key is not valid PKCS#8 DER") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyMaterialError("private key is neither RSA nor EC P-256")
    alg_of(key)
    return key


# --- sealing ----------------------------------------------------------------------------------


def sealing_aad(kid: str) -> str:
    """Associated data binding a sealed private key to its kid (and to this purpose)."""
    return f"oidc-signing-key:{kid}"


def seal_private_key(keyring: Keyring, key: GeneratedKey) -> bytes:
    """The private key sealed for storage (AES-256-GCM, kid as associated data)."""
    return keyring.seal(key.private_der(), aad=sealing_aad(key.kid))


def open_private_key(keyring: Keyring, key: SigningKey, sealed: bytes) -> PrivateKey:
    """Open a sealed private key stored for ``key``.

    Raises SealError when the value was altered, belongs to another kid, or CAIRN_SECRET_KEY is
    wrong; KeyMaterialError when it opens but its public half is not ``key``'s (both messages
    name only the kid)."""
    der = keyring.open(sealed, aad=sealing_aad(key.kid))
    private_key = load_private_key(der, authenticated=True)
    if public_jwk(private_key.public_key())["kid"] != key.kid or alg_of(private_key) != key.alg:
        raise KeyMaterialError(
            f"the private key stored for kid {key.kid} does not match its public key; "
            "the row was altered"
        )
    return private_key


# --- metadata ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    """Metadata of one signing key: everything but the private key.

    ``version`` is an integer, only ever compared as one; selection is by ``state``, never by
    "highest version". Timestamps are timezone-aware UTC:

    * ``published_at``: when the key entered the JWKS (at creation, as ``next`` or ``active``);
    * ``activated_at``: when it started signing;
    * ``retired_at`` / ``retire_until``: when it stopped signing / when it leaves the JWKS;
    * ``revoked_at``: when it was withdrawn at once (emergency rotation); never published again.

    ``public_jwk`` is the JWK served in the JWKS; construction checks that its thumbprint is
    ``kid`` and that it has no private members, so a damaged row is never published.
    """

    id: str
    version: int
    kid: str
    alg: Alg
    state: KeyState
    created_at: datetime
    published_at: datetime | None = None
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    retire_until: datetime | None = None
    revoked_at: datetime | None = None
    public_jwk: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        where = f"signing key {self.id!r}"
        # bool is an int subclass; a str version is exactly the TFE bug ("10" < "9").
        if type(self.version) is not int or self.version < 1:
            raise KeySetCorrupt(f"{where}: version {self.version!r} is not a positive integer")
        if self.alg not in ALGS:
            raise KeySetCorrupt(f"{where}: unsupported algorithm {self.alg!r}")
        if self.state not in STATES:
            raise KeySetCorrupt(f"{where}: unknown state {self.state!r}")
        for name in ("created_at", "published_at", "activated_at", "retired_at", "retire_until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise KeySetCorrupt(f"{where}: {name} is not timezone-aware")
        if self.revoked_at is not None and self.revoked_at.tzinfo is None:
            raise KeySetCorrupt(f"{where}: revoked_at is not timezone-aware")
        needs = {
            "next": ("published_at",),
            "active": ("published_at", "activated_at"),
            "retired": ("published_at", "retired_at", "retire_until"),
            "revoked": ("revoked_at",),
        }[self.state]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise KeySetCorrupt(f"{where}: state {self.state} without {', '.join(missing)}")
        if any(name in self.public_jwk for name in ("d", "p", "q", "dp", "dq", "qi")):
            raise KeySetCorrupt(f"{where}: public JWK contains private members")
        try:
            matches = thumbprint(self.public_jwk) == self.kid
        except KeyMaterialError as exc:
            raise KeySetCorrupt(f"{where}: public JWK is malformed: {exc}") from None
        if not matches or self.public_jwk.get("kid") != self.kid:
            raise KeySetCorrupt(f"{where}: public JWK is not the key of kid {self.kid}")
        if self.public_jwk.get("alg") != self.alg or self.public_jwk.get("use") != "sig":
            raise KeySetCorrupt(f"{where}: public JWK does not say use=sig, alg={self.alg}")

    def is_published(self, now: datetime) -> bool:
        """In the JWKS at ``now``: next, active, or retired until ``retire_until``."""
        if self.state in ("next", "active"):
            return True
        return self.state == "retired" and self.retire_until is not None and now < self.retire_until

    def describe(self) -> dict[str, Any]:
        """Metadata for the admin API and the CLI (never key material, not even public)."""
        return {
            "kid": self.kid,
            "version": self.version,
            "alg": self.alg,
            "state": self.state,
            "created-at": iso8601(self.created_at),
            "published-at": iso8601(self.published_at),
            "activated-at": iso8601(self.activated_at),
            "retired-at": iso8601(self.retired_at),
            "retire-until": iso8601(self.retire_until),
            "revoked-at": iso8601(self.revoked_at),
        }
