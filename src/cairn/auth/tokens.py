"""API tokens: opaque, prefixed, shown once, stored only as a keyed hash.

Format: ``cairn_`` + 43 base62 characters (≈256 bits). The prefix lets secret scanners spot a
leaked token; the hash (HMAC-SHA256 under a key derived from CAIRN_SECRET_KEY) lets cairn find
the row without keeping the token.

``TokenService.issue`` is the one place a token value and its row are made. Each kind of token
is registered by the domain that issues it (``TokenKinds.register``): auth registers its own
(user, login, bootstrap, admin-env), organizations and teams theirs when their token services
are built. The ``TokenAuthenticator`` at the end is the request pipeline's ``"token"``
authenticator: every kind authenticates the same way.
"""

from __future__ import annotations

import logging
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, NamedTuple, Protocol

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request

from cairn import ids
from cairn.auth.model import ApiToken
from cairn.auth.model import User as UserRow
from cairn.authz.access import Access, load_access
from cairn.authz.subject import ServiceAccount, Subject, User
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.base import table_of
from cairn.db.engine import Database
from cairn.errors import Forbidden, Unauthorized
from cairn.tfeapi.http import Authenticated, bearer_token

log = logging.getLogger("cairn.auth")

TOKEN_PREFIX = "cairn_"  # noqa: S105 - a public prefix for secret scanners, not a secret
_ALPHABET = string.ascii_letters + string.digits
ADMIN_USERNAME = "admin"
# last-used-at is written at most this often per token, so reads do not become writes.
_LAST_USED_GRANULARITY = timedelta(minutes=1)


# The kinds auth issues itself (``ApiToken.kind``).
KIND_USER: Final = "user"  # created by a person (or a site admin for them)
KIND_LOGIN: Final = "login"  # answered to ``terraform login``
KIND_BOOTSTRAP: Final = "bootstrap"  # the admin's first token, printed once
KIND_ADMIN_ENV: Final = "admin-env"  # CAIRN_ADMIN_TOKEN's value
# A person's kinds: never held by a service account (an organization or team token's). Such a
# token would outlive the revocation of the organization or team token it was made from, and
# no organization or team token listing shows it; ``issue`` refuses to make one and
# authentication refuses one made before that rule.
PERSON_KINDS: Final = (KIND_USER, KIND_LOGIN, KIND_BOOTSTRAP, KIND_ADMIN_ENV)
_KIND_MAX = 16  # api_tokens.kind
# What a disabled person's token is told (``cairn.auth.accounts``).
USER_DISABLED = "this user is disabled in cairn; ask a site administrator to enable it"


def _new_token_value() -> str:
    """A fresh token value (use ``TokenService.issue``, which also stores its row)."""
    return TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(43))


@dataclass(frozen=True)
class TokenKind:
    """One kind of API token: its ``ApiToken.kind`` value and what it is, in words."""

    name: str
    description: str


class TokenKinds:
    """The kinds of token this cairn issues, each registered once by the domain that owns it
    (otf's ``tokens.RegisterKind``): auth does not need to know organizations or teams."""

    def __init__(self) -> None:
        self._kinds: dict[str, TokenKind] = {}

    def register(self, name: str, description: str) -> TokenKind:
        """Register ``name`` (idempotent for the same description). Raises ValueError for a
        name the column cannot hold or one another owner registered differently."""
        if not name or len(name) > _KIND_MAX:
            raise ValueError(f"a token kind is 1 to {_KIND_MAX} characters, not {name!r}")
        kind = TokenKind(name, description)
        existing = self._kinds.setdefault(name, kind)
        if existing != kind:
            raise ValueError(f"token kind {name!r} is already registered as {existing}")
        return kind

    def get(self, name: str) -> TokenKind:
        """The registered kind; KeyError for one nobody registered (a programming error)."""
        return self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def names(self) -> list[str]:
        return sorted(self._kinds)


class TokenRow(NamedTuple):
    """The columns of a token and its user that authentication needs (``_BY_HASH``)."""

    token_id: str
    kind: str
    revoked_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    user_id: str
    username: str
    is_site_admin: bool
    is_service_account: bool
    disabled_at: datetime | None
    organization_id: str | None  # a service account's organization
    team_id: str | None  # a team token's team


