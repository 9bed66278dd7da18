"""Teams and their members: the rules, inside the caller's unit of work. Every change is
audit-logged in the same transaction.

Grants and roles are in ``teams.grants``, site-admin user accounts in ``teams.users``, team
tokens in ``teams.tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.model import Team, TeamMembership
from cairn.authz.permissions import ORG_MANAGE_ACCESS, ORG_MANAGE_MEMBERSHIP, ORG_MANAGE_TEAMS
from cairn.authz.roles import ORG_ACCESS_FLAGS, OWNERS_TEAM
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Conflict, Forbidden, Invalid
from cairn.names import check_slug
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.teams import store
from cairn.teams.grants import GrantView
from cairn.teams.targets import (
    managed_team,
    may_manage,
    may_manage_access,
    may_manage_membership,
    may_manage_teams,
    org_target,
    readable_org,
    require_may_give,
    require_on_team,
    sees_secret_teams,
    visible_team,
)

__all__ = ["GrantView", "TeamService", "TeamView"]

MEMBERSHIP_MANUAL = "manual"  # TeamMembership.source of a member added through the API
VISIBILITIES = ("secret", "organization")


@dataclass
class TeamView:
    """A team with its organization, its members' IDs, and whether the caller may manage it
    (``manage``: everything, ``org:manage``), change its members (``membership``), its
    settings, or delete it (``teams``), or change its organization access (``access``)."""

    team: Team
    org: Organization
    member_ids: list[str]
    manage: bool = False
    membership: bool = False
    access: bool = False
    teams: bool = False


def actor(caller: Subject, source: str) -> Actor:
    """The audit actor of a change: the caller, from the client address ``source``."""
    return Actor(caller.id, caller.name, source)


class TeamService:
    """Teams and memberships (the TFE teams API)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def list_teams(
        self,
        caller: Subject,
        org_name: str,
        *,
        names: list[str] | None = None,
        page: Page | None = None,
    ) -> tuple[list[TeamView], int]:
        """The organization's teams the caller may see (``names``: only those), one page of
        them when ``page`` is given, and their total."""
        with self._db.unit_of_work() as s:
            org = readable_org(s, caller, org_name)
            # As in HCP Terraform: secret teams are visible to their members only (and to
            # the owners, and to those with access-secret-teams).
            secret_of = None if sees_secret_teams(caller, org) else caller.access.team_ids
            teams, total = store.teams(s, org.id, secret_of=secret_of, names=names, page=page)
            members = store.member_ids(s, [t.id for t in teams])
            return [self._view_of(caller, org, t, members[t.id]) for t in teams], total

    def get_team(self, caller: Subject, team_id: str) -> TeamView:
        with self._db.unit_of_work() as s:
            org, team = visible_team(s, caller, team_id)
            return self._view(s, caller, org, team)

    def create_team(
        self,
        caller: Subject,
        org_name: str,
        name: str,
        *,
        org_access: dict[str, bool],
        idp_group: str | None,
        visibility: str | None,
        source: str,
    ) -> TeamView:
        check_slug("team", name, max_len=100)
        flags = _merge_flags(set(), org_access)
        _check_visibility(visibility)
        with self._db.unit_of_work(write=True) as s:
            org = readable_org(s, caller, org_name)
            authz.require(caller, ORG_MANAGE_TEAMS, org_target(org), doing="create teams in")
            # Without access-secret-teams a team manager cannot reach secret teams: their teams
            # are visible to the organization unless they say otherwise (then 403).
            if visibility is None and not sees_secret_teams(caller, org):
                visibility = "organization"
            _require_may_hide(caller, org, visibility)
            if flags:
                authz.require(
                    caller, ORG_MANAGE_ACCESS, org_target(org), doing="give organization access in"
                )
                require_may_give(caller, org, set(flags))
            team = Team(
                id=ids.new_id("team"),
                organization_id=org.id,
                name=name,
                idp_group=idp_group,
                organization_access=",".join(flags),
                visibility=visibility or "secret",
                created_at=self._clock.now(),
            )
            s.add(team)
            try:
                s.flush()
            except IntegrityError:
                raise Invalid(
                    f"Name has already been taken: team {name!r} exists in {org_name!r}",
                    pointer="/data/attributes/name",
                ) from None
            record(
                s,
                at=self._clock.now(),
                actor=actor(caller, source),
                action="rbac.team.create",
                subject=f"{org.name}/{name}",
                organization_access=flags,
                idp_group=idp_group,
            )
            s.commit()
            return self._view_of(caller, org, team, [])

    def update_team(
        self,
        caller: Subject,
        team_id: str,
        *,
        name: str | None,
        org_access: dict[str, bool] | None,
        idp_group: str | None,
        clear_idp_group: bool,
        visibility: str | None,
        source: str,
    ) -> TeamView:
        _check_visibility(visibility)
        with self._db.unit_of_work(write=True) as s:
            org, team = visible_team(s, caller, team_id)
            # Settings (name, SSO team, visibility) are org:manage-teams' (TFE's manage-teams);
            # the organization access org:manage-access's (manage-organization-access); the
            # owners team is the owners' alone. Values sent unchanged need nothing (clients
            # send every attribute back). The flags named change, the others stay (as HCP
            # Terraform's PATCH of organization-access does).
            if (
                (name is not None and name != team.name)
                or ((idp_group is not None or clear_idp_group) and idp_group != team.idp_group)
                or (visibility is not None and visibility != team.visibility)
            ):
                require_on_team(caller, org, team, ORG_MANAGE_TEAMS)
                if visibility != team.visibility:
                    _require_may_hide(caller, org, visibility)
            old = set(filter(None, team.organization_access.split(",")))
            flags = _merge_flags(old, org_access or {})
            if set(flags) != old:
                require_on_team(caller, org, team, ORG_MANAGE_ACCESS)
                require_may_give(caller, org, set(flags) - old)
            where = f"{org.name}/{team.name}"
            if name is not None and name != team.name:
                if team.name == OWNERS_TEAM:
                    raise Invalid(
                        "the owners team cannot be renamed", pointer="/data/attributes/name"
                    )
                team.name = check_slug("team", name, max_len=100)
            if set(flags) != old:
                team.organization_access = ",".join(flags)
            if idp_group is not None or clear_idp_group:
                team.idp_group = idp_group
            if visibility is not None:
                team.visibility = visibility
            try:
                s.flush()
            except IntegrityError:
                raise Invalid(
                    f"Name has already been taken: team {name!r} exists",
                    pointer="/data/attributes/name",
                ) from None
            record(
                s,
                at=self._clock.now(),
                actor=actor(caller, source),
                action="rbac.team.update",
                subject=where,
                name=team.name,
                organization_access=team.organization_access,
                idp_group=team.idp_group,
            )
            s.commit()
            return self._view(s, caller, org, team)

    def delete_team(self, caller: Subject, team_id: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, team = managed_team(s, caller, team_id)
            if team.name == OWNERS_TEAM:
                raise Conflict("the owners team cannot be deleted")
            where = f"{org.name}/{team.name}"
            # The team's token account loses its membership with the team: revoke its tokens.
            store.revoke_service_tokens(s, team.id, self._clock.now())
            s.delete(team)
            record(
                s,
                at=self._clock.now(),
                actor=actor(caller, source),
                action="rbac.team.delete",
                subject=where,
            )
            s.commit()

    def change_members(
        self, caller: Subject, team_id: str, users: list[str], *, add: bool, source: str
    ) -> TeamView:
        """Add (or remove) people by username or ID; the owners team keeps one member."""
        with self._db.unit_of_work(write=True) as s:
            org, team = visible_team(s, caller, team_id)
            require_on_team(caller, org, team, ORG_MANAGE_MEMBERSHIP)
            for i, name in enumerate(users):
                user = store.user(s, name)
                if user is None:
                    raise Invalid(f"user {name!r} does not exist", pointer=f"/data/{i}")
                current = store.membership(s, team.id, user.id)
                if add and current is None:
                    s.add(
                        TeamMembership(team_id=team.id, user_id=user.id, source=MEMBERSHIP_MANUAL)
                    )
                elif not add and current is not None:
                    if team.name == OWNERS_TEAM and store.member_count(s, team.id) <= 1:
                        raise Conflict("the owners team must keep at least one member")
                    s.delete(current)
                s.flush()
                record(
                    s,
                    at=self._clock.now(),
                    actor=actor(caller, source),
                    action="rbac.member.add" if add else "rbac.member.remove",
                    subject=f"{org.name}/{team.name}",
                    user=user.username,
                )
            s.commit()
            return self._view(s, caller, org, team)

    @classmethod
    def _view(cls, s: Session, caller: Subject, org: Organization, team: Team) -> TeamView:
        return cls._view_of(caller, org, team, store.member_ids(s, [team.id])[team.id])

    @staticmethod
    def _view_of(caller: Subject, org: Organization, team: Team, members: list[str]) -> TeamView:
        manage = may_manage(caller, org)
        mine = team.name != OWNERS_TEAM  # the owners team is the owners' alone
        return TeamView(
            team,
            org,
            members,
            manage,
            membership=manage or (mine and may_manage_membership(caller, org)),
            access=manage or (mine and may_manage_access(caller, org)),
            teams=manage or (mine and may_manage_teams(caller, org)),
        )


def _merge_flags(old: set[str], changes: dict[str, bool]) -> list[str]:
    """``old`` organization-access flags with ``changes`` applied (true sets, false clears);
    an unknown flag is a 422."""
    unknown = [f for f in changes if f not in ORG_ACCESS_FLAGS]
    if unknown:
        raise Invalid(
            f"unknown organization-access flag(s) {', '.join(unknown)}; known: "
            + ", ".join(ORG_ACCESS_FLAGS),
            pointer="/data/attributes/organization-access",
        )
    flags = set(old) & set(ORG_ACCESS_FLAGS)
    for flag, on in changes.items():
        (flags.add if on else flags.discard)(flag)
    return sorted(flags)


def _require_may_hide(caller: Subject, org: Organization, visibility: str | None) -> None:
    if visibility == "secret" and not sees_secret_teams(caller, org):
        raise Forbidden(
            f"you may not make a secret team in organization {org.name!r}: you could not reach "
            "it yourself (that needs the access-secret-teams organization access)"
        )


def _check_visibility(visibility: str | None) -> None:
    if visibility is not None and visibility not in VISIBILITIES:
        raise Invalid(
            f"visibility must be one of {', '.join(VISIBILITIES)}",
            pointer="/data/attributes/visibility",
        )
