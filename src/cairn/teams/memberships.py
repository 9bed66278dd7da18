"""Organization memberships (HCP Terraform's ``organization-memberships``).

What a membership is in cairn (decided here, documented in the README):

* A person is an **active** member of an organization when they belong to one of its teams
  (that is where their rights come from), or when they were invited while already having an
  account (then they are a member in no team: listed, with no rights until a team or grant
  gives some — HCP Terraform's member without teams). A team member's membership has the ID
  ``ou-`` + the random parts of the organization's and the user's IDs (derived, so it exists
  exactly as long as the team membership does); an invited member's has a stored row.
* An invitation of an email no account has is a **pending** membership (``status:
  "invited"``, a stored row with the teams it names). cairn sends no email: the invitation
  is taken up when the person logs in through the IdP with that email (the first login
  creates their account; ``accept_invitations``, audited ``org.member.accept``), or when
  someone invites them again by username (or by the same email) once they have an account —
  then they join the invitation's teams and the row becomes active. Until then the person
  sees the invitations of their account's email in their own memberships
  (``GET /organization-memberships``, as in HCP Terraform).
* Inviting someone who has an account adds them at once (to the named teams, if any).
* Deleting a membership takes the person out of every team of the organization (the owners
  team needs ``org:manage`` and keeps one member) and deletes any stored row.

Rights, as HCP Terraform documents them: listing and reading memberships takes seeing the
organization (its members do); inviting and removing takes ``manage-membership``
(``org:manage-membership``); every caller lists their own memberships
(``GET /organization-memberships``). "Only one may win" rules are the database's: one stored
row per (organization, person), one pending invitation per (organization, email).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Select, String, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.auth.model import User
from cairn.authz.model import Team, TeamMembership
from cairn.authz.permissions import ORG_MANAGE, ORG_MANAGE_MEMBERSHIP, ORG_READ
from cairn.authz.roles import OWNERS_TEAM
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.base import Base, UTCDateTime, partial_index
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Invalid
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.teams import store
from cairn.teams.targets import may_see_team

ACTIVE = "active"
INVITED = "invited"
PREFIX = "ou-"
MAX_TEAMS = 100  # teams one invitation may name
# Invitations one login takes up (oldest first); more are taken up at the next logins.
MAX_ACCEPTED_PER_LOGIN = 100


class OrganizationMembership(Base):
    """A stored membership: a pending invitation (``user_id`` None, by ``email``) or an
    invited person with an account (``status`` active). Team members need no row."""

    __tablename__ = "organization_memberships"
    __table_args__ = (
        Index("uq_organization_memberships_user", "organization_id", "user_id", unique=True),
        partial_index(
            "uq_organization_memberships_pending_email",
            "organization_id",
            "email",
            unique=True,
            where="user_id IS NULL",
        ),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    email: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16))
    # The teams a pending invitation will join (comma-separated team IDs).
    team_ids: Mapped[str] = mapped_column(String(4000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass
class MembershipView:
    """One membership as the API shows it."""

    id: str
    status: str
    email: str
    org: Organization
    user: User | None
    team_ids: list[str] = field(default_factory=list)


def derived_id(org_id: str, user_id: str) -> str:
    """The ID of a team member's membership: the random parts of both IDs."""
    return PREFIX + org_id.partition("-")[2] + user_id.partition("-")[2]


def _split_derived(membership_id: str) -> tuple[str, str] | None:
    rest = membership_id.removeprefix(PREFIX)
    if not membership_id.startswith(PREFIX) or len(rest) != 32 or not rest.isalnum():
        return None
    return "org-" + rest[:16], "user-" + rest[16:]


def _team_member_ids(s: Session, org_id: str) -> Select[Any]:
    return (
        select(TeamMembership.user_id)
        .join(Team, Team.id == TeamMembership.team_id)
        .where(Team.organization_id == org_id)
    )


def _visible_teams(
    s: Session, caller: Subject, org: Organization, user_ids: list[str]
) -> dict[str, list[str]]:
    """Each user's teams in ``org`` that the caller may see."""
    out: dict[str, list[str]] = defaultdict(list)
    if not user_ids:
        return out
    rows = s.execute(
        select(TeamMembership.user_id, Team)
        .join(Team, Team.id == TeamMembership.team_id)
        .where(Team.organization_id == org.id, TeamMembership.user_id.in_(user_ids))
        .order_by(Team.name)
    ).all()
    for user_id, team in rows:
        if may_see_team(caller, org, team):
            out[user_id].append(team.id)
    return out


