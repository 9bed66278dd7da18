"""An in-process IdP behind ``httpx.MockTransport`` and a JWT signer that can also make the
tokens a real IdP never should (alg none, HS256, odd headers).

``FakeIdp`` serves discovery, a JWKS (RSA and EC keys) and a token endpoint that checks the
client's Basic credentials and the PKCE verifier against the challenge of the authorization
URL, then answers with whatever ``id_token`` factory the test set. It counts requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from cairn.clock import Clock, SystemClock
from cairn.crypto import b64url
from cairn.identity.keys import public_jwk

ISSUER = "https://idp.example.test"
CLIENT_ID = "cairn-client"
CLIENT_SECRET = "fake-client-secret-0123456789"
REDIRECT_URI = "https://cairn.example.test/auth/oidc/callback"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def sign(
    claims: dict[str, Any],
    *,
    alg: str = "RS256",
    key: PrivateKey | bytes | None = None,
    kid: str | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    """A compact JWS. ``key`` is a private key (RS256/ES256), HMAC key bytes (HS256), or None
    (an empty signature, as with alg none or an unknown alg)."""
    hdr: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        hdr["kid"] = kid
    hdr.update(header or {})
    signing_input = f"{_json(hdr)}.{_json(claims)}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif isinstance(key, bytes):
        signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    else:
        signature = b""
    return f"{signing_input.decode()}.{b64url(signature)}"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: PrivateKey

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or "rsa-" + secrets.token_hex(4), "RS256", key)

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(
            kid or "ec-" + secrets.token_hex(4), "ES256", ec.generate_private_key(ec.SECP256R1())
        )

    def jwk(self) -> dict[str, str]:
        return {
            **public_jwk(self.private.public_key()),
            "kid": self.kid,
            "alg": self.alg,
            "use": "sig",
        }

    def sign(self, claims: dict[str, Any], **kw: Any) -> str:
        kw.setdefault("kid", self.kid)
        return sign(claims, alg=self.alg, key=self.private, **kw)


@dataclass
class Authorization:
    """What the browser was sent to the IdP with (parsed from ``begin()``'s URL)."""

    state: str
    nonce: str
    challenge: str
    params: dict[str, str]


def parse_authorization(url: str) -> Authorization:
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    return Authorization(params["state"], params["nonce"], params["code_challenge"], params)


@dataclass
class FakeIdp:
    issuer: str = ISSUER
    clock: Clock = field(default_factory=SystemClock)
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.rsa(), SigningKey.ec()])
    discovery_extra: dict[str, Any] = field(default_factory=dict)
    jwks_status: int = 200
    jwks_cache_control: str | None = None
    jwks_delay: float = 0.0
    token_status: int = 200
    token_error: str | None = None
    token_transport_error: bool = False
    iss_parameter: bool = True
    # code -> (challenge, nonce) registered by `code_for`
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    id_token: Callable[[str], str] | None = None  # nonce -> token
    access_token: str = "fake-access-token"
    requests: Counter[str] = field(default_factory=Counter)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def signer(self) -> SigningKey:
        return self.keys[0]

    def discovery(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "authorization_response_iss_parameter_supported": self.iss_parameter,
        }
        doc.update(self.discovery_extra)
        return {k: v for k, v in doc.items() if v is not None}

    def claims(self, nonce: str, /, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "user-123",
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "email": "bob@example.test",
            "name": "Bob Example",
            "groups": ["platform", "readers"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def code_for(self, auth: Authorization) -> str:
        """The code the IdP would redirect back with for this authorization."""
        code = "code-" + secrets.token_urlsafe(16)
        self.codes[code] = (auth.challenge, auth.nonce)
        return code

    def callback(self, auth: Authorization) -> dict[str, str]:
        query = {"state": auth.state, "code": self.code_for(auth)}
        if self.iss_parameter:
            query["iss"] = self.issuer
        return query

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=self.transport())

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(urlsplit(self.issuer).path)
        with self._lock:
            self.requests[path] += 1
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.discovery())
        if path == "/jwks":
            if self.jwks_delay:
                time.sleep(self.jwks_delay)
            if self.jwks_status != 200:
                return httpx.Response(self.jwks_status, json={"error": "down"})
            headers = {"Cache-Control": self.jwks_cache_control} if self.jwks_cache_control else {}
            return httpx.Response(200, json={"keys": [k.jwk() for k in self.keys]}, headers=headers)
        if path == "/token":
            return self._token(request)
        return httpx.Response(404)

    def _token(self, request: httpx.Request) -> httpx.Response:
        if self.token_transport_error:
            raise httpx.ConnectError("connection refused", request=request)
        form = dict(parse_qsl(request.content.decode()))
        self.token_requests.append(form)
        if self.token_status != 200:
            return httpx.Response(
                self.token_status, json={"error": self.token_error or "server_error"}
            )
        auth = request.headers.get("authorization", "")
        user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        if (unquote(user), unquote(password)) != (CLIENT_ID, CLIENT_SECRET):
            return httpx.Response(401, json={"error": "invalid_client"})
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None or form.get("redirect_uri") != REDIRECT_URI:
            return httpx.Response(400, json={"error": "invalid_grant"})
        challenge, nonce = entry
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != challenge:
            return httpx.Response(400, json={"error": "invalid_grant"})
        token = self.id_token(nonce) if self.id_token else self.signer.sign(self.claims(nonce))
        return httpx.Response(
            200,
            json={
                "access_token": self.access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": token,
            },
        )
