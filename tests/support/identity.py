"""Helpers for the workload-identity tests.

* minting tokens and calling the admin key API of a real server;
* verifying a token the way a cloud does — `/.well-known/openid-configuration` → `jwks_uri` →
  the key named by the header's `kid` — with two independent libraries (PyJWT, jwcrypto);
* recording every API response a test received (`ResponseLog`), reading the private keys back
  from the database with the server's secret, and looking for their material (the RSA private
  numbers in every encoding a leak could take) in database dumps, logs and responses.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import psycopg
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt
from sqlalchemy import delete, select

from cairn import ids
from cairn.audit.log import Actor
from cairn.crypto import Keyring
from cairn.db.engine import Database, make_engine
from cairn.identity import lifecycle
from cairn.identity.keys import generate, open_private_key, private_key_der
from cairn.identity.model import OidcSigningKey
from cairn.identity.store import SqlKeyStore, to_signing_key
from tests.support.server import CairnServer

DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/.well-known/jwks"
JWKS_JSON = "/.well-known/jwks.json"
ADMIN_KEYS = "/api/cairn/v1/admin/oidc/keys"
ROTATE = "/api/cairn/v1/admin/oidc/keys/rotate"
TRIM = "/api/cairn/v1/admin/oidc/keys/trim"
PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")

# PKCS#8 DER of an RSA key starts `30 82 LL LL` followed by these bytes: version 0 and the
# rsaEncryption AlgorithmIdentifier. Random ciphertext contains this 18-byte run with
# probability ~2^-144, so its presence means plaintext key material.
PKCS8_RSA_HEADER = bytes.fromhex("020100300d06092a864886f70d0101010500")

T = TypeVar("T")


def mint_path(workspace_id: str) -> str:
    return f"/api/cairn/v1/workspaces/{workspace_id}/id-tokens"


def mint(
    client: httpx.Client,
    workspace_id: str,
    *,
    audience: str | list[str] = "sts.amazonaws.com",
    phase: str = "plan",
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {"audience": audience, "run_phase": phase, **extra}
    return client.post(mint_path(workspace_id), json=body)


def minted(client: httpx.Client, workspace_id: str, **kwargs: Any) -> dict[str, Any]:
    """Mint a token (expecting 201) and return the response document."""
    response = mint(client, workspace_id, **kwargs)
    assert response.status_code == 201, f"mint answered {response.status_code}: {response.text}"
    doc: dict[str, Any] = response.json()
    return doc


def minted_with_kid(client: httpx.Client, workspace_id: str, kid: str) -> dict[str, Any] | None:
    """Mint a token; the response document if it was signed by `kid`, else None (polling)."""
    doc = minted(client, workspace_id)
    return doc if header_of(doc["token"])["kid"] == kid else None


def header_of(token: str) -> dict[str, Any]:
    header: dict[str, Any] = jwt.get_unverified_header(token)
    return header


def claims_of(token: str) -> dict[str, Any]:
    """The claims without verifying (for assertions on tokens already verified elsewhere)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def jwks_of(client: httpx.Client) -> dict[str, Any]:
    response = client.get(JWKS)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def kids_of(jwks: dict[str, Any]) -> list[str]:
    return [key["kid"] for key in jwks["keys"]]


def admin_keys(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get(ADMIN_KEYS)
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()["data"]
    return keys


def active_kid(keys: Iterable[dict[str, Any]]) -> str:
    active: list[str] = [key["kid"] for key in keys if key["state"] == "active"]
    (kid,) = active
    return kid


def rotate(client: httpx.Client, mode: str, *, force: bool = False) -> httpx.Response:
    return client.post(ROTATE, json={"mode": mode, "force": force})


# --- verifying like a cloud does ------------------------------------------------------------


@dataclass(frozen=True)
class Verifier:
    """Verifies tokens of one issuer through its discovery document, never trusting the token
    for anything but the `kid`: a fresh discovery and JWKS fetch per call (no caching)."""

    issuer: str
    ssl_context: ssl.SSLContext | None = None

    def discovery(self) -> dict[str, Any]:
        verify: ssl.SSLContext | bool = self.ssl_context or True
        response = httpx.get(self.issuer + DISCOVERY, verify=verify, timeout=10.0)
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        assert doc["issuer"] == self.issuer
        return doc

    def with_pyjwt(self, token: str, audience: str) -> dict[str, Any]:
        """PyJWT: PyJWKClient over the discovered `jwks_uri`, key chosen by `kid`."""
        jwks_uri = self.discovery()["jwks_uri"]
        client = jwt.PyJWKClient(jwks_uri, cache_jwk_set=False, ssl_context=self.ssl_context)
        key = client.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=["RS256"],
            audience=audience,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )
        return claims

    def with_jwcrypto(self, token: str, audience: str) -> dict[str, Any]:
        """jwcrypto: the discovered JWKS as a JWKSet; jwcrypto picks the key by `kid`."""
        jwks_uri = self.discovery()["jwks_uri"]
        verify: ssl.SSLContext | bool = self.ssl_context or True
        response = httpx.get(jwks_uri, verify=verify, timeout=10.0)
        assert response.status_code == 200, response.text
        keyset = jc_jwk.JWKSet.from_json(response.text)
        checked = jc_jwt.JWT(
            jwt=token,
            key=keyset,
            algs=["RS256"],
            expected_type="JWS",
            check_claims={"iss": self.issuer, "aud": audience, "exp": None, "nbf": None},
        )
        claims: dict[str, Any] = json.loads(checked.claims)
        return claims

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """Both libraries must accept the token and read the same claims."""
        by_pyjwt = self.with_pyjwt(token, audience)
        by_jwcrypto = self.with_jwcrypto(token, audience)
        assert by_pyjwt == by_jwcrypto
        return by_pyjwt


