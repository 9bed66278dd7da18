"""The public documents verifiers fetch: OpenID discovery and the JWKS, pre-serialised.

Both are built once per key-set change and served as bytes from memory with a strong ETag and
``Cache-Control: public, max-age=300`` (reference JW-03, JW-04, JW-06): no database query and no
JSON encoding per request. Rebuild the JWKS on every rotation notice and at
``lifecycle.jwks_valid_until`` (when a retired key's retention ends).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cairn.crypto import b64url
from cairn.identity.errors import IdentityConfigError
from cairn.identity.keys import ALGS, SigningKey
from cairn.identity.lifecycle import DEFAULT_JWKS_MAX_AGE, published
from cairn.identity.tokens import SPECULATIVE_CLAIM, STANDARD_CLAIMS, TERRAFORM_CLAIMS

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks"  # HCP Terraform's path; named by jwks_uri
JWKS_JSON_PATH = "/.well-known/jwks.json"  # the same document, for tools that expect .json


def cache_control(max_age: timedelta = DEFAULT_JWKS_MAX_AGE) -> str:
    return f"public, max-age={int(max_age.total_seconds())}"


@dataclass(frozen=True)
class Document:
    """A pre-serialised JSON response: its bytes and their strong ETag."""

    body: bytes
    etag: str
    max_age: timedelta = DEFAULT_JWKS_MAX_AGE

    @classmethod
    def of(cls, value: Mapping[str, Any], max_age: timedelta = DEFAULT_JWKS_MAX_AGE) -> Document:
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return cls(body=body, etag=strong_etag(body), max_age=max_age)

    def headers(self) -> dict[str, str]:
        """Response headers, to send as they are."""
        return {
            "content-type": "application/json",
            "cache-control": cache_control(self.max_age),
            "etag": self.etag,
        }

    def matches(self, if_none_match: str | None) -> bool:
        """True if a request's ``If-None-Match`` names this body (answer 304 then)."""
        if not if_none_match:
            return False
        if if_none_match.strip() == "*":
            return True
        tags = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
        return self.etag in tags


def strong_etag(body: bytes) -> str:
    """A strong ETag: the quoted base64url SHA-256 of the exact bytes served."""
    return f'"{b64url(hashlib.sha256(body).digest())}"'


def check_issuer(url: str, *, strict: bool = True) -> str:
    """Validate the issuer (cairn's public URL) as clouds require it (reference JW-05):
    ``https://host[/path]`` with no trailing ``/``, query, fragment or credentials, and, when
    ``strict``, no port and no plain http. Returns it unchanged: ``iss`` must be byte-identical.
    ``strict=False`` allows http and a port, for development servers no cloud will call."""
    parts = urlsplit(url)
    problems = []
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problems.append("is not an absolute http(s) URL")
    elif strict and parts.scheme != "https":
        problems.append("must use https (clouds fetch the JWKS over TLS only)")
    if url.endswith("/"):
        problems.append("ends with '/'")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        problems.append("has a query or fragment")
    if parts.username or parts.password:
        problems.append("contains credentials")
    if strict and parts.hostname and parts.port is not None:
        problems.append("has a port (AWS and GCP expect the default https port)")
    if problems:
        raise IdentityConfigError(
            f"issuer URL {url!r} " + "; ".join(problems) + ": set CAIRN_PUBLIC_URL accordingly"
        )
    return url


def openid_configuration(
    issuer: str,
    *,
    signing_algs: Sequence[str] = ("RS256",),
    max_age: timedelta = DEFAULT_JWKS_MAX_AGE,
) -> Document:
    """``/.well-known/openid-configuration`` for an issuer-only provider, in the shape HCP
    Terraform serves (no authorization endpoint: go-oidc and GCP do not need one).
    ``signing_algs`` lists the algorithms of the keys that may sign (the policy's ``alg``,
    plus the other one while keys of both kinds are published)."""
    algs = [a for a in ALGS if a in signing_algs]
    if not algs:
        raise IdentityConfigError(f"no supported signing algorithm in {list(signing_algs)}")
    return Document.of(
        {
            "issuer": issuer,
            "jwks_uri": issuer + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "scopes_supported": ["openid"],
            "claims_supported": [*STANDARD_CLAIMS, *TERRAFORM_CLAIMS, SPECULATIVE_CLAIM],
        },
        max_age,
    )


def jwks(
    keys: Iterable[SigningKey], now: datetime, *, max_age: timedelta = DEFAULT_JWKS_MAX_AGE
) -> Document:
    """The JWKS at ``now``: the public JWKs of the published keys only (next, active, retired
    within their retention; never revoked), active first. Public members only, by
    construction: ``SigningKey.public_jwk`` never holds private ones."""
    return Document.of({"keys": [dict(k.public_jwk) for k in published(keys, now)]}, max_age)