def _insert(s: Session) -> Any:
    """The dialect's INSERT, which has ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL)."""
    # Imported here: the PostgreSQL dialect costs ~60 ms of a SQLite start (bench/startup.py).
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


class Memberships:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # ---- reading --------------------------------------------------------------------------

    def list_organization(
        self,
        caller: Subject,
        org_name: str,
        page: Page,
        *,
        emails: list[str] | None = None,
        status: str | None = None,
        q: str | None = None,
    ) -> tuple[list[MembershipView], int]:
        """One page of an organization's memberships — active ones by username, then pending
        invitations by email — and their total."""
        if status not in (None, ACTIVE, INVITED):
            raise Invalid(f"filter[status] must be {ACTIVE} or {INVITED}")
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            members = select(User).where(
                User.is_service_account.is_(False),
                User.id.in_(_team_member_ids(s, org.id))
                | User.id.in_(
                    select(OrganizationMembership.user_id).where(
                        OrganizationMembership.organization_id == org.id,
                        OrganizationMembership.user_id.is_not(None),
                    )
                ),
            )
            pending = select(OrganizationMembership).where(
                OrganizationMembership.organization_id == org.id,
                OrganizationMembership.user_id.is_(None),
            )
            if emails:
                members = members.where(User.email.in_(emails))
                pending = pending.where(
                    OrganizationMembership.email.in_([e.lower() for e in emails])
                )
            if q:
                members = members.where(
                    User.username.contains(q, autoescape=True)
                    | User.email.contains(q, autoescape=True)
                )
                pending = pending.where(OrganizationMembership.email.contains(q, autoescape=True))
            n_active = 0 if status == INVITED else _count(s, members)
            n_pending = 0 if status == ACTIVE else _count(s, pending)
            views: list[MembershipView] = []
            if page.offset < n_active:
                users = list(
                    s.scalars(members.order_by(User.username).offset(page.offset).limit(page.size))
                )
                views += self._active_views(s, caller, org, users)
            room = page.size - len(views)
            if room > 0 and n_pending:
                start = max(0, page.offset - n_active)
                rows = s.scalars(
                    pending.order_by(OrganizationMembership.email).offset(start).limit(room)
                )
                views += [_pending_view(org, row) for row in rows]
            return views, n_active + n_pending

    def list_mine(self, caller: Subject, page: Page) -> tuple[list[MembershipView], int]:
        """One page of the caller's own memberships: the active ones by organization name,
        then the pending invitations of their account's email (HCP Terraform lists both)."""
        with self._db.unit_of_work() as s:
            me = s.get(User, caller.id)
            if me is None or me.is_service_account:
                return [], 0
            invited = (
                select(OrganizationMembership, Organization)
                .join(Organization, Organization.id == OrganizationMembership.organization_id)
                .where(
                    OrganizationMembership.user_id.is_(None),
                    OrganizationMembership.email == me.email.lower(),
                )
            )
            in_team = (
                select(Team.organization_id)
                .join(TeamMembership, TeamMembership.team_id == Team.id)
                .where(TeamMembership.user_id == me.id)
            )
            stored = select(OrganizationMembership.organization_id).where(
                OrganizationMembership.user_id == me.id
            )
            stmt = select(Organization).where(
                Organization.id.in_(in_team) | Organization.id.in_(stored)
            )
            n_active = _count(s, stmt)
            n_invited = (
                _count(s, invited.with_only_columns(OrganizationMembership.id)) if me.email else 0
            )
            views: list[MembershipView] = []
            if page.offset < n_active:
                found = s.scalars(
                    stmt.order_by(Organization.name).offset(page.offset).limit(page.size)
                )
                for org in found:
                    views += self._active_views(s, caller, org, [me])
            room = page.size - len(views)
            if room > 0 and n_invited:
                start = max(0, page.offset - n_active)
                rows = s.execute(
                    invited.order_by(Organization.name, OrganizationMembership.id)
                    .offset(start)
                    .limit(room)
                )
                views += [_pending_view(org, row, me) for row, org in rows]
            return views, n_active + n_invited

    def get(self, caller: Subject, membership_id: str) -> MembershipView:
        with self._db.unit_of_work() as s:
            return self._find(s, caller, membership_id)

    # ---- changing -------------------------------------------------------------------------

    def invite(
        self,
        caller: Subject,
        org_name: str,
        *,
        email: str | None,
        username: str | None,
        team_ids: list[str],
        source: str,
    ) -> MembershipView:
        """Invite by email or username (see the module docstring for what that does)."""
        if len(team_ids) > MAX_TEAMS:
            raise Invalid(
                f"at most {MAX_TEAMS} teams may be named", pointer="/data/relationships/teams"
            )
        with self._db.unit_of_work(write=True) as s:
            org = orgs.readable(s, caller, org_name)
            authz.require(caller, ORG_MANAGE_MEMBERSHIP, orgs.target(org), doing="invite people to")
            teams = self._teams(s, caller, org, team_ids)
            user = self._person(s, email=email, username=username)
            now = self._clock.now()
            actor = Actor(caller.id, caller.name, source)
            if user is None:
                assert email is not None
                return self._pend(s, org, email, teams, now, actor)
            pending = s.scalar(
                select(OrganizationMembership).where(
                    OrganizationMembership.organization_id == org.id,
                    OrganizationMembership.user_id.is_(None),
                    OrganizationMembership.email == user.email.lower(),
                )
            )
            if pending is not None:  # taken up now that the person has an account
                extra = [t for t in pending.team_ids.split(",") if t]
                teams += [t for t in s.scalars(select(Team).where(Team.id.in_(extra)))]
                s.delete(pending)
                s.flush()
            already = self._is_member(s, org.id, user.id)
            added = [t for t in teams if store.membership(s, t.id, user.id) is None]
            if already and not added:
                raise Invalid(
                    f"{user.username} is already a member of organization {org.name!r}",
                    pointer="/data/attributes/email",
                )
            _join(s, org.id, user, added, already=already, now=now)
            record(
                s,
                at=now,
                actor=actor,
                action="org.member.add",
                subject=f"{org.name}/{user.username}",
                teams=[t.name for t in added],
            )
            s.commit()
            return self._active_views(s, caller, org, [user])[0]

    def delete(self, caller: Subject, membership_id: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            view = self._find(s, caller, membership_id)
            org = view.org
            authz.require(
                caller, ORG_MANAGE_MEMBERSHIP, orgs.target(org), doing="remove people from"
            )
            who = view.user.username if view.user is not None else view.email
            if view.user is not None:
                teams = list(
                    s.scalars(
                        select(Team)
                        .join(TeamMembership, TeamMembership.team_id == Team.id)
                        .where(
                            Team.organization_id == org.id, TeamMembership.user_id == view.user.id
                        )
                    )
                )
                for team in teams:
                    if team.name == OWNERS_TEAM:
                        authz.require(
                            caller, ORG_MANAGE, orgs.target(org), doing="change the owners team of"
                        )
                        if store.member_count(s, team.id) <= 1:
                            raise Conflict("the owners team must keep at least one member")
                    s.execute(
                        delete(TeamMembership).where(
                            TeamMembership.team_id == team.id,
                            TeamMembership.user_id == view.user.id,
                        )
                    )
                s.execute(
                    delete(OrganizationMembership).where(
                        OrganizationMembership.organization_id == org.id,
                        OrganizationMembership.user_id == view.user.id,
                    )
                )
            else:
                s.execute(
                    delete(OrganizationMembership).where(OrganizationMembership.id == view.id)
                )
            record(
                s,
                at=self._clock.now(),
                actor=Actor(caller.id, caller.name, source),
                action="org.member.remove",
                subject=f"{org.name}/{who}",
            )
            s.commit()

    # ---- helpers ----------------------------------------------------------------------------

    def _find(self, s: Session, caller: Subject, membership_id: str) -> MembershipView:
        """A membership the caller may see: one of an organization they see, or their own."""
        hidden = authz.not_found("organization membership", repr(membership_id))
        derived = _split_derived(membership_id)
        if derived is not None:
            org = s.get(Organization, derived[0])
            user = s.get(User, derived[1])
            if org is None or user is None or not self._is_member(s, org.id, user.id):
                raise hidden
            if user.id != caller.id and not authz.allowed(caller, ORG_READ, orgs.target(org)):
                raise hidden
            return self._active_views(s, caller, org, [user])[0]
        row = s.get(OrganizationMembership, membership_id)
        org = s.get(Organization, row.organization_id) if row is not None else None
        if row is None or org is None:
            raise hidden
        # A pending invitation of the caller's own email is theirs to see (it is listed in
        # their memberships).
        me = s.get(User, caller.id) if row.user_id is None else None
        mine = me is not None and bool(me.email) and me.email.lower() == row.email
        if (
            row.user_id != caller.id
            and not mine
            and not authz.allowed(caller, ORG_READ, orgs.target(org))
        ):
            raise hidden
        if row.user_id is None:
            return _pending_view(org, row, me if mine else None)
        user = s.get(User, row.user_id)
        assert user is not None
        return self._active_views(s, caller, org, [user])[0]

    @staticmethod
    def _is_member(s: Session, org_id: str, user_id: str) -> bool:
        in_team = s.scalar(_team_member_ids(s, org_id).where(TeamMembership.user_id == user_id))
        if in_team is not None:
            return True
        return (
            s.scalar(
                select(OrganizationMembership.id).where(
                    OrganizationMembership.organization_id == org_id,
                    OrganizationMembership.user_id == user_id,
                )
            )
            is not None
        )

    @staticmethod
    def _active_views(
        s: Session, caller: Subject, org: Organization, users: list[User]
    ) -> list[MembershipView]:
        teams = _visible_teams(s, caller, org, [u.id for u in users])
        stored = dict(
            s.execute(
                select(OrganizationMembership.user_id, OrganizationMembership.id).where(
                    OrganizationMembership.organization_id == org.id,
                    OrganizationMembership.user_id.in_([u.id for u in users]),
                )
            ).all()
        )
        in_teams = set(
            s.scalars(
                _team_member_ids(s, org.id).where(TeamMembership.user_id.in_([u.id for u in users]))
            )
        )
        return [
            MembershipView(
                id=stored[u.id]
                if u.id in stored and u.id not in in_teams
                else derived_id(org.id, u.id),
                status=ACTIVE,
                email=u.email,
                org=org,
                user=u,
                team_ids=teams[u.id],
            )
            for u in users
        ]

    @staticmethod
    def _teams(s: Session, caller: Subject, org: Organization, team_ids: list[str]) -> list[Team]:
        found: list[Team] = []
        for i, team_id in enumerate(dict.fromkeys(team_ids)):
            team = s.get(Team, team_id)
            if (
                team is None
                or team.organization_id != org.id
                or not may_see_team(caller, org, team)
            ):
                raise Invalid(
                    f"team {team_id!r} does not exist in organization {org.name!r}",
                    pointer=f"/data/relationships/teams/data/{i}",
                )
            if team.name == OWNERS_TEAM:
                authz.require(
                    caller, ORG_MANAGE, orgs.target(org), doing="add people to the owners team of"
                )
            found.append(team)
        return found

    @staticmethod
    def _person(s: Session, *, email: str | None, username: str | None) -> User | None:
        """The person invited: by username (must exist), or by email (None: nobody has it;
        several accounts sharing the address: name the username instead)."""
        if username is not None:
            user = store.user(s, username)
            if user is None or user.is_service_account:
                raise Invalid(
                    f"user {username!r} does not exist", pointer="/data/attributes/username"
                )
            return user
        assert email is not None
        found = list(
            s.scalars(
                select(User)
                .where(func.lower(User.email) == email.lower(), User.is_service_account.is_(False))
                .limit(2)
            )
        )
        if len(found) > 1:
            raise Invalid(
                f"several accounts have the email {email!r}; invite by username instead",
                pointer="/data/attributes/email",
            )
        return found[0] if found else None

    @staticmethod
    def _pend(
        s: Session,
        org: Organization,
        email: str,
        teams: list[Team],
        now: datetime,
        actor: Actor,
    ) -> MembershipView:
        row = OrganizationMembership(
            id=ids.new_id("organization_membership"),
            organization_id=org.id,
            user_id=None,
            email=email.lower(),  # addresses compare without case
            status=INVITED,
            team_ids=",".join(t.id for t in teams),
            created_at=now,
        )
        org_name = org.name  # read before a failed insert spoils the session's objects
        try:
            with s.begin_nested():  # a savepoint: the unique index decides
                s.add(row)
        except IntegrityError:
            raise Invalid(
                f"{email} has already been invited to organization {org_name!r}",
                pointer="/data/attributes/email",
            ) from None
        record(s, at=now, actor=actor, action="org.member.invite", subject=f"{org.name}/{email}")
        s.commit()
        return _pending_view(org, row)


def _pending_view(
    org: Organization, row: OrganizationMembership, invitee: User | None = None
) -> MembershipView:
    """A pending invitation; ``invitee``: the person whose email it names, when they are the
    one reading it (their own membership shows them as its user, as HCP Terraform does)."""
    return MembershipView(
        id=row.id,
        status=INVITED,
        email=row.email,
        org=org,
        user=invitee,
        team_ids=[t for t in row.team_ids.split(",") if t],
    )


def _join(
    s: Session, org_id: str, user: User, added: list[Team], *, already: bool, now: datetime
) -> None:
    """Make ``user`` a member of organization ``org_id``: in the ``added`` teams, or (none,
    and not a member yet) with a stored active row. Concurrent joins of one person both
    succeed and leave one row each: the primary key / unique index decides, nothing is
    raised."""
    if added:
        s.execute(
            _insert(s)(TeamMembership)
            .values([{"team_id": t.id, "user_id": user.id, "source": "manual"} for t in added])
            .on_conflict_do_nothing()
        )
    if not added and not already:
        s.execute(
            _insert(s)(OrganizationMembership)
            .values(
                id=ids.new_id("organization_membership"),
                organization_id=org_id,
                user_id=user.id,
                email=user.email,
                status=ACTIVE,
                team_ids="",
                created_at=now,
            )
            .on_conflict_do_nothing()
        )


def accept_invitations(s: Session, user: User, actor: Actor, now: datetime) -> None:
    """Take up the pending invitations of ``user``'s email, in the caller's transaction: the
    person joins each invitation's teams (those that still exist), or becomes a member in no
    team, and the invitation row goes; one ``org.member.accept`` audit event each. Run when
    the person logs in through the IdP with an email it vouches for (``auth.login``'s
    ``AfterIdpLogin``, wired in ``app.py``). An invitation another login took up at the same
    moment is skipped (its delete is conditional)."""
    if user.is_service_account or not user.email:
        return
    rows = list(
        s.execute(
            select(OrganizationMembership, Organization)
            .join(Organization, Organization.id == OrganizationMembership.organization_id)
            .where(
                OrganizationMembership.user_id.is_(None),
                OrganizationMembership.email == user.email.lower(),
            )
            .order_by(OrganizationMembership.created_at, OrganizationMembership.id)
            .limit(MAX_ACCEPTED_PER_LOGIN)
        )
    )
    for row, org in rows:
        wanted = [t for t in row.team_ids.split(",") if t]
        gone = s.execute(
            delete(OrganizationMembership)
            .where(OrganizationMembership.id == row.id, OrganizationMembership.user_id.is_(None))
            .execution_options(synchronize_session=False)
        )
        if affected(gone) != 1:
            continue
        teams = (
            list(
                s.scalars(
                    select(Team)
                    .where(Team.organization_id == org.id, Team.id.in_(wanted))
                    .order_by(Team.name)
                )
            )
            if wanted
            else []
        )
        added = [t for t in teams if store.membership(s, t.id, user.id) is None]
        _join(s, org.id, user, added, already=Memberships._is_member(s, org.id, user.id), now=now)
        record(
            s,
            at=now,
            actor=actor,
            action="org.member.accept",
            subject=f"{org.name}/{user.username}",
            email=row.email,
            teams=[t.name for t in added],
        )
    s.flush()


def _count(s: Session, stmt: Select[Any]) -> int:
    return int(s.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
