"""``terraform login``: an OAuth 2.0 authorization server for one public client.

Discovery publishes ``login.v1`` (client ``terraform-cli``, authorization code grant, ports
10000-10010). The authorization endpoint authenticates the person — through the team's IdP
when one is configured, else with an existing API token typed into a form (the built-in admin
on a laptop; never an organization or team token: a service account gets no code, and no
token, by any path) — and redirects to Terraform's loopback listener with a code. Codes are
random, stored hashed in the database (any replica redeems them), expire within 5 minutes, are
single-use (a conditional UPDATE consumes them before anything else is checked) and are bound
to the PKCE S256 challenge, the redirect URI and the client. The token endpoint answers a new
API token, which Terraform stores.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cairn import ids
from cairn.audit.log import Actor, record
from cairn.auth.idp import states as login_states
from cairn.auth.model import OAuthCode, User
from cairn.auth.throttle import AddressThrottle, FailureAudit, LoginLimits
from cairn.auth.tokens import USER_DISABLED, TokenService
from cairn.authz.subject import ServiceAccount, is_reserved_name
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.engine import Database, affected
from cairn.errors import ApiError, BadRequest, Unauthorized

log = logging.getLogger("cairn.login")

CLIENT_ID = "terraform-cli"
PORTS = (10000, 10010)
CODE_TTL = timedelta(minutes=5)
KEEP_EXPIRED = timedelta(hours=1)  # expired codes are deleted by housekeeping after this
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43,128}$")
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def login_service() -> dict[str, object]:
    """The ``login.v1`` entry of the discovery document (reference §1.2, §2)."""
    return {
        "client": CLIENT_ID,
        "grant_types": ["authz_code"],
        "authz": "/oauth/authorization",
        "token": "/oauth/token",
        "ports": list(PORTS),
    }


# Organization and team tokens act as service accounts: a login token made from one would
# outlive the revocation of the token it came from, and no owner could see or revoke it.
SERVICE_ACCOUNT_REFUSED = (
    "organization and team tokens cannot be used to log in: terraform login makes a person's "
    "token. Use your own API token (or the admin token); to use an organization or team token "
    "with Terraform, put it in a credentials block of the CLI configuration"
)

# A disabled person (``cairn.auth.accounts``) logs in by no path: token form, IdP, or a code
# issued just before the account was disabled.
DISABLED_REFUSED = (
    "this user is disabled in cairn; ask a site administrator to enable it (cairn user enable NAME)"
)


class OAuthError(BadRequest):
    """An RFC 6749 §5.2 error answered by the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status_code = status


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    code_challenge: str
    state: str

    def query(self) -> str:
        return urlencode(
            {
                "client_id": self.client_id,
                "code_challenge": self.code_challenge,
                "code_challenge_method": "S256",
                "redirect_uri": self.redirect_uri,
                "response_type": "code",
                "state": self.state,
            }
        )


class LoginRejected(ApiError):
    """The authorization request is not one cairn may redirect for (shown as a page, never
    redirected: the redirect URI itself may be the problem)."""

    status, title, code = 400, "Bad Request", "login-rejected"


