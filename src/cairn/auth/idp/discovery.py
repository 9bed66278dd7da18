"""The IdP's OpenID Provider metadata (OpenID Connect Discovery 1.0), fetched and checked.

Checks, each refusing the provider with a message that names the problem:

* ``issuer`` is byte-identical to the configured one (Discovery §4.3), and every endpoint is
  https (plain http only on a loopback host).
* ID-token algorithms (RP-02): cairn's allow-list is local (RS256, ES256) and never taken from
  the IdP. A provider that advertises ``none``, or no algorithm of the allow-list (HS256 only,
  say), is refused. Advertising HS* *next to* RS256 is accepted with a warning: Keycloak and
  Auth0 list every algorithm they can do, and an HS256 token is refused locally anyway.
* PKCE: when the IdP lists ``code_challenge_methods_supported``, it must include S256.
* Client authentication: ``client_secret_basic`` (the default when unlisted) or
  ``client_secret_post``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from cairn.auth.idp.errors import IdpConfigError, IdpUnavailable
from cairn.auth.idp.jws import ALLOWED_ALGS
from cairn.auth.idp.settings import check_url

log = logging.getLogger("cairn.auth.idp")

WELL_KNOWN = "/.well-known/openid-configuration"
MAX_DISCOVERY_BYTES = 256 * 1024


@dataclass(frozen=True)
class ProviderMetadata:
    """What cairn uses from the IdP's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    id_token_algs: tuple[str, ...]
    token_auth_method: str  # "client_secret_basic" | "client_secret_post"
    iss_parameter: bool  # RFC 9207 authorization_response_iss_parameter_supported


def discovery_url(issuer: str) -> str:
    # Discovery §4: remove a terminating "/" before appending the well-known path.
    return issuer.rstrip("/") + WELL_KNOWN


def fetch(http: httpx.Client, issuer: str) -> ProviderMetadata:
    """Fetch and check the discovery document. Raises IdpUnavailable when it cannot be
    fetched, IdpConfigError when its content cannot work."""
    url = discovery_url(issuer)
    try:
        resp = http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise IdpUnavailable(
            f"the IdP's discovery document ({url}) did not answer: {exc.__class__.__name__}",
            reason="discovery-unavailable",
        ) from None
    if resp.status_code != 200:
        raise IdpUnavailable(
            f"the IdP's discovery document ({url}) answered HTTP {resp.status_code}",
            reason="discovery-unavailable",
        )
    if len(resp.content) > MAX_DISCOVERY_BYTES:
        raise IdpConfigError(f"the IdP's discovery document ({url}) is too large")
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise IdpConfigError(f"the IdP's discovery document ({url}) is not a JSON object")
    return parse(doc, issuer)


def _str_list(doc: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise IdpConfigError(f"the IdP's discovery document has a malformed {name!r}")
    return tuple(value)


def parse(doc: dict[str, Any], issuer: str) -> ProviderMetadata:
    """Check a discovery document against the configured issuer (see the module doc)."""
    if doc.get("issuer") != issuer:
        raise IdpConfigError(
            f"the IdP's discovery document names issuer {str(doc.get('issuer'))[:200]!r}, "
            f"not {issuer!r}: set CAIRN_OIDC_ISSUER to exactly the IdP's issuer"
        )
    endpoints: dict[str, str] = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = doc.get(name)
        if not isinstance(value, str) or not value:
            raise IdpConfigError(f"the IdP's discovery document has no {name}")
        endpoints[name] = check_url(value, what=f"the IdP's {name}")

    algs = _str_list(doc, "id_token_signing_alg_values_supported")
    if not algs:
        raise IdpConfigError(
            "the IdP's discovery document lists no id_token_signing_alg_values_supported"
        )
    if "none" in algs:
        raise IdpConfigError(
            "the IdP advertises unsigned ID tokens (alg 'none'); cairn refuses such a provider: "
            "disable 'none' at the IdP"
        )
    usable = tuple(a for a in algs if a in ALLOWED_ALGS)
    if not usable:
        raise IdpConfigError(
            f"the IdP signs ID tokens only with {', '.join(algs)[:200]}; cairn accepts only "
            f"{', '.join(sorted(ALLOWED_ALGS))} (never HS* or none): enable RS256 at the IdP"
        )
    symmetric = [a for a in algs if a.upper().startswith("HS")]
    if symmetric:
        log.warning(
            "the IdP also offers symmetric ID-token algorithms; cairn refuses tokens signed "
            "with them, so register cairn's client with RS256 or ES256",
            extra={"issuer": issuer, "algorithms": symmetric},
        )

    methods = _str_list(doc, "code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise IdpConfigError("the IdP does not support PKCE with S256, which cairn requires")

    auth_methods = _str_list(doc, "token_endpoint_auth_methods_supported")
    if auth_methods is None or "client_secret_basic" in auth_methods:
        auth_method = "client_secret_basic"  # the default when unlisted (Discovery §3)
    elif "client_secret_post" in auth_methods:
        auth_method = "client_secret_post"
    else:
        raise IdpConfigError(
            "the IdP's token endpoint accepts neither client_secret_basic nor "
            "client_secret_post client authentication"
        )

    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        jwks_uri=endpoints["jwks_uri"],
        id_token_algs=usable,
        token_auth_method=auth_method,
        iss_parameter=doc.get("authorization_response_iss_parameter_supported") is True,
    )