@dataclass(frozen=True)
class Presented:
    """What the database says about a presented token, read in a read transaction
    (``TokenService._lookup``). ``TokenService._admit`` then accepts or refuses it, after that
    transaction, because accepting may write ``last_used_at``."""

    now: datetime
    row: TokenRow | None  # None: no such token
    access: Access | None = None  # loaded only for a usable token of a non-site-admin

    @property
    def usable(self) -> bool:
        """The token exists and is not revoked or expired, its user is not disabled, and it
        is not a person's kind of token held by a service account."""
        row = self.row
        return (
            row is not None
            and row.revoked_at is None
            and (row.expires_at is None or row.expires_at > self.now)
            and row.disabled_at is None
            and not _laundered(row)
        )


def _laundered(row: TokenRow) -> bool:
    """A person's kind of token held by a service account: made from an organization or team
    token by a cairn that allowed it (terraform login's token form). Never accepted."""
    return row.is_service_account and row.kind in PERSON_KINDS


_tok = table_of(ApiToken)
_user = table_of(UserRow)
# One Core select per request (no entities, compiled once): the token and its user.
_BY_HASH = (
    select(
        _tok.c.id,
        _tok.c.kind,
        _tok.c.revoked_at,
        _tok.c.expires_at,
        _tok.c.last_used_at,
        _user.c.id,
        _user.c.username,
        _user.c.is_site_admin,
        _user.c.is_service_account,
        _user.c.disabled_at,
        _user.c.organization_id,
        _user.c.team_id,
    )
    .join_from(_tok, _user, _user.c.id == _tok.c.user_id)
    .where(_tok.c.token_hash == bindparam("digest"))
)
# The same, by the token's ID: credentials derived from a token (S3 session tokens) re-check
# their source on every request.
_BY_ID = (
    select(*_BY_HASH.selected_columns)
    .join_from(_tok, _user, _user.c.id == _tok.c.user_id)
    .where(_tok.c.id == bindparam("token_id"))
)
_TOUCH = update(_tok).where(_tok.c.id == bindparam("token_id")).values(last_used_at=bindparam("at"))


