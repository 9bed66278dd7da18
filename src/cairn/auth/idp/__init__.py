"""The OIDC relying party: people log in at the team's own IdP (Okta, Auth0, Keycloak, Entra).

Split the way the specs split:

* ``settings``  — IdpSettings (CAIRN_OIDC_*) and the HTTP client (private CA, no redirects)
* ``discovery`` — the IdP's metadata, fetched and checked (issuer, https, algorithms, PKCE)
* ``jws``       — compact JWS parsing, JWKs, signatures; the local algorithm allow-list
* ``jwks``      — the per-issuer key cache that survives rotation and forged-kid storms
* ``claims``    — ID-token claim checks
* ``states``    — pending logins in the database, consumed once
* ``client``    — IdpClient: ``check`` at start, ``begin`` and ``complete`` per login
"""

# The names below load their module on first use (PEP 562): the login service needs only
# ``states``, and the HTTP client (httpx) costs a tenth of the start-up of a cairn that
# has no IdP configured (bench/startup.py).
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cairn.auth.idp.client import AUDIT_ACTION, IdpClient, IdpLogin
    from cairn.auth.idp.errors import (
        IdpConfigError,
        IdpLoginRefused,
        IdpUnavailable,
        IdpUnreachable,
        InvalidIdToken,
        LoginStateInvalid,
    )
    from cairn.auth.idp.jwks import JwksCache, JwksStats
    from cairn.auth.idp.jws import ALLOWED_ALGS
    from cairn.auth.idp.settings import IdpSettings, make_http_client

_MODULE = {
    "AUDIT_ACTION": "client",
    "IdpClient": "client",
    "IdpLogin": "client",
    "IdpConfigError": "errors",
    "IdpLoginRefused": "errors",
    "IdpUnavailable": "errors",
    "IdpUnreachable": "errors",
    "InvalidIdToken": "errors",
    "LoginStateInvalid": "errors",
    "JwksCache": "jwks",
    "JwksStats": "jwks",
    "ALLOWED_ALGS": "jws",
    "IdpSettings": "settings",
    "make_http_client": "settings",
}


def __getattr__(name: str) -> Any:
    module = _MODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "ALLOWED_ALGS",
    "AUDIT_ACTION",
    "IdpClient",
    "IdpConfigError",
    "IdpLogin",
    "IdpLoginRefused",
    "IdpSettings",
    "IdpUnavailable",
    "IdpUnreachable",
    "InvalidIdToken",
    "JwksCache",
    "JwksStats",
    "LoginStateInvalid",
    "make_http_client",
]
