"""Rows of ``api_tokens`` and of the service accounts that own organization and team tokens,
read and written in the caller's unit of work, and ``TokenLedger``: issuing and revoking a
token together with its audit event (shared by user, organization and team tokens). A service
account (an organization or team token) never issues a token of any kind.

A service account is found only by its real columns (``users.organization_id`` and
``users.team_id``), never by its name, which is for display (``authz.subject``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import ids
from cairn.audit.log import Actor, record
from cairn.auth.model import ApiToken, User
from cairn.auth.tokens import TokenService
from cairn.authz.subject import ServiceAccount, Subject
from cairn.authz.subject import User as Person
from cairn.clock import Clock, iso8601
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Forbidden, Invalid, NotFound
from cairn.paging import Page

MAX_DESCRIPTION = 255
USERNAME_MAX = 100  # users.username
HIDDEN = "there is no such token, or you are not allowed to see it"


@dataclass(frozen=True)
class TokenRow:
    """A token's row, its owner, and (for team tokens) the team it speaks for."""

    token: ApiToken
    owner: User
    team_id: str | None = None


@dataclass(frozen=True)
class Issued:
    """A token just created: its row and its value, which is never available again."""

    row: TokenRow
    value: str


# ---- reads -----------------------------------------------------------------------------------


def team_of(user: User) -> str | None:
    """The team a team token's service account speaks for (None for anyone else)."""
    return user.team_id if user.is_service_account else None


def org_service_account(s: Session, organization_id: str) -> User | None:
    """The organization token's service account, if it was ever made."""
    return s.scalar(
        select(User).where(
            User.organization_id == organization_id,
            User.team_id.is_(None),
            User.is_service_account,
        )
    )


def team_service_account(s: Session, team_id: str) -> User | None:
    """The team tokens' service account, if it was ever made."""
    return s.scalar(select(User).where(User.team_id == team_id, User.is_service_account))


def team_service_accounts(s: Session, team_ids: list[str]) -> dict[str, User]:
    """The service accounts of these teams' tokens, by user ID."""
    if not team_ids:
        return {}
    stmt = select(User).where(User.team_id.in_(team_ids), User.is_service_account)
    return {u.id: u for u in s.scalars(stmt)}


def token_with_owner(s: Session, token_id: str) -> TokenRow | None:
    """A token that is not revoked, with its owner."""
    if not ids.looks_like("token", token_id):
        return None
    found = s.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
    ).first()
    if found is None:
        return None
    token, owner = found
    return TokenRow(token, owner, team_of(owner))


def active(s: Session, user_id: str, kinds: tuple[str, ...]) -> list[ApiToken]:
    """The user's tokens of ``kinds`` that are not revoked."""
    return list(
        s.scalars(
            select(ApiToken).where(
                ApiToken.user_id == user_id,
                ApiToken.kind.in_(kinds),
                ApiToken.revoked_at.is_(None),
            )
        )
    )


def newest_active(s: Session, svc: User | None, kinds: tuple[str, ...]) -> ApiToken | None:
    """A service account's newest token of ``kinds`` that is not revoked."""
    if svc is None or not svc.is_service_account:
        return None
    rows = sorted(active(s, svc.id, kinds), key=lambda t: t.created_at, reverse=True)
    return rows[0] if rows else None


def page_of(s: Session, stmt: Select[ApiToken], page: Page) -> tuple[list[ApiToken], int]:
    """One page of the tokens ``stmt`` selects that are not revoked, newest first, and their
    total."""
    stmt = stmt.where(ApiToken.revoked_at.is_(None))
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    order = (ApiToken.created_at.desc(), ApiToken.id.desc())
    rows = list(s.scalars(stmt.order_by(*order).offset(page.offset).limit(page.size)))
    return rows, total


def service_tokens(
    s: Session, owners: dict[str, User], kinds: tuple[str, ...], page: Page
) -> tuple[list[TokenRow], int]:
    """One page of the tokens of ``kinds`` held by the service accounts ``owners`` (by id)."""
    if not owners:
        return [], 0
    stmt = select(ApiToken).where(ApiToken.user_id.in_(list(owners)), ApiToken.kind.in_(kinds))
    rows, total = page_of(s, stmt, page)
    return [TokenRow(t, owners[t.user_id], team_of(owners[t.user_id])) for t in rows], total


