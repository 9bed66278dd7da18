"""API tokens: opaque, prefixed, shown once, stored only as a keyed hash.

Format: ``cairn_`` + 43 base62 characters (≈256 bits). The prefix lets secret scanners spot a
leaked token; the hash (HMAC-SHA256 under a key derived from CAIRN_SECRET_KEY) lets cairn find
the row without keeping the token.
"""

from __future__ import annotations

import logging
import secrets
import string
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from cairn import ids
from cairn.auth.model import ApiToken, User
from cairn.auth.principal import Access, Principal
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.engine import Database
from cairn.errors import Unauthorized
from cairn.rbac.access import load_access

log = logging.getLogger("cairn.auth")

TOKEN_PREFIX = "cairn_"  # noqa: S105 - a public prefix for secret scanners, not a secret
_ALPHABET = string.ascii_letters + string.digits
ADMIN_USERNAME = "admin"
# last-used-at is written at most this often per token, so reads do not become writes.
_LAST_USED_GRANULARITY = timedelta(minutes=1)


def new_token_value() -> str:
    return TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(43))


class TokenService:
    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock

    def authenticate(self, token: str) -> Principal:
        """The principal behind a bearer token. Raises Unauthorized, never says why in detail
        beyond what helps the user (no hint whether a token ever existed)."""
        if not token or len(token) > 512:
            raise Unauthorized(
                "a valid API token is required: pass it as 'Authorization: Bearer <token>'"
            )
        digest = self._keys.token_hash(token)
        now = self._clock.now()
        with self._db.unit_of_work() as s:
            row = s.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == digest)
            ).first()
            access = (
                load_access(s, row[1]) if row is not None and not row[1].is_site_admin else None
            )
        if row is None:
            raise Unauthorized("the API token is not valid; check it, or create a new one")
        tok, user = row
        if tok.revoked_at is not None:
            raise Unauthorized("the API token has been revoked; create a new one")
        if tok.expires_at is not None and tok.expires_at <= now:
            raise Unauthorized("the API token has expired; create a new one")
        if tok.last_used_at is None or now - tok.last_used_at >= _LAST_USED_GRANULARITY:
            with self._db.unit_of_work(write=True) as s:
                s.execute(update(ApiToken).where(ApiToken.id == tok.id).values(last_used_at=now))
                s.commit()
        if user.disabled_at is not None:
            raise Unauthorized("this user is disabled; ask an administrator")
        return Principal(
            user_id=user.id,
            username=user.username,
            is_site_admin=user.is_site_admin,
            token_id=tok.id,
            access=access or Access(),
            is_service_account=user.is_service_account,
        )

    # ---- bootstrap ------------------------------------------------------------------------

    def ensure_admin(self) -> User:
        """The built-in site admin, created once even when several replicas start together."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            user = s.scalar(select(User).where(User.username == ADMIN_USERNAME))
            if user is not None:
                return user
            user = User(
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
                found = s.scalar(select(User).where(User.username == ADMIN_USERNAME))
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
                and existing.kind == "admin-env"
                and existing.revoked_at is None
            ):
                return
            s.execute(delete(ApiToken).where(ApiToken.kind == "admin-env"))
            if existing is not None:
                s.delete(existing)
                s.flush()
            s.add(
                ApiToken(
                    id=ids.new_id("token"),
                    user_id=admin.id,
                    token_hash=digest,
                    kind="admin-env",
                    description="CAIRN_ADMIN_TOKEN",
                    created_at=self._clock.now(),
                )
            )
            try:
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
            value = new_token_value()
            s.add(
                ApiToken(
                    id=ids.new_id("token"),
                    user_id=admin.id,
                    token_hash=self._keys.token_hash(value),
                    kind="bootstrap",
                    description="created at first start",
                    created_at=self._clock.now(),
                )
            )
            s.commit()
            return value

    def create(
        self, user_id: str, description: str, expires_at: datetime | None = None
    ) -> tuple[ApiToken, str]:
        """A new token for a user; returns the row and the value (shown once)."""
        value = new_token_value()
        with self._db.unit_of_work(write=True) as s:
            row = ApiToken(
                id=ids.new_id("token"),
                user_id=user_id,
                token_hash=self._keys.token_hash(value),
                kind="user",
                description=description,
                created_at=self._clock.now(),
                expires_at=expires_at,
            )
            s.add(row)
            s.commit()
        return row, value
