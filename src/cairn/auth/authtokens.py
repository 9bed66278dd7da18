"""The TFE ``authentication-tokens`` resource: user, organization and team API tokens.

Every token is a row of ``api_tokens`` owned by a user; only its keyed hash is stored, and its
value is returned once, by the call that creates it. Organization and team tokens belong to
service accounts made on demand (as in HCP Terraform):

* the organization's account (``users.organization_id``) for the organization token (one per
  organization: creating replaces it); authz grants it the organization's rights.
* the team's account (``users.team_id``) for team tokens, a member of its team, so it has the
  team's rights.
  A team has one descriptionless token (the legacy endpoint; creating replaces it) and any
  number of described ones (``/teams/{id}/authentication-tokens``).

Revoking sets ``revoked_at``; authentication refuses the token from then on, and the row stays
(hash only) so the audit trail keeps pointing at something. Every create and revoke writes an
audit event in the same transaction, naming the token by id and description, never its value.

Authorization: user tokens are for their owner (or a site admin); organization and team tokens
need ``org:manage`` in the organization. Reads without the right answer 404, writes 403 (no
existence leak), and service accounts cannot mint user tokens, which would outlive the
revocation of the organization or team token they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.auth.model import ApiToken, User
from cairn.auth.tokens import new_token_value
from cairn.authz.model import Team, TeamMembership
from cairn.authz.permissions import ORG_MANAGE
from cairn.authz.subject import ServiceAccount, Subject, org_service_name, team_service_name
from cairn.clock import Clock, iso8601
from cairn.crypto import Keyring
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Forbidden, Invalid, NotFound
from cairn.organizations.model import Organization
from cairn.paging import Page

KIND_USER = "user"
KIND_ORGANIZATION = "organization"
KIND_TEAM = "team"  # the team's one descriptionless token (legacy endpoint)
KIND_TEAM_DESCRIBED = "team-described"  # one of a team's described tokens
TEAM_KINDS = (KIND_TEAM, KIND_TEAM_DESCRIBED)
MEMBERSHIP_SOURCE = "token"  # TeamMembership.source of a team token's service account
MAX_DESCRIPTION = 255
_USERNAME_MAX = 100  # users.username

_HIDDEN = "there is no such token, or you are not allowed to see it"


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


class AuthenticationTokens:
    """Creating, listing, reading and revoking API tokens on behalf of a caller."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock

    # ---- user tokens ------------------------------------------------------------------------

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
        now = self._clock.now()
        _check_expiry(expires_at, now)
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
            if user.id != caller.id and not caller.is_site_admin:
                raise Forbidden("you may create API tokens only for yourself")
            if user.is_service_account:
                raise Invalid(
                    f"{user.username} is a service account: its tokens are made through its "
                    "organization's or team's authentication-token endpoint"
                )
            if user.disabled_at is not None:
                raise Invalid(f"user {user.username} is disabled; enable the user first")
            issued = self._issue(s, caller, user, kind, description, expires_at, source_address)
            s.commit()
        return issued

    def list_user_tokens(
        self, caller: Subject, user_id: str, page: Page
    ) -> tuple[list[TokenRow], int]:
        """The user's tokens that are not revoked (expired ones too), newest first."""
        with self._db.unit_of_work() as s:
            _caller(s, caller)
            user = s.get(User, user_id)
            allowed = caller.is_site_admin or (
                user is not None and user.id == caller.id and not isinstance(caller, ServiceAccount)
            )
            if user is None or not allowed:
                raise NotFound(f"user {user_id!r} not found, or you may not see its tokens")
            rows, total = _page(
                s, select(ApiToken).where(ApiToken.user_id == user.id), page, newest_first=True
            )
            team_id = _team_of(user)
            return [TokenRow(t, user, team_id) for t in rows], total

    # ---- any token by id --------------------------------------------------------------------

    def get(self, caller: Subject, token_id: str) -> TokenRow:
        with self._db.unit_of_work() as s:
            return self._visible(s, caller, token_id)

    def revoke(self, caller: Subject, token_id: str, *, source_address: str = "") -> None:
        with self._db.unit_of_work(write=True) as s:
            row = self._visible(s, caller, token_id)
            self._revoke(s, caller, row, source_address, reason="revoked")
            s.commit()

    # ---- the organization token -------------------------------------------------------------

    def create_org_token(
        self,
        caller: Subject,
        org_name: str,
        expires_at: datetime | None,
        *,
        source_address: str = "",
    ) -> Issued:
        """The organization's new token; the one before it (if any) is revoked."""
        now = self._clock.now()
        _check_expiry(expires_at, now)
        username = org_service_name(org_name)
        with self._db.unit_of_work() as s:  # authorize before making a service account
            org_id = _org_for_write(s, caller, org_name).id
        if len(username) > _USERNAME_MAX:
            raise Invalid(
                f"organization names longer than {_USERNAME_MAX - len(username) + len(org_name)} "
                "characters cannot have an organization token"
            )
        service_id = self._service_account(username, org_id)
        with self._db.unit_of_work(write=True) as s:
            org = _org_for_write(s, caller, org_name)
            svc = _lock_user(s, service_id)
            for old in _active(s, svc.id, (KIND_ORGANIZATION,)):
                self._revoke(s, caller, TokenRow(old, svc), source_address, reason="replaced")
            issued = self._issue(
                s,
                caller,
                svc,
                KIND_ORGANIZATION,
                "",
                expires_at,
                source_address,
                organization=org.name,
            )
            s.commit()
        return issued

    def get_org_token(self, caller: Subject, org_name: str) -> TokenRow:
        with self._db.unit_of_work() as s:
            org = _org_for_read(s, caller, org_name)
            svc = _org_service_account(s, org.id)
            token = _single(s, svc, (KIND_ORGANIZATION,))
            if svc is None or token is None:
                raise NotFound(f"organization {org_name!r} has no organization token")
            return TokenRow(token, svc)

    def revoke_org_token(self, caller: Subject, org_name: str, *, source_address: str = "") -> None:
        with self._db.unit_of_work(write=True) as s:
            org = _org_for_write(s, caller, org_name)
            svc = _org_service_account(s, org.id)
            token = _single(s, svc, (KIND_ORGANIZATION,))
            if svc is None or token is None:
                raise NotFound(f"organization {org_name!r} has no organization token")
            self._revoke(s, caller, TokenRow(token, svc), source_address, reason="revoked")
            s.commit()

    # ---- team tokens ------------------------------------------------------------------------

    def create_team_token(
        self,
        caller: Subject,
        team_id: str,
        expires_at: datetime | None,
        *,
        description: str | None = None,
        source_address: str = "",
    ) -> Issued:
        """Without a description: the team's one token, replacing the one before. With one:
        an additional token (HCP Terraform's multiple team tokens)."""
        now = self._clock.now()
        _check_expiry(expires_at, now)
        with self._db.unit_of_work() as s:  # authorize before making a service account
            _, found_org = _team_for_write(s, caller, team_id)
        service_id = self._service_account(
            team_service_name(team_id), found_org.id, team_id=team_id
        )
        with self._db.unit_of_work(write=True) as s:
            team, org = _team_for_write(s, caller, team_id)
            svc = _lock_user(s, service_id)
            if description is None:
                kind = KIND_TEAM
                for old in _active(s, svc.id, (KIND_TEAM,)):
                    self._revoke(
                        s, caller, TokenRow(old, svc, team.id), source_address, reason="replaced"
                    )
            else:
                kind = KIND_TEAM_DESCRIBED
            issued = self._issue(
                s,
                caller,
                svc,
                kind,
                description or "",
                expires_at,
                source_address,
                organization=org.name,
                team_id=team.id,
            )
            s.commit()
        return issued

    def get_team_token(self, caller: Subject, team_id: str) -> TokenRow:
        with self._db.unit_of_work() as s:
            team, _ = _team_for_read(s, caller, team_id)
            svc = _team_service_account(s, team.id)
            token = _single(s, svc, (KIND_TEAM,))
            if svc is None or token is None:
                raise NotFound(f"team {team_id!r} has no team token")
            return TokenRow(token, svc, team.id)

    def revoke_team_token(self, caller: Subject, team_id: str, *, source_address: str = "") -> None:
        with self._db.unit_of_work(write=True) as s:
            team, _ = _team_for_write(s, caller, team_id)
            svc = _team_service_account(s, team.id)
            token = _single(s, svc, (KIND_TEAM,))
            if svc is None or token is None:
                raise NotFound(f"team {team_id!r} has no team token")
            self._revoke(s, caller, TokenRow(token, svc, team.id), source_address, "revoked")
            s.commit()

    def list_team_tokens(
        self, caller: Subject, team_id: str, page: Page
    ) -> tuple[list[TokenRow], int]:
        with self._db.unit_of_work() as s:
            team, _ = _team_for_read(s, caller, team_id)
            return self._team_tokens(s, [team.id], page)

    def list_org_team_tokens(
        self, caller: Subject, org_name: str, page: Page
    ) -> tuple[list[TokenRow], int]:
        with self._db.unit_of_work() as s:
            org = _org_for_read(s, caller, org_name)
            team_ids = list(s.scalars(select(Team.id).where(Team.organization_id == org.id)))
            return self._team_tokens(s, team_ids, page)

    # ---- internals --------------------------------------------------------------------------

    @staticmethod
    def _team_tokens(s: Session, team_ids: list[str], page: Page) -> tuple[list[TokenRow], int]:
        if not team_ids:
            return [], 0
        users = {
            u.id: u
            for u in s.scalars(
                select(User).where(User.team_id.in_(team_ids), User.is_service_account)
            )
        }
        if not users:
            return [], 0
        stmt = select(ApiToken).where(
            ApiToken.user_id.in_(list(users)),
            ApiToken.kind.in_(TEAM_KINDS),
            ApiToken.revoked_at.is_(None),
        )
        rows, total = _page(s, stmt, page, newest_first=True)
        out = [TokenRow(t, users[t.user_id], _team_of(users[t.user_id])) for t in rows]
        return out, total

    def _visible(self, s: Session, caller: Subject, token_id: str) -> TokenRow:
        """The token if the caller may see (and so manage) it; NotFound otherwise."""
        if not ids.looks_like("token", token_id):
            raise NotFound(_HIDDEN)
        found = s.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        ).first()
        if found is None:
            raise NotFound(_HIDDEN)
        token, owner = found
        row = TokenRow(token, owner, _team_of(owner))
        if caller.is_site_admin:
            return row
        if not owner.is_service_account:
            if owner.id == caller.id:
                return row
            raise NotFound(_HIDDEN)
        org_id = _service_org_id(s, owner)
        if org_id is not None and authz.can(caller, ORG_MANAGE, org_id):
            return row
        raise NotFound(_HIDDEN)

    def _service_account(
        self, username: str, organization_id: str, *, team_id: str | None = None
    ) -> str:
        """The id of the service account of an organization (or of a team), created (once,
        even under races) when missing, named ``username``; for a team token it is made a
        member of the team."""
        for _ in range(3):
            with self._db.unit_of_work(write=True) as s:
                if team_id is None:
                    user = _org_service_account(s, organization_id)
                else:
                    user = _team_service_account(s, team_id)
                if user is None:
                    user = s.scalar(select(User).where(User.username == username))
                if user is None:
                    user = User(
                        id=ids.new_id("user"),
                        username=username,
                        email="",
                        is_site_admin=False,
                        is_service_account=True,
                        organization_id=organization_id,
                        team_id=team_id,
                        created_at=self._clock.now(),
                    )
                    s.add(user)
                elif (
                    not user.is_service_account
                    or user.is_site_admin
                    or user.organization_id != organization_id
                    or user.team_id != team_id
                ):
                    # A person who picked this name must never receive an organization's token.
                    raise Conflict(
                        f"the user name {username!r} is taken by a person, so cairn cannot "
                        "create the service account for this token; rename that user"
                    )
                if team_id is not None and s.get(TeamMembership, (team_id, user.id)) is None:
                    s.add(
                        TeamMembership(team_id=team_id, user_id=user.id, source=MEMBERSHIP_SOURCE)
                    )
                try:
                    s.commit()
                except IntegrityError:  # another request created the same rows first: re-read
                    continue
                return user.id
        raise Conflict(f"could not create the service account {username!r}; retry")

    def _issue(
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
        value = new_token_value()
        now = self._clock.now()
        token = ApiToken(
            id=ids.new_id("token"),
            user_id=owner.id,
            token_hash=self._keys.token_hash(value),
            kind=kind,
            description=description,
            created_at=now,
            expires_at=expires_at,
        )
        s.add(token)
        s.flush()
        record(
            s,
            at=now,
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

    def _revoke(
        self, s: Session, caller: Subject, row: TokenRow, source_address: str, reason: str
    ) -> None:
        now = self._clock.now()
        done = affected(
            s.execute(
                update(ApiToken)
                .where(ApiToken.id == row.token.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        )
        if not done:  # revoked by someone else a moment ago
            raise NotFound(_HIDDEN)
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


# ---- helpers ---------------------------------------------------------------------------------


def _check_expiry(expires_at: datetime | None, now: datetime) -> None:
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


def _caller(s: Session, caller: Subject) -> User:
    user = s.get(User, caller.id)
    if user is None:  # deleted while the request ran: deny
        raise NotFound("your user no longer exists")
    return user


def _team_of(user: User) -> str | None:
    return user.team_id if user.is_service_account else None


def _service_org_id(s: Session, owner: User) -> str | None:
    """The organization an organization or team service account belongs to."""
    return owner.organization_id if owner.is_service_account else None


def _org_service_account(s: Session, organization_id: str) -> User | None:
    return s.scalar(
        select(User).where(
            User.organization_id == organization_id,
            User.team_id.is_(None),
            User.is_service_account,
        )
    )


def _team_service_account(s: Session, team_id: str) -> User | None:
    return s.scalar(select(User).where(User.team_id == team_id, User.is_service_account))


def _org_for_read(s: Session, caller: Subject, name: str) -> Organization:
    org = s.scalar(select(Organization).where(Organization.name == name))
    if org is None or not authz.can(caller, ORG_MANAGE, org.id):
        raise NotFound(f"organization {name!r} not found, or you may not see its token")
    return org


def _org_for_write(s: Session, caller: Subject, name: str) -> Organization:
    org = s.scalar(select(Organization).where(Organization.name == name))
    if org is None or not authz.permissions(caller, org.id):
        raise NotFound(f"organization {name!r} not found, or you are not allowed to see it")
    if not authz.can(caller, ORG_MANAGE, org.id):
        raise Forbidden(f"managing the tokens of organization {name!r} needs org:manage")
    return org


def _team_for_read(s: Session, caller: Subject, team_id: str) -> tuple[Team, Organization]:
    found = s.execute(
        select(Team, Organization)
        .join(Organization, Organization.id == Team.organization_id)
        .where(Team.id == team_id)
    ).first()
    if found is None or not authz.can(caller, ORG_MANAGE, found[1].id):
        raise NotFound(f"team {team_id!r} not found, or you may not see its tokens")
    return found[0], found[1]


def _team_for_write(s: Session, caller: Subject, team_id: str) -> tuple[Team, Organization]:
    found = s.execute(
        select(Team, Organization)
        .join(Organization, Organization.id == Team.organization_id)
        .where(Team.id == team_id)
    ).first()
    if found is None or not authz.permissions(caller, found[1].id):
        raise NotFound(f"team {team_id!r} not found, or you are not allowed to see it")
    if not authz.can(caller, ORG_MANAGE, found[1].id):
        raise Forbidden(f"managing the tokens of team {team_id!r} needs org:manage")
    return found[0], found[1]


def _lock_user(s: Session, user_id: str) -> User:
    """The service account's row, locked for this transaction (PostgreSQL), so two requests
    replacing the same token take turns; SQLite's write transactions already do."""
    user = s.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        raise Conflict("the token's service account was deleted at the same moment; retry")
    return user


def _active(s: Session, user_id: str, kinds: tuple[str, ...]) -> list[ApiToken]:
    return list(
        s.scalars(
            select(ApiToken).where(
                ApiToken.user_id == user_id,
                ApiToken.kind.in_(kinds),
                ApiToken.revoked_at.is_(None),
            )
        )
    )


def _single(s: Session, svc: User | None, kinds: tuple[str, ...]) -> ApiToken | None:
    if svc is None or not svc.is_service_account:
        return None
    rows = sorted(_active(s, svc.id, kinds), key=lambda t: t.created_at, reverse=True)
    return rows[0] if rows else None


def _page(
    s: Session, stmt: Select[ApiToken], page: Page, *, newest_first: bool
) -> tuple[list[ApiToken], int]:
    stmt = stmt.where(ApiToken.revoked_at.is_(None))
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    order = (ApiToken.created_at.desc(), ApiToken.id.desc()) if newest_first else ()
    rows = list(s.scalars(stmt.order_by(*order).offset(page.offset).limit(page.size)))
    return rows, total