# ---- writes ----------------------------------------------------------------------------------


def lock_user(s: Session, user_id: str) -> User:
    """The service account's row, locked for this transaction (PostgreSQL), so two requests
    replacing the same token take turns; SQLite's write transactions already do."""
    user = s.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        raise Conflict("the token's service account was deleted at the same moment; retry")
    return user


def mark_revoked(s: Session, token_id: str, now: datetime) -> bool:
    """Revoke a token unless someone else did a moment ago (a conditional update)."""
    return bool(
        affected(
            s.execute(
                update(ApiToken)
                .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        )
    )


def check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise Invalid(
            f"expired-at must be in the future (it is {iso8601(expires_at)}, "
            f"now is {iso8601(now)})",
            pointer="/data/attributes/expired-at",
        )


def _actor(caller: Subject, source_address: str) -> Actor:
    return Actor(caller.id, caller.name, source_address)


def _subject(token: ApiToken) -> str:
    return f"{token.id} ({token.description})" if token.description else token.id


class TokenLedger:
    """Issuing and revoking tokens on behalf of a caller, each with its audit event in the
    same transaction (naming the token by id and description, never its value), and the
    service accounts organization and team tokens belong to."""

    def __init__(self, db: Database, clock: Clock, tokens: TokenService) -> None:
        self.db = db
        self.clock = clock
        self.tokens = tokens

    def issue(
        self,
        s: Session,
        caller: Subject,
        owner: User,
        kind: str,
        description: str,
        expires_at: datetime | None,
        source_address: str,
        *,
        organization: str | None = None,
        team_id: str | None = None,
    ) -> Issued:
        if isinstance(caller, ServiceAccount):
            # An organization or team token never makes another token: one it made would
            # outlive its revocation (and a team token could outlast its own team's).
            raise Forbidden(
                "organization and team tokens may not create API tokens; use a person's token"
            )
        creator = caller.id if isinstance(caller, Person) else None
        token, value = self.tokens.issue(
            s, owner.id, kind, description, expires_at, created_by=creator
        )
        record(
            s,
            at=token.created_at,
            actor=_actor(caller, source_address),
            action="token.create",
            subject=_subject(token),
            token_id=token.id,
            kind=kind,
            description=description,
            user_id=owner.id,
            username=owner.username,
            expires_at=iso8601(expires_at),
            organization=organization,
            team_id=team_id,
        )
        return Issued(TokenRow(token, owner, team_id), value)

    def revoke(
        self, s: Session, caller: Subject, row: TokenRow, source_address: str, reason: str
    ) -> None:
        now = self.clock.now()
        if not mark_revoked(s, row.token.id, now):  # revoked by someone else a moment ago
            raise NotFound(HIDDEN)
        record(
            s,
            at=now,
            actor=_actor(caller, source_address),
            action="token.revoke",
            subject=_subject(row.token),
            token_id=row.token.id,
            kind=row.token.kind,
            description=row.token.description,
            user_id=row.owner.id,
            username=row.owner.username,
            reason=reason,
            team_id=row.team_id,
        )

    def service_account(
        self, display_name: str, organization_id: str, *, team_id: str | None = None
    ) -> str:
        """The id of the service account of an organization (``team_id`` None) or of a team,
        created when missing — once, even when several requests race — and shown as
        ``display_name``."""
        if len(display_name) > USERNAME_MAX:
            raise Invalid(f"the name {display_name!r} is too long for a service account")
        for _ in range(3):
            with self.db.unit_of_work(write=True) as s:
                if team_id is None:
                    user = org_service_account(s, organization_id)
                else:
                    user = team_service_account(s, team_id)
                if user is not None:
                    return user.id
                user = User(
                    id=ids.new_id("user"),
                    username=display_name,
                    email="",
                    is_site_admin=False,
                    is_service_account=True,
                    organization_id=organization_id,
                    team_id=team_id,
                    created_at=self.clock.now(),
                )
                s.add(user)
                try:
                    s.commit()
                except IntegrityError:  # made by another request first, or the name is taken
                    s.rollback()
                    continue
                return user.id
        # Still missing after losing every race: the display name belongs to someone else.
        raise Conflict(
            f"the user name {display_name!r} is taken, so cairn cannot create the service "
            "account for this token; rename that user"
        )