def verifier_for(server: CairnServer) -> Verifier:
    context = server.ssl_context()
    return Verifier(server.url, context if isinstance(context, ssl.SSLContext) else None)


# --- responses a test received --------------------------------------------------------------


@dataclass
class ResponseLog:
    """Every response of the clients it hooks into: headers and body, for leak checks."""

    responses: list[bytes] = field(default_factory=list)

    def hook(self, response: httpx.Response) -> None:
        response.read()
        head = "".join(f"{name}: {value}\n" for name, value in response.headers.items())
        self.responses.append(head.encode("latin-1") + b"\n" + response.content)

    def client(self, server: CairnServer, token: str) -> httpx.Client:
        return server.client(token, event_hooks={"response": [self.hook]})


# --- private key material -------------------------------------------------------------------


@dataclass(frozen=True)
class KeyMaterial:
    """The private half of one signing key, in every form a leak could take."""

    kid: str
    der: bytes
    numbers: dict[str, int]

    def raw_forms(self) -> list[tuple[str, bytes]]:
        forms = [("PKCS#8 DER", self.der)]
        for name, value in self.numbers.items():
            forms.append((f"{name} (big-endian bytes)", _octets(value)))
        return forms

    def text_forms(self) -> list[tuple[str, str, bool]]:
        """(what, needle, case_sensitive)."""
        forms: list[tuple[str, str, bool]] = []
        for name, value in self.numbers.items():
            octets = _octets(value)
            forms += [
                (f"{name} base64url", base64.urlsafe_b64encode(octets).decode().rstrip("="), True),
                (f"{name} base64", base64.b64encode(octets).decode().rstrip("="), True),
                (f"{name} hex", octets.hex(), False),
                (f"{name} decimal", str(value), True),
            ]
        der_b64 = base64.b64encode(self.der).decode()
        forms.append(("PKCS#8 DER base64 (PEM body)", der_b64[64:128], True))
        forms.append(("PKCS#8 DER hex", self.der.hex(), False))
        return forms

    def leaks(self, *, text: str = "", data: bytes = b"") -> list[str]:
        """What of this key appears in `text` / `data` (empty: nothing)."""
        found = []
        lowered = text.lower()
        data_text = data.decode("latin-1")
        data_lowered = data_text.lower()
        for what, raw in self.raw_forms():
            if raw in data or raw in text.encode("utf-8", "replace"):
                found.append(f"kid {self.kid}: {what}")
        for what, needle, case_sensitive in self.text_forms():
            haystacks = (text, data_text) if case_sensitive else (lowered, data_lowered)
            target = needle if case_sensitive else needle.lower()
            if any(target in haystack for haystack in haystacks):
                found.append(f"kid {self.kid}: {what}")
        return found


def _octets(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _rsa_numbers(private_key: rsa.RSAPrivateKey) -> dict[str, int]:
    numbers = private_key.private_numbers()
    return {
        "d": numbers.d,
        "p": numbers.p,
        "q": numbers.q,
        "dp": numbers.dmp1,
        "dq": numbers.dmq1,
        "qi": numbers.iqmp,
    }


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'cairn.db'}"


def secret_of(server: CairnServer) -> str:
    """The server's CAIRN_SECRET_KEY, or the secret.key file it created."""
    configured = server.env.get("CAIRN_SECRET_KEY")
    if configured:
        return configured
    return (server.data_dir / "secret.key").read_text().strip()