def check_redirect_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.hostname is None:
        raise LoginRejected("redirect_uri must be an http:// loopback address")
    host = parts.hostname
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise LoginRejected("redirect_uri must point at this machine (localhost or 127.0.0.1)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or not PORTS[0] <= port <= PORTS[1]:
        raise LoginRejected(f"redirect_uri must use a port from {PORTS[0]} to {PORTS[1]}")
    if parts.username or parts.password or parts.fragment:
        raise LoginRejected("redirect_uri must not carry credentials or a fragment")
    return uri


def parse_authorization(params: dict[str, str]) -> AuthorizationRequest:
    """Validate a ``/oauth/authorization`` query (reference §2.6)."""
    if params.get("client_id") != CLIENT_ID:
        raise LoginRejected(f"unknown client_id; only {CLIENT_ID!r} (terraform login) is served")
    redirect = check_redirect_uri(params.get("redirect_uri", ""))
    if params.get("response_type") != "code":
        raise LoginRejected("response_type must be 'code'")
    if params.get("code_challenge_method") != "S256":
        raise LoginRejected("PKCE is required with code_challenge_method=S256 ('plain' is refused)")
    challenge = params.get("code_challenge", "")
    if not _CHALLENGE.fullmatch(challenge):
        raise LoginRejected("code_challenge must be a base64url SHA-256 (43+ characters)")
    state = params.get("state", "")
    if not state or len(state) > 512:
        raise LoginRejected("state is required")
    return AuthorizationRequest(CLIENT_ID, redirect, challenge, state)


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


# What a higher domain does when a person logs in through the IdP with an email the IdP vouches
# for (not marked ``email_verified: false``), in the login's transaction: ``teams`` accepts
# the pending invitations of that email (``teams.memberships.accept_invitations``). Wired in
# ``app.py``; auth sits below teams and imports nothing of it.
AfterIdpLogin = Callable[[Session, User, Actor, datetime], None]


class IdpIdentity(Protocol):
    """What a completed IdP login tells cairn (``cairn.auth.idp.IdpLogin``)."""

    @property
    def issuer(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def groups(self) -> list[str]: ...
    @property
    def resume(self) -> str: ...
    @property
    def email_verified(self) -> bool | None: ...


class IdentityProvider(Protocol):
    """The relying party (``cairn.auth.idp.IdpClient``)."""

    def begin(self, resume: str, *, source_address: str = "") -> str: ...
    def complete(self, query: dict[str, str], *, source_address: str = "") -> IdpIdentity: ...


class LoginService:
    """The authorization server. Anonymous clients are bounded (``cairn.auth.throttle``): failed
    logins and token requests spend their address's budget (429 once it is empty) and are
    audited at most ten times per address and window, then counted."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        tokens: TokenService,
        limits: LoginLimits | None = None,
    ) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock
        self._tokens = tokens
        self.limits = limits = limits or LoginLimits()
        self.throttle = AddressThrottle(clock, burst=limits.burst, per_minute=limits.per_minute)
        self.failures = FailureAudit(
            clock, window=limits.audit_window, individual=limits.audit_individual
        )
        self.after_idp_login: list[AfterIdpLogin] = []

    def _failed(self, actor: Actor, action: str, subject: str, reason: str) -> None:
        """A failed login from ``actor.source_address``: charged to its budget, and audited
        unless this address already had ten failures of this kind in the current window (then
        it is counted, and summed up in one ``auth.login.failures`` event later)."""
        self.throttle.charge(actor.source_address)
        entries = self.failures.failure(
            address=actor.source_address, action=action, actor=actor, subject=subject, reason=reason
        )
        if entries:
            with self._db.unit_of_work(write=True) as s:
                for entry in entries:
                    record(s, **entry.kwargs)
                s.commit()

    def throttle_idp_redirect(self, source: str) -> None:
        """Before a redirect to the IdP (which stores a pending login): take a token of the
        address's budget, or raise TooManyRequests."""
        self.throttle.take(source, "logins")

    def housekeeping(self) -> None:
        """Record the failed-login summaries whose window is over, and delete login codes and
        pending IdP logins that expired more than an hour ago."""
        now = self._clock.now()
        entries = self.failures.due()
        with self._db.unit_of_work(write=True) as s:
            for entry in entries:
                record(s, **entry.kwargs)
            s.execute(
                delete(OAuthCode)
                .where(OAuthCode.expires_at < now - KEEP_EXPIRED)
                .execution_options(synchronize_session=False)
            )
            login_states.purge(s, now)
            s.commit()

    def issue_code(self, user_id: str, req: AuthorizationRequest, *, source: str, via: str) -> str:
        """A code for ``user_id``; returns the URL to send the browser to."""
        code = secrets.token_urlsafe(32)
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            user = s.get(User, user_id)
            assert user is not None
            if user.is_service_account:
                raise Unauthorized(SERVICE_ACCOUNT_REFUSED)
            if user.disabled_at is not None:
                raise Unauthorized(DISABLED_REFUSED)
            s.add(
                OAuthCode(
                    code_hash=self._keys.token_hash(code),
                    user_id=user_id,
                    client_id=req.client_id,
                    redirect_uri=req.redirect_uri,
                    code_challenge=req.code_challenge,
                    created_at=now,
                    expires_at=now + CODE_TTL,
                )
            )
            record(
                s,
                at=now,
                actor=Actor(user.id, user.username, source),
                action="auth.login.authorize",
                subject=f"terraform login ({via})",
            )
            s.commit()
        sep = "&" if "?" in req.redirect_uri else "?"
        return f"{req.redirect_uri}{sep}{urlencode({'code': code, 'state': req.state})}"

    def login_with_token(self, token: str, req: AuthorizationRequest, *, source: str) -> str:
        """The form login (no IdP configured): an existing API token proves who you are."""
        self.throttle.admit(source, "failed logins")
        try:
            caller = self._tokens.authenticate(token.strip())
        except Unauthorized as exc:
            reason = "disabled user" if exc.detail == USER_DISABLED else "invalid token"
            self._failed(
                Actor(None, "unknown", source),
                "auth.login.authorize",
                "terraform login (token form)",
                reason,
            )
            raise
        if isinstance(caller, ServiceAccount):
            self._failed(
                Actor(caller.id, caller.name, source),
                "auth.login.authorize",
                "terraform login (token form)",
                "an organization or team token",
            )
            raise Unauthorized(SERVICE_ACCOUNT_REFUSED)
        return self.issue_code(caller.id, req, source=source, via="token form")

    def upsert_idp_user(
        self,
        *,
        issuer: str,
        subject: str,
        email: str,
        preferred: str,
        groups: list[str],
        source: str,
        email_verified: bool | None = None,
    ) -> str:
        """The user behind an IdP identity (``upsert_idp_user``); returns the user ID."""
        return upsert_idp_user(
            self._db,
            self._clock,
            issuer=issuer,
            subject=subject,
            email=email,
            preferred=preferred,
            groups=groups,
            source=source,
            email_verified=email_verified,
            after=self.after_idp_login,
        )

    def redeem(self, form: dict[str, str], *, source: str) -> str:
        """The token endpoint: consume the code, check its bindings, answer a new API token."""
        self.throttle.admit(source, "failed token requests")
        if form.get("grant_type") != "authorization_code":
            self.throttle.charge(source)
            raise OAuthError("unsupported_grant_type", "only authorization_code is supported")
        code = form.get("code", "")
        verifier = form.get("code_verifier", "")
        if not code or not _VERIFIER.fullmatch(verifier):
            self.throttle.charge(source)
            raise OAuthError("invalid_request", "code and a PKCE code_verifier are required")
        now = self._clock.now()
        digest = self._keys.token_hash(code)
        with self._db.unit_of_work(write=True) as s:
            # Consume first: a code is used once, whatever else is wrong with the request.
            won = affected(
                s.execute(
                    update(OAuthCode)
                    .where(
                        OAuthCode.code_hash == digest,
                        OAuthCode.used_at.is_(None),
                        OAuthCode.expires_at > now,
                    )
                    .values(used_at=now)
                    .execution_options(synchronize_session=False)
                )
            )
            row = s.scalar(select(OAuthCode).where(OAuthCode.code_hash == digest))
            failure = None
            if won != 1:
                failure = "the code is unknown, expired or already used"
            elif row is None or form.get("client_id") != row.client_id:
                failure = "the code was issued to another client"
            elif form.get("redirect_uri") != row.redirect_uri:
                failure = "redirect_uri differs from the one the code was issued for"
            elif not hmac.compare_digest(s256(verifier), row.code_challenge):
                failure = "the PKCE code_verifier does not match the code_challenge"
            user = s.get(User, row.user_id) if row is not None else None
            actor = (
                Actor(user.id, user.username, source) if user else Actor(None, "unknown", source)
            )
            if failure is None and user is not None and user.is_service_account:
                failure = SERVICE_ACCOUNT_REFUSED
            if failure is None and user is not None and user.disabled_at is not None:
                failure = DISABLED_REFUSED  # disabled between the code and its redemption
            if failure is not None or user is None:
                s.commit()  # the code stays consumed
                failure = failure or "the user no longer exists"
                self._failed(actor, "auth.login.token", "terraform login", failure)
                raise OAuthError("invalid_grant", failure)
            token, value = self._tokens.issue(
                s,
                user.id,
                "login",
                f"terraform login from {source or 'unknown address'}",
                created_by=user.id,
            )
            record(
                s,
                at=now,
                actor=actor,
                action="token.create",
                subject=token.id,
                via="terraform login",
            )
            s.commit()
        return value


def login_page(req: AuthorizationRequest, *, error: str | None = None) -> str:
    """The form shown when no IdP is configured: paste an existing API token."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in parse_qsl(req.query())
    )
    problem = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cairn — terraform login</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}
input[type=password]{{width:100%;padding:.5rem}} button{{margin-top:1rem;padding:.5rem 1rem}}
.error{{color:#b00020}}</style></head><body>
<h1>Log in to cairn</h1>
<p><code>terraform login</code> asks for a new API token. No identity provider is configured,
so prove who you are with an existing API token (the admin token printed when cairn first
started, or <code>CAIRN_ADMIN_TOKEN</code>).</p>{problem}
<form method="post" action="/oauth/authorization">{hidden}
<label for="token">API token</label>
<input type="password" id="token" name="token" autocomplete="off" required autofocus>
<button type="submit">Authorize terraform login</button></form></body></html>"""


def error_page(message: str) -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>cairn — login refused</title></head><body style="font-family:system-ui,sans-serif;
max-width:36rem;margin:4rem auto"><h1>Login refused</h1><p>{html.escape(message)}</p>
<p>Start again with <code>terraform login</code>.</p></body></html>"""


def _idp_username(s: Session, preferred: str, email: str) -> str:
    """A free username derived from the IdP's claims (``preferred_username``, else the email's
    local part): letters, numbers, ``-`` and ``_``, never a service account's reserved prefix
    and never the shape of an ID (a name like ``user-…`` is taken as the ID it looks like
    wherever the API accepts a username or an ID): such claims are adjusted, not refused, so
    the person can still log in."""
    base = re.sub(r"[^A-Za-z0-9_-]", "-", preferred or email.split("@")[0] or "user")[:80]
    base = base.strip("-") or "user"
    if is_reserved_name(base):  # reserved for token accounts
        base = "user-" + base
    if ids.looks_like_any(base):  # "user-" + 16 characters: never an ID again
        base = "user-" + base
    name = base
    while s.scalar(select(User.id).where(User.username == name)) is not None:
        name = f"{base}-{secrets.token_hex(2)}"
    return name


def upsert_idp_user(
    db: Database,
    clock: Clock,
    *,
    issuer: str,
    subject: str,
    email: str,
    preferred: str,
    groups: list[str],
    source: str,
    email_verified: bool | None = None,
    after: list[AfterIdpLogin] | None = None,
) -> str:
    """The user behind an IdP identity (created at first login), with team memberships synced
    from the groups claim at every login — never frozen into a token. Returns the user ID.

    ``after`` runs in the same transaction when the person has an email the IdP does not mark
    unverified (``email_verified`` absent or true: many IdPs only vouch for the addresses they
    hold and send no such claim), e.g. to accept the invitations sent to that email."""
    from cairn.authz.model import Team, TeamMembership

    now = clock.now()
    with db.unit_of_work(write=True) as s:
        user = s.scalar(select(User).where(User.idp_issuer == issuer, User.idp_subject == subject))
        renamed_from = None
        if user is None:
            user = User(
                id=ids.new_id("user"),
                username=_idp_username(s, preferred, email),
                email=email,
                idp_issuer=issuer,
                idp_subject=subject,
                created_at=now,
            )
            s.add(user)
            s.flush()
        elif user.disabled_at is not None:
            raise Unauthorized(DISABLED_REFUSED)
        elif ids.looks_like_any(user.username):  # named before usernames were kept from IDs
            renamed_from = user.username
            user.username = _idp_username(s, preferred, email)
        user.email = email or user.email
        user.last_login_at = now
        wanted = set(s.scalars(select(Team.id).where(Team.idp_group.in_(groups or [""]))))
        current = {
            m.team_id: m
            for m in s.scalars(select(TeamMembership).where(TeamMembership.user_id == user.id))
        }
        for team_id in wanted - set(current):
            s.add(TeamMembership(team_id=team_id, user_id=user.id, source="idp"))
        for team_id, m in current.items():
            if m.source == "idp" and team_id not in wanted:
                s.delete(m)
        record(
            s,
            at=now,
            actor=Actor(user.id, user.username, source),
            action="user.login",
            subject=user.username,
            issuer=issuer,
            groups=sorted(groups),
            **({"renamed_from": renamed_from} if renamed_from is not None else {}),
        )
        if user.email and email_verified is not False:
            for hook in after or []:
                hook(s, user, Actor(user.id, user.username, source), now)
        s.commit()
        return user.id