class TokenService:
    """Issuing tokens (``issue``, for every kind), authenticating them, and the built-in
    admin's own tokens at start (``ensure_admin``, ``set_admin_env_token``,
    ``bootstrap_admin_token``)."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock
        self.kinds = TokenKinds()
        self.kinds.register(KIND_USER, "a person's token")
        self.kinds.register(KIND_LOGIN, "a token answered to terraform login")
        self.kinds.register(KIND_BOOTSTRAP, "the built-in admin's first token")
        self.kinds.register(KIND_ADMIN_ENV, "the built-in admin's CAIRN_ADMIN_TOKEN")
        # Tokens of other shapes that higher domains authenticate (job tokens: runs), by the
        # prefix of their value; the pipeline's "token" authenticator hands them over.
        self._prefixed: dict[str, PrefixedAuthenticator] = {}

    def add_prefix(self, prefix: str, authenticator: PrefixedAuthenticator) -> None:
        """Authenticate bearer tokens starting with ``prefix`` (longer than ``cairn_``, e.g.
        ``cairn_job_``) with ``authenticator`` instead of as API tokens. Registered in
        ``app.py``; auth never imports the domain that issues them."""
        if not prefix.startswith(TOKEN_PREFIX) or len(prefix) <= len(TOKEN_PREFIX):
            raise ValueError(f"a token prefix extends {TOKEN_PREFIX!r}, not {prefix!r}")
        if prefix in self._prefixed:
            raise ValueError(f"token prefix {prefix!r} is already registered")
        self._prefixed[prefix] = authenticator

    def _prefixed_for(self, token: str) -> PrefixedAuthenticator | None:
        for prefix, authenticator in self._prefixed.items():
            if token.startswith(prefix):
                return authenticator
        return None

    def issue(
        self,
        session: Session,
        owner_user_id: str,
        kind: str,
        description: str,
        expires_at: datetime | None = None,
        *,
        value: str | None = None,
        created_by: str | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token of a registered ``kind`` for ``owner_user_id``, added to ``session``
        (the caller's unit of work, which commits it) and flushed; returns the row and the
        value, which is shown once and never stored. ``value``: the exact value when the
        operator chose it (CAIRN_ADMIN_TOKEN); otherwise a fresh random one. ``created_by``:
        the user who asked for it (None: cairn itself)."""
        self.kinds.get(kind)
        if kind in PERSON_KINDS:
            owner = session.get(UserRow, owner_user_id)
            if owner is not None and owner.is_service_account:
                raise Forbidden(
                    f"{owner.username} is an organization or team token's service account: it "
                    "holds only organization or team tokens, never a person's token"
                )
        value = value if value is not None else _new_token_value()
        row = ApiToken(
            id=ids.new_id("token"),
            user_id=owner_user_id,
            token_hash=self._keys.token_hash(value),
            kind=kind,
            description=description,
            created_at=self._clock.now(),
            expires_at=expires_at,
            created_by_id=created_by,
        )
        session.add(row)
        session.flush()
        return row, value

    def authenticate(self, token: str) -> Subject:
        """The subject behind a bearer token, in a transaction of its own (or the unit of work
        in progress). Raises Unauthorized, never says why in detail beyond what helps the user
        (no hint whether a token ever existed)."""
        found = self.authenticator().authenticate(token)
        found.after()
        return found.subject

    def authenticate_id(self, token_id: str, user_id: str) -> Authenticated:
        """The subject of the token ``token_id`` of ``user_id``, checked as a presented token
        is (revoked, expired, user disabled → Unauthorized), for credentials derived from it
        (S3 session tokens): revoking the token ends them."""
        now = self._clock.now()
        with self._db.read_transaction() as conn:
            found = conn.execute(_BY_ID, {"token_id": token_id}).first()
            row = None if found is None else TokenRow._make(found)
            if row is not None and row.user_id != user_id:
                row = None
            presented = Presented(now, row)
            if row is not None and presented.usable and not row.is_site_admin:
                org_token = row.organization_id if row.team_id is None else None
                access = load_access(conn, row.user_id, organization_id=org_token)
                presented = Presented(now, row, access)
        if presented.row is None:
            raise Unauthorized("the API token these credentials came from no longer exists")
        return Admitted(self._admit(presented), presented, self)

    def authenticator(self) -> TokenAuthenticator:
        """The request pipeline's ``"token"`` authenticator."""
        return TokenAuthenticator(self)

    def _lookup(self, conn: Connection, token: str) -> Presented:
        """Read a bearer token, its user and (when usable) the user's access in ``conn``'s
        transaction. Raises Unauthorized, without a query, for a value that cannot be a token.
        Nothing is cached: a revocation or an access change applies to the very next
        request."""
        if not token or len(token) > 512:
            raise Unauthorized(
                "a valid API token is required: pass it as 'Authorization: Bearer <token>'"
            )
        digest = self._keys.token_hash(token)
        now = self._clock.now()
        found = conn.execute(_BY_HASH, {"digest": digest}).first()
        presented = Presented(now, None if found is None else TokenRow._make(found))
        row = presented.row
        if row is None or not presented.usable or row.is_site_admin:
            return presented  # a site admin may do everything: no access to load
        org_token = row.organization_id if row.team_id is None else None
        access = load_access(conn, row.user_id, organization_id=org_token)
        return Presented(now, row, access)

    def _touch(self, presented: Presented) -> None:
        """Record when the token was last used (at most once per ``_LAST_USED_GRANULARITY``),
        in a transaction of its own: after the request's, which may be read-only."""
        row, now = presented.row, presented.now
        if row is None or row.revoked_at is not None:
            return
        if row.expires_at is not None and row.expires_at <= now:
            return
        if row.last_used_at is None or now - row.last_used_at >= _LAST_USED_GRANULARITY:
            with self._db.write_transaction() as conn:
                conn.execute(_TOUCH, {"token_id": row.token_id, "at": now})

    def _admit(self, presented: Presented) -> Subject:
        """The subject of a looked-up token, or Unauthorized saying why not."""
        row, now = presented.row, presented.now
        if row is None:
            raise Unauthorized("the API token is not valid; check it, or create a new one")
        if row.disabled_at is not None:  # first: disabling also revoked the user's tokens
            raise Unauthorized(USER_DISABLED)
        if row.revoked_at is not None:
            raise Unauthorized("the API token has been revoked; create a new one")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthorized("the API token has expired; create a new one")
        if _laundered(row):
            raise Unauthorized(
                "the API token was made from an organization or team token, which cairn no "
                "longer allows; it is not valid (use the organization or team token itself, "
                "or a person's token)"
            )
        access = presented.access or Access()
        if row.organization_id is not None:
            return ServiceAccount(
                id=row.user_id,
                name=row.username,
                token_id=row.token_id,
                organization_id=row.organization_id,
                team_id=row.team_id,
                access=access,
            )
        return User(
            id=row.user_id,
            name=row.username,
            token_id=row.token_id,
            is_site_admin=row.is_site_admin,
            access=access,
        )

    # ---- bootstrap ------------------------------------------------------------------------

    def ensure_admin(self) -> UserRow:
        """The built-in site admin, created once even when several replicas start together."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            user = s.scalar(select(UserRow).where(UserRow.username == ADMIN_USERNAME))
            if user is not None:
                return user
            user = UserRow(
                id=ids.new_id("user"),
                username=ADMIN_USERNAME,
                email="",
                is_site_admin=True,
                created_at=now,
            )
            s.add(user)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                found = s.scalar(select(UserRow).where(UserRow.username == ADMIN_USERNAME))
                assert found is not None
                return found
            log.info("created the built-in site admin", extra={"user_id": user.id})
            return user

    def set_admin_env_token(self, value: str) -> None:
        """Make CAIRN_ADMIN_TOKEN's exact value the admin's token, replacing an earlier value."""
        admin = self.ensure_admin()
        digest = self._keys.token_hash(value)
        with self._db.unit_of_work(write=True) as s:
            existing = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
            if (
                existing is not None
                and existing.kind == KIND_ADMIN_ENV
                and existing.revoked_at is None
            ):
                return
            s.execute(delete(ApiToken).where(ApiToken.kind == KIND_ADMIN_ENV))
            try:
                if existing is not None:
                    s.delete(existing)
                    s.flush()
                self.issue(s, admin.id, KIND_ADMIN_ENV, "CAIRN_ADMIN_TOKEN", value=value)
                s.commit()
            except IntegrityError:  # another replica stored the same value at the same moment
                s.rollback()

    def bootstrap_admin_token(self) -> str | None:
        """On the very first start (the admin has no token at all), create one and return it so
        the caller can print it once. Returns None on every later start."""
        admin = self.ensure_admin()
        with self._db.unit_of_work(write=True) as s:
            has_any = s.scalar(select(ApiToken.id).where(ApiToken.user_id == admin.id).limit(1))
            if has_any is not None:
                return None
            _, value = self.issue(s, admin.id, KIND_BOOTSTRAP, "created at first start")
            s.commit()
            return value


@dataclass(frozen=True)
class Admitted:
    """A token the pipeline let in, and the last-used write to do after the request."""

    subject: Subject
    presented: Presented
    tokens: TokenService

    def after(self) -> None:
        self.tokens._touch(self.presented)


class PrefixedAuthenticator(Protocol):
    """Authenticates the tokens of one registered prefix (``TokenService.add_prefix``)."""

    def authenticate(self, credential: str) -> Authenticated: ...


class TokenAuthenticator:
    """API tokens (``Authorization: Bearer <token>``) for the request pipeline: read in the
    job's own transaction (``TokenService._lookup`` joins the unit of work in progress).
    A token of a registered prefix (a job token) goes to its own authenticator."""

    def __init__(self, tokens: TokenService) -> None:
        self._tokens = tokens

    def credential(self, request: Request) -> str | None:
        return bearer_token(request)

    def missing(self) -> Unauthorized:
        return Unauthorized(
            "a valid API token is required: pass it as 'Authorization: Bearer <token>' "
            "(terraform login, or a credentials block in the CLI configuration)"
        )

    def authenticate(self, credential: str) -> Authenticated:
        tokens = self._tokens
        other = tokens._prefixed_for(credential)
        if other is not None:
            return other.authenticate(credential)
        with tokens._db.read_transaction() as conn:
            presented = tokens._lookup(conn, credential)
        try:
            subject = tokens._admit(presented)
        except Unauthorized:
            tokens._touch(presented)  # a disabled user's token was still used
            raise
        return Admitted(subject, presented, tokens)