def private_keys(database_url: str, secret: str) -> list[KeyMaterial]:
    """Open every sealed private key still stored (active and next keys), with cairn's own
    unsealing code and the server's secret, as the key material to look for elsewhere."""
    db = Database(make_engine(database_url, pool_size=1))
    try:
        keyring = Keyring(secret)
        found = []
        with db.unit_of_work() as s:
            rows = list(s.scalars(select(OidcSigningKey).order_by(OidcSigningKey.version)))
        for row in rows:
            if row.sealed_private_key is None:
                continue
            key = to_signing_key(row)
            private_key = open_private_key(keyring, key, row.sealed_private_key)
            assert isinstance(private_key, rsa.RSAPrivateKey), f"{key.alg} key, expected RSA"
            found.append(
                KeyMaterial(
                    kid=key.kid, der=private_key_der(private_key), numbers=_rsa_numbers(private_key)
                )
            )
        return found
    finally:
        db.dispose()


def assert_opaque(kid: str, blob: bytes) -> None:
    """A sealed private key must not look like a key: not DER, not PEM."""
    assert blob[:2] != b"\x30\x82", f"sealed key of {kid} starts like DER (30 82)"
    assert PKCS8_RSA_HEADER not in blob, f"sealed key of {kid} contains a PKCS#8 RSA header"
    assert b"PRIVATE KEY" not in blob, f"sealed key of {kid} contains a PEM label"


# --- database dumps -------------------------------------------------------------------------


def sqlite_dump(path: Path) -> str:
    """`.dump` of a SQLite database (blobs appear as X'…' hex)."""
    with closing(sqlite3.connect(path)) as conn:
        return "\n".join(conn.iterdump())


def sqlite_rows(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql, params).fetchall())


def sqlite_execute(path: Path, sql: str, params: Sequence[Any] = ()) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(sql, params)
        conn.commit()


def postgres_dump(database_url: str) -> tuple[str, bytes]:
    """Every column of every table: as text (repr of each row) and binary values joined."""
    text_parts: list[str] = []
    binary_parts: list[bytes] = []
    with psycopg.connect(database_url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' ORDER BY table_name"
            )
        ]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        binary_parts.append(bytes(value))
                        text_parts.append(bytes(value).hex())
                    else:
                        text_parts.append(str(value))
            text_parts.append(f"-- end of {table}")
    return "\n".join(text_parts), b"\n".join(binary_parts)


def postgres_rows(database_url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return list(conn.execute(sql, params).fetchall())


# --- polling --------------------------------------------------------------------------------


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.02,
    what: str | Callable[[], str] = "",
) -> tuple[T, float]:
    """Call `check` until it returns something other than None; (result, seconds taken).
    `what` (or what it returns, computed on failure) describes the wait in the error."""
    start = time.monotonic()
    while True:
        result = check()
        elapsed = time.monotonic() - start
        if result is not None:
            return result, elapsed
        if elapsed > timeout:
            described = what() if callable(what) else what
            raise AssertionError(f"not within {timeout} s: {described}")
        time.sleep(interval)


# --- seeding key versions (rotation tests) ----------------------------------------------------


def seed_first_version(database_url: str, secret: str, first_version: int) -> list[str]:
    """Replace the key set of a stopped server by a first key set whose active key has version
    `first_version` (and its next key `first_version + 1`), through cairn's own lifecycle and
    store, so a few rotations cross 9 → 10 or 99 → 100. Returns the new kids."""
    db = Database(make_engine(database_url, pool_size=1))
    try:
        with db.unit_of_work(write=True) as s:
            s.execute(delete(OidcSigningKey))
            s.commit()
        now = datetime.now(UTC)
        plan = lifecycle.initial(now, lifecycle.RotationPolicy(), first_version=first_version)
        keys = SqlKeyStore(db, Keyring(secret)).apply(
            plan, actor=Actor(None, "rotation test seed"), at=now
        )
        return [key.kid for key in keys]
    finally:
        db.dispose()


def seed_retired_history(database_url: str, versions: Iterable[int]) -> None:
    """Insert long-retired keys (ES256, no private key, out of the JWKS since an hour) at
    `versions`: the history a server keeps until it is trimmed. The next rotation then numbers
    its new key after the highest of them (new versions are the highest version + 1)."""
    now = datetime.now(UTC)
    db = Database(make_engine(database_url, pool_size=1))
    try:
        with db.unit_of_work(write=True) as s:
            for version in versions:
                made = generate("ES256")
                s.add(
                    OidcSigningKey(
                        id=ids.new_id("signing_key"),
                        version=version,
                        kid=made.kid,
                        alg="ES256",
                        state="retired",
                        public_jwk=json.dumps(dict(made.public_jwk), separators=(",", ":")),
                        sealed_private_key=None,
                        created_at=now - timedelta(days=2),
                        published_at=now - timedelta(days=2),
                        activated_at=now - timedelta(days=1, hours=12),
                        retired_at=now - timedelta(days=1),
                        retire_until=now - timedelta(hours=1),
                    )
                )
            s.commit()
    finally:
        db.dispose()
