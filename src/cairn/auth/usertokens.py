"""User tokens, and any token by id (``/authentication-tokens/{id}``).

Every token is a row of ``api_tokens`` owned by a user; only its keyed hash is stored, and its
value is returned once, by the call that creates it (``TokenService.issue``). Revoking sets
``revoked_at``: authentication refuses the token from then on, and the row stays (hash only)
so the audit trail keeps pointing at something.

Who may do what: a person manages their own tokens, a site admin anyone's; a token of an
organization or team service account is managed by whoever may manage that organization
(``org:manage``). A token the caller may not manage does not exist for them (404). Service
accounts cannot mint user tokens, which would outlive the revocation of the organization or
team token they came from.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cairn import authz
from cairn.auth import token_store as store
from cairn.auth.model import ApiToken, User
from cairn.auth.token_store import HIDDEN, Issued, TokenLedger, TokenRow
from cairn.auth.tokens import KIND_USER
from cairn.authz.permissions import ORG_MANAGE
from cairn.authz.subject import ServiceAccount, Subject
from cairn.errors import Forbidden, Invalid, NotFound
from cairn.paging import Page


def _is_site_admin(caller: Subject) -> bool:
    return authz.allowed(caller, authz.SITE_MANAGE, authz.SITE)


def _manages_tokens_of(caller: Subject, user: User) -> bool:
    """A person their own tokens (not a service account: see the module docstring), a site
    admin anyone's."""
    own = user.id == caller.id and not isinstance(caller, ServiceAccount)
    return own or _is_site_admin(caller)


def _manages_token(caller: Subject, row: TokenRow) -> bool:
    owner = row.owner
    if _is_site_admin(caller):
        return True
    if not owner.is_service_account:
        return owner.id == caller.id
    org_id = owner.organization_id
    # Only the organization's ID is at hand, and only that is checked.
    return org_id is not None and authz.allowed(caller, ORG_MANAGE, authz.Org(org_id, ""))


class UserTokens:
    """Creating, listing, reading and revoking user tokens (and any token by id)."""

    def __init__(self, ledger: TokenLedger) -> None:
        self._ledger = ledger
        self._db = ledger.db
        self._clock = ledger.clock

    def create_user_token(
        self,
        caller: Subject,
        user_id: str,
        description: str,
        expires_at: datetime | None,
        *,
        source_address: str = "",
        kind: str = KIND_USER,
    ) -> Issued:
        """A new token for ``user_id``: the caller themself, or anyone for a site admin."""
        store.check_expiry(expires_at, self._clock.now())
        with self._db.unit_of_work(write=True) as s:
            _caller(s, caller)
            if isinstance(caller, ServiceAccount):
                raise Forbidden(
                    "organization and team tokens may not create user tokens; use a person's "
                    "token (terraform login)"
                )
            user = s.get(User, user_id)
            if user is None:
                raise NotFound(f"user {user_id!r} not found")
            if not _manages_tokens_of(caller, user):
                raise Forbidden("you may create API tokens only for yourself")
            if user.is_service_account:
                raise Invalid(
                    f"{user.username} is a service account: its tokens are made through its "
                    "organization's or team's authentication-token endpoint"
                )
            if user.disabled_at is not None:
                raise Invalid(f"user {user.username} is disabled; enable the user first")
            issued = self._ledger.issue(
                s, caller, user, kind, description, expires_at, source_address
            )
            s.commit()
        return issued

    def list_user_tokens(
        self, caller: Subject, user_id: str, page: Page
    ) -> tuple[list[TokenRow], int]:
        """The user's tokens that are not revoked (expired ones too), newest first."""
        with self._db.unit_of_work() as s:
            _caller(s, caller)
            user = s.get(User, user_id)
            if user is None or not _manages_tokens_of(caller, user):
                raise NotFound(f"user {user_id!r} not found, or you may not see its tokens")
            rows, total = store.page_of(
                s, select(ApiToken).where(ApiToken.user_id == user.id), page
            )
            team_id = store.team_of(user)
            return [TokenRow(t, user, team_id) for t in rows], total

    def get(self, caller: Subject, token_id: str) -> TokenRow:
        """Any token the caller may manage, by id."""
        with self._db.unit_of_work() as s:
            return self._visible(s, caller, token_id)

    def revoke(self, caller: Subject, token_id: str, *, source_address: str = "") -> None:
        """Revoke any token the caller may manage, by id."""
        with self._db.unit_of_work(write=True) as s:
            row = self._visible(s, caller, token_id)
            self._ledger.revoke(s, caller, row, source_address, reason="revoked")
            s.commit()

    @staticmethod
    def _visible(s: Session, caller: Subject, token_id: str) -> TokenRow:
        row = store.token_with_owner(s, token_id)
        if row is None or not _manages_token(caller, row):
            raise NotFound(HIDDEN)
        return row


def _caller(s: Session, caller: Subject) -> User:
    user = s.get(User, caller.id)
    if user is None:  # deleted while the request ran: deny
        raise NotFound("your user no longer exists")
    return user
