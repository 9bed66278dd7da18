"""Disabling and re-enabling a person's account (site admins only).

Disabling is how an administrator cuts someone off — an employee who left, or an IdP user
removed at the IdP (cairn is not told when that happens: their ``terraform login`` tokens would
keep working until they expire, which they never do). In one transaction, with its audit
events:

* ``users.disabled_at`` is set (a conditional UPDATE: of two admins, one does it);
* every token the person holds that is not revoked yet — API tokens they or an admin made,
  ``terraform login`` tokens, the built-in admin's — is revoked (one ``token.revoke`` event
  each, reason ``user disabled``), and their unredeemed login codes are deleted;
* their **IdP-sourced** team memberships are removed. Memberships an administrator granted by
  hand, and grants naming the person, are kept: a disabled account can use none of them (no
  token authenticates, no login succeeds), and re-enabling gives back exactly what was
  granted by hand. IdP memberships come back from the groups claim at the next login.

A disabled person's next login is refused with a clear message, through the token form (their
tokens are revoked and the account disabled) and through the IdP (``upsert_idp_user``).
Enabling clears ``disabled_at`` only: revoked tokens stay revoked; the person logs in again.

Service accounts (organization and team tokens) are not people: revoke their token instead. A
site admin cannot disable their own account (nobody could enable it again through them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.auth.model import ApiToken, OAuthCode, User
from cairn.authz.model import TeamMembership
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, NotFound

DISABLED_REASON = "user disabled"


@dataclass(frozen=True)
class AccountChange:
    """What disabling or enabling did: the account as it is now, and what was taken away."""

    user: User
    changed: bool  # False: it was already in the state asked for
    revoked_tokens: list[str] = field(default_factory=list)
    removed_teams: list[str] = field(default_factory=list)


def find_user(s: Session, ref: str, *, lock: bool = False) -> User:
    """A person's account by ID (``user-…``) or by username (an ID-shaped reference matches
    IDs only: no username looks like an ID). NotFound otherwise."""
    column = User.id if ids.looks_like("user", ref) else User.username
    stmt = select(User).where(column == ref)
    user = s.scalar(stmt.with_for_update() if lock else stmt)
    if user is None:
        raise NotFound(f"there is no user {ref!r} (see `cairn rbac users list`)")
    return user


class UserAccounts:
    """Site administration: disable and enable a person's account."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def disable(self, caller: Subject, ref: str, source: str) -> AccountChange:
        """Disable ``ref`` (an ID or a username): see the module docstring. Disabling an
        account that is already disabled revokes what it may have been given since (an admin
        can still make a token for it) and is otherwise a no-op."""
        authz.require(caller, authz.SITE_MANAGE, authz.SITE, doing="disable users in")
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            user = find_user(s, ref, lock=True)
            if user.is_service_account:
                raise Conflict(
                    f"{user.username} is an organization or team token's service account, not a "
                    "person: revoke the organization or team token instead"
                )
            if user.id == caller.id:
                raise Conflict(
                    "you cannot disable your own account; ask another site admin to do it"
                )
            changed = affected(
                s.execute(
                    update(User)
                    .where(User.id == user.id, User.disabled_at.is_(None))
                    .values(disabled_at=now)
                    .execution_options(synchronize_session=False)
                )
            )
            actor = Actor(caller.id, caller.name, source)
            revoked = _revoke_tokens(s, user, actor, now)
            s.execute(
                delete(OAuthCode)
                .where(OAuthCode.user_id == user.id, OAuthCode.used_at.is_(None))
                .execution_options(synchronize_session=False)
            )
            removed = _remove_idp_memberships(s, user.id)
            if changed or revoked or removed:
                record(
                    s,
                    at=now,
                    actor=actor,
                    action="user.disable",
                    subject=user.username,
                    user_id=user.id,
                    revoked_tokens=revoked,
                    removed_idp_memberships=removed,
                    already_disabled=not changed,
                )
            s.commit()
            s.refresh(user)
            return AccountChange(user, bool(changed), revoked, removed)

    def enable(self, caller: Subject, ref: str, source: str) -> AccountChange:
        """Enable ``ref`` again (its revoked tokens stay revoked: the person logs in again)."""
        authz.require(caller, authz.SITE_MANAGE, authz.SITE, doing="enable users in")
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            user = find_user(s, ref, lock=True)
            changed = affected(
                s.execute(
                    update(User)
                    .where(User.id == user.id, User.disabled_at.is_not(None))
                    .values(disabled_at=None)
                    .execution_options(synchronize_session=False)
                )
            )
            if changed:
                record(
                    s,
                    at=now,
                    actor=Actor(caller.id, caller.name, source),
                    action="user.enable",
                    subject=user.username,
                    user_id=user.id,
                )
            s.commit()
            s.refresh(user)
            return AccountChange(user, bool(changed))


def _revoke_tokens(s: Session, user: User, actor: Actor, now: datetime) -> list[str]:
    """Revoke every token of ``user`` that is not revoked yet; their IDs."""
    tokens = list(
        s.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.created_at, ApiToken.id)
        )
    )
    revoked: list[str] = []
    for token in tokens:
        won = affected(
            s.execute(
                update(ApiToken)
                .where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        if not won:
            continue
        revoked.append(token.id)
        record(
            s,
            at=now,
            actor=actor,
            action="token.revoke",
            subject=f"{token.id} ({token.description})" if token.description else token.id,
            token_id=token.id,
            kind=token.kind,
            description=token.description,
            user_id=user.id,
            username=user.username,
            reason=DISABLED_REASON,
        )
    return revoked


def _remove_idp_memberships(s: Session, user_id: str) -> list[str]:
    """Delete the user's IdP-sourced team memberships; the IDs of those teams."""
    idp_sourced = (TeamMembership.user_id == user_id, TeamMembership.source == "idp")
    team_ids = sorted(s.scalars(select(TeamMembership.team_id).where(*idp_sourced)))
    if team_ids:
        s.execute(
            delete(TeamMembership).where(*idp_sourced).execution_options(synchronize_session=False)
        )
    return team_ids
