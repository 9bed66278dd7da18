"""Errors of the OIDC relying party, as branches of cairn's one error tree.

CairnError
├── ConfigError
│   └── IdpConfigError          settings or IdP discovery that cannot work (check() at start)
│       └── IdpUnreachable      the IdP's discovery document could not be fetched at start
└── ApiError
    ├── BadRequest
    │   ├── LoginStateInvalid   callback ``state`` missing, unknown, already used or expired
    │   └── IdpLoginRefused     the IdP answered with an error, a wrong ``iss``, or no code
    ├── Unauthorized
    │   └── InvalidIdToken      the ID token failed a check (signature, alg, claim, kid)
    └── Unavailable
        └── IdpUnavailable      the IdP (discovery, token endpoint, JWKS) cannot be used now

Each API error carries a short machine ``reason`` that goes into the audit log. No message
ever contains a token, code, PKCE verifier, state, nonce or the client secret.
"""

from __future__ import annotations

from cairn.errors import BadRequest, ConfigError, Unauthorized, Unavailable


class IdpConfigError(ConfigError):
    """The IdP settings or the IdP's discovery document cannot work; cairn refuses to start
    and names what to change (CAIRN_OIDC_*)."""

    code = "idp-config"


class IdpUnreachable(IdpConfigError):
    """The IdP's discovery document could not be fetched at start. A subclass of
    IdpConfigError so the caller may choose to start anyway and retry later."""

    code = "idp-unreachable"


class LoginStateInvalid(BadRequest):
    """The callback's ``state`` is missing, unknown, already used or expired (RP-01): the
    login must be started again."""

    code = "login-state"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail, parameter="state")
        self.reason = reason


class IdpLoginRefused(BadRequest):
    """The IdP's answer cannot complete this login: it returned an error (the user
    cancelled, consent denied), the callback's ``iss`` is missing or wrong (RFC 9207), there is
    no code, or the token endpoint refused the code."""

    code = "idp-login-refused"

    def __init__(self, detail: str, *, reason: str, parameter: str | None = None) -> None:
        super().__init__(detail, parameter=parameter)
        self.reason = reason


class InvalidIdToken(Unauthorized):
    """The ID token failed a check: algorithm not allowed, unknown key, bad signature, or a
    claim (iss, aud, azp, exp, iat, nonce, at_hash, sub) that does not hold (RP-02, RP-03)."""

    code = "invalid-id-token"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class IdpUnavailable(Unavailable):
    """The IdP cannot be used right now: discovery, the token endpoint or the JWKS did not
    answer usefully, and no last good copy can stand in (RP-07)."""

    code = "idp-unavailable"

    def __init__(self, detail: str, *, reason: str = "idp-unavailable") -> None:
        super().__init__(detail)
        self.reason = reason
