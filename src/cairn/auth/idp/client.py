"""Logging people in at the team's IdP: authorization code + PKCE S256 (RP-01..RP-04, RP-09).

``begin`` stores a pending login (state, nonce, sealed PKCE verifier, what to resume) and
returns the IdP's authorization URL; ``complete`` takes the ``/auth/oidc/callback`` query,
consumes the pending login once, redeems the code at the token endpoint and checks the ID
token. Every completed or failed callback that matched a pending login is audit-logged as
``auth.login.idp``; when the IdP had rotated its key, the event says whether the one refresh
recovered it (``kid_refresh: recovered``) or the token named a key the IdP does not publish
(``forged-or-unknown``).

Nothing secret is ever logged, audited or put in an error: no token, code, verifier, state,
nonce or client secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx

from cairn.audit.log import Actor, record
from cairn.auth.idp import claims as id_claims
from cairn.auth.idp import discovery, states
from cairn.auth.idp.discovery import ProviderMetadata
from cairn.auth.idp.errors import (
    IdpConfigError,
    IdpLoginRefused,
    IdpUnavailable,
    IdpUnreachable,
    InvalidIdToken,
    LoginStateInvalid,
)
from cairn.auth.idp.jwks import JwksCache
from cairn.auth.idp.jws import parse_compact, verify_signature
from cairn.auth.idp.settings import IdpSettings, make_http_client
from cairn.auth.throttle import client_key
from cairn.clock import Clock
from cairn.crypto import Keyring, b64url
from cairn.db.engine import Database
from cairn.errors import ApiError, BadRequest, SealError, TooManyRequests

log = logging.getLogger("cairn.auth.idp")

AUDIT_ACTION = "auth.login.idp"
LEEWAY = timedelta(seconds=60)  # RP-03: exp / iat / nbf skew
MAX_TOKEN_AGE = timedelta(minutes=10)  # iat window: the token was minted by our own request
METADATA_TTL = timedelta(hours=1)  # discovery is re-read (and re-checked) this often
METADATA_RETRY = timedelta(seconds=60)  # after a failed re-read, keep the last good copy
MAX_TOKEN_RESPONSE = 256 * 1024
# Logins one client address may have waiting at the IdP at once (CAIRN_LOGIN_PENDING_PER_ADDRESS).
MAX_PENDING_PER_ADDRESS = 50
_MAX_STATE = 512
_MAX_CODE = 4096
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")  # RFC 6749 §4.1.2.1 charset


@dataclass(frozen=True)
class IdpLogin:
    """A person the IdP vouched for. ``(issuer, subject)`` identifies them, never ``email``;
    ``resume`` is what ``begin`` was given."""

    issuer: str
    subject: str
    email: str
    name: str
    groups: list[str]
    resume: str
    username: str | None = None  # ``preferred_username``, a hint for a display name only
    # The ``email_verified`` claim (None: absent or not a boolean); a false one keeps the
    # email from taking up invitations sent to it (``auth.login.upsert_idp_user``).
    email_verified: bool | None = None


@dataclass
class _Attempt:
    """What the audit event says about one callback."""

    state_found: bool = False
    kid: str | None = None
    kid_refresh: str | None = None  # "recovered" | "forged-or-unknown" | "fetch-failed"
    details: dict[str, Any] = field(default_factory=dict)


def _param(query: Mapping[str, str], name: str, limit: int) -> str | None:
    value = query.get(name)
    if not isinstance(value, str) or not value:
        return None
    if len(value) > limit:
        raise BadRequest(f"the callback's {name!r} parameter is too long", parameter=name)
    return value


def _shown_error(value: object) -> str:
    """An IdP error code safe to show (RFC 6749 charset, short), else a placeholder."""
    return value if isinstance(value, str) and _ERROR_CODE.fullmatch(value) else "an error"


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` added to whatever query it already has (some IdPs put a
    policy or tenant parameter in their authorization endpoint)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class IdpClient:
    """The OIDC relying party for one IdP. Thread-safe; one per process."""

    def __init__(
        self,
        settings: IdpSettings,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        http: httpx.Client | None = None,
        *,
        jwks: JwksCache | None = None,
        leeway: timedelta = LEEWAY,
        max_token_age: timedelta = MAX_TOKEN_AGE,
        max_pending_per_address: int = MAX_PENDING_PER_ADDRESS,
    ) -> None:
        self._max_pending = max_pending_per_address
        self._settings = settings
        self._db = db
        self._keys = keyring
        self._clock = clock
        self._owns_http = http is None
        self._http = http if http is not None else make_http_client(settings)
        self._jwks = jwks if jwks is not None else JwksCache(self._http, clock)
        self._leeway = leeway
        self._max_token_age = max_token_age
        self._metadata: ProviderMetadata | None = None
        self._metadata_until: datetime | None = None
        self._metadata_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"IdpClient(issuer={self._settings.issuer!r})"

    @property
    def settings(self) -> IdpSettings:
        return self._settings

    @property
    def jwks(self) -> JwksCache:
        return self._jwks

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    # -- start-up ----------------------------------------------------------------------------

    def check(self) -> None:
        """Validate the settings and the IdP's discovery document (at start).

        Raises IdpConfigError (a ConfigError) naming what to change; IdpUnreachable, its
        subclass, when the IdP did not answer."""
        self._settings.validate()
        try:
            metadata = discovery.fetch(self._http, self._settings.issuer)
        except IdpUnavailable as exc:
            raise IdpUnreachable(
                f"cannot use the IdP {self._settings.issuer!r} (CAIRN_OIDC_ISSUER): {exc.detail}"
            ) from None
        with self._metadata_lock:
            self._metadata = metadata
            self._metadata_until = self._clock.now() + METADATA_TTL
        log.info(
            "IdP ready",
            extra={
                "issuer": metadata.issuer,
                "token_auth_method": metadata.token_auth_method,
                "iss_parameter": metadata.iss_parameter,
            },
        )

    def _provider(self) -> ProviderMetadata:
        """The discovery metadata, re-read and re-checked every METADATA_TTL. A failed
        re-read keeps the last good copy; a document that no longer passes the checks (say,
        it now offers only HS256) stops logins with 503 until it is fixed."""
        with self._metadata_lock:
            now = self._clock.now()
            current = self._metadata
            if current is not None and self._metadata_until and now < self._metadata_until:
                return current
            try:
                fresh = discovery.fetch(self._http, self._settings.issuer)
            except IdpUnavailable:
                if current is None:
                    raise
                log.warning("IdP discovery re-read failed; using the last good copy")
                self._metadata_until = now + METADATA_RETRY
                return current
            except IdpConfigError as exc:
                log.error("IdP discovery no longer acceptable", extra={"problem": str(exc)})
                raise IdpUnavailable(
                    f"the IdP's configuration cannot be used: {exc}", reason="discovery-invalid"
                ) from None
            self._metadata, self._metadata_until = fresh, now + METADATA_TTL
            return fresh

    # -- the login ---------------------------------------------------------------------------

    def begin(self, resume: str, *, source_address: str = "") -> str:
        """Store a pending login and return the IdP authorization URL for the browser.

        ``resume`` (at most 2,000 characters) comes back in ``IdpLogin.resume``. A client
        address (``throttle.client_key``) with ``max_pending_per_address`` logins pending is
        refused (TooManyRequests, until its oldest one expires): anonymous clients cannot
        fill ``login_states`` (finding L3)."""
        if len(resume) > states.MAX_RESUME:
            raise BadRequest("the login request is too long")
        metadata = self._provider()
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        state_hash = self._keys.token_hash(state)
        now = self._clock.now()
        key = client_key(source_address)
        with self._db.unit_of_work(write=True) as s:
            states.purge(s, now)
            count, oldest = states.pending(s, key, now)
            if self._max_pending and count >= self._max_pending:
                wait = int((oldest - now).total_seconds()) + 1 if oldest else 60
                raise TooManyRequests(
                    f"{count} logins from your address are already waiting for the identity "
                    f"provider; finish one of them, or wait {wait} seconds and try again",
                    retry_after=wait,
                )
            states.add(
                s,
                client_key=key,
                state_hash=state_hash,
                nonce_hash=self._keys.token_hash(nonce),
                sealed_verifier=self._keys.seal(
                    verifier.encode("ascii"), aad=states.verifier_aad(state_hash)
                ),
                resume=resume,
                now=now,
            )
            s.commit()
        challenge = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
        return _with_query(
            metadata.authorization_endpoint,
            {
                "response_type": "code",
                "client_id": self._settings.client_id,
                "redirect_uri": self._settings.redirect_uri,
                "scope": " ".join(self._settings.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )

    def complete(self, query: Mapping[str, str], *, source_address: str = "") -> IdpLogin:
        """Finish the login from the ``/auth/oidc/callback`` query parameters.

        Raises LoginStateInvalid / IdpLoginRefused (400), InvalidIdToken (401) or
        IdpUnavailable (503), each with a ``detail`` for the user and a ``reason`` for the
        audit log."""
        attempt = _Attempt()
        try:
            login = self._complete(query, attempt)
        except ApiError as exc:
            reason = str(getattr(exc, "reason", exc.code))
            log.warning(
                "IdP login failed",
                extra={"reason": reason, "kid": attempt.kid, "kid_refresh": attempt.kid_refresh},
            )
            if attempt.state_found:
                self._audit(attempt, source_address, outcome="failure", reason=reason)
            raise
        log.info(
            "IdP login",
            extra={
                "issuer": login.issuer,
                "subject": login.subject,
                "kid_refresh": attempt.kid_refresh,
            },
        )
        self._audit(
            attempt,
            source_address,
            outcome="success",
            actor_name=login.email or login.subject,
            subject=login.subject,
        )
        return login

    def _complete(self, query: Mapping[str, str], attempt: _Attempt) -> IdpLogin:
        state = _param(query, "state", _MAX_STATE)
        if state is None:
            raise LoginStateInvalid(
                "the callback has no 'state'; start the login again", reason="missing"
            )
        state_hash = self._keys.token_hash(state)
        try:
            with self._db.unit_of_work(write=True) as s:
                pending = states.consume(s, state_hash, self._clock.now())
                s.commit()
        except LoginStateInvalid as exc:
            # A replayed or expired login is worth an audit event; a made-up state is noise.
            attempt.state_found = exc.reason != "unknown"
            raise
        attempt.state_found = True

        metadata = self._provider()
        iss = query.get("iss")
        # RFC 9207: the answer must come from the IdP this login was sent to.
        if (iss is not None or metadata.iss_parameter) and iss != metadata.issuer:
            raise IdpLoginRefused(
                "the callback's 'iss' is missing or names another issuer; start the login "
                "again (RFC 9207 mix-up defence)",
                reason="wrong-iss-parameter",
                parameter="iss",
            )
        if query.get("error") is not None:
            raise IdpLoginRefused(
                f"the IdP did not log you in ({_shown_error(query.get('error'))})",
                reason="idp-error",
                parameter="error",
            )
        code = _param(query, "code", _MAX_CODE)
        if code is None:
            raise IdpLoginRefused(
                "the callback has no authorization code", reason="missing-code", parameter="code"
            )
        try:
            verifier = self._keys.open(
                pending.sealed_verifier, aad=states.verifier_aad(state_hash)
            ).decode("ascii")
        except SealError:
            log.error("a pending IdP login's PKCE verifier does not open (CAIRN_SECRET_KEY?)")
            raise LoginStateInvalid(
                "this login cannot be completed; start the login again", reason="unsealable"
            ) from None

        tokens = self._redeem(metadata, code, verifier)
        jws = parse_compact(tokens["id_token"])
        attempt.kid = jws.kid
        try:
            lookup = self._jwks.lookup(metadata.issuer, metadata.jwks_uri, jws.kid, jws.alg)
        except InvalidIdToken as exc:
            if exc.reason == "unknown-kid":
                attempt.kid_refresh = "forged-or-unknown"
            raise
        except IdpUnavailable:
            attempt.kid_refresh = "fetch-failed"
            raise
        if not any(verify_signature(jws, key) for key in lookup.keys):
            if lookup.refreshed:
                attempt.kid_refresh = "forged-or-unknown"
            raise InvalidIdToken("the ID token's signature does not verify", reason="bad-signature")
        if lookup.refreshed:
            attempt.kid_refresh = "recovered"

        claims = jws.claims()
        access_token = tokens.get("access_token")
        id_claims.check(
            claims,
            issuer=metadata.issuer,
            client_id=self._settings.client_id,
            now=self._clock.now(),
            leeway=self._leeway,
            max_age=self._max_token_age,
            nonce_matches=lambda n: hmac.compare_digest(
                self._keys.token_hash(n), pending.nonce_hash
            ),
            access_token=access_token if isinstance(access_token, str) else None,
        )
        login = IdpLogin(
            issuer=metadata.issuer,
            subject=str(claims["sub"]),
            email=id_claims.string_claim(claims, "email"),
            name=id_claims.string_claim(claims, "name"),
            groups=id_claims.groups_claim(claims, self._settings.groups_claim),
            resume=pending.resume,
            username=id_claims.string_claim(claims, "preferred_username") or None,
            email_verified=v if isinstance(v := claims.get("email_verified"), bool) else None,
        )
        attempt.details = {"sub": login.subject, "email": login.email, "groups": login.groups}
        return login

    def _redeem(self, metadata: ProviderMetadata, code: str, verifier: str) -> dict[str, Any]:
        """The token request (RFC 6749 §4.1.3 + RFC 7636 §4.5), authenticated with the client
        secret; returns the token response (which holds an ``id_token`` string)."""
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._settings.redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        client_id, secret = self._settings.client_id, self._settings.client_secret
        if metadata.token_auth_method == "client_secret_basic":  # noqa: S105 - a method name
            # RFC 6749 §2.3.1: form-encode both parts before base64.
            pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            data |= {"client_id": client_id, "client_secret": secret}
        try:
            resp = self._http.post(metadata.token_endpoint, data=data, headers=headers)
        except httpx.HTTPError as exc:
            raise IdpUnavailable(
                f"the IdP's token endpoint did not answer: {exc.__class__.__name__}",
                reason="token-endpoint-unavailable",
            ) from None
        parsed: object = None
        if len(resp.content) <= MAX_TOKEN_RESPONSE:
            try:
                parsed = resp.json()
            except ValueError:
                parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        if resp.status_code == 200:
            if not isinstance(body.get("id_token"), str):
                raise IdpUnavailable(
                    "the IdP's token response has no ID token (is the 'openid' scope allowed "
                    "for cairn's client?)",
                    reason="no-id-token",
                )
            return body
        error = _shown_error(body.get("error"))
        if resp.status_code >= 500 or resp.status_code == 429:
            raise IdpUnavailable(
                f"the IdP's token endpoint answered HTTP {resp.status_code}",
                reason="token-endpoint-unavailable",
            )
        if error in ("invalid_client", "unauthorized_client") or resp.status_code == 401:
            log.error("the IdP rejected cairn's client credentials", extra={"error": error})
            raise IdpUnavailable(
                f"the IdP rejected cairn's client ({error}); an administrator must check "
                "CAIRN_OIDC_CLIENT_ID and CAIRN_OIDC_CLIENT_SECRET",
                reason="client-rejected",
            )
        if error == "invalid_grant":
            raise IdpLoginRefused(
                "the IdP did not accept the authorization code (invalid_grant): it expired or "
                "was already used; start the login again",
                reason="code-rejected",
            )
        raise IdpLoginRefused(
            f"the IdP refused the token request ({error}, HTTP {resp.status_code})",
            reason="token-request-refused",
        )

    def _audit(
        self,
        attempt: _Attempt,
        source_address: str,
        *,
        outcome: str,
        actor_name: str = "anonymous",
        subject: str = "",
        reason: str | None = None,
    ) -> None:
        details: dict[str, Any] = {"issuer": self._settings.issuer, **attempt.details}
        if reason is not None:
            details["reason"] = reason
        if attempt.kid is not None:
            details["kid"] = attempt.kid[:128]
        if attempt.kid_refresh is not None:
            details["kid_refresh"] = attempt.kid_refresh
        with self._db.unit_of_work(write=True) as s:
            record(
                s,
                at=self._clock.now(),
                actor=Actor(id=None, name=actor_name[:100], source_address=source_address),
                action=AUDIT_ACTION,
                subject=subject or self._settings.issuer,
                outcome=outcome,
                **details,
            )
            s.commit()
