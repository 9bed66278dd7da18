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
