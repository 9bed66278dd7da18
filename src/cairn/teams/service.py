"""Teams, memberships, roles and grants: the rules, inside a unit of work. Every change is
audit-logged in the same transaction."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.auth.model import ApiToken, User
from cairn.authz.model import Grant, Role, Team, TeamMembership
from cairn.authz.permissions import ORG_MANAGE
from cairn.authz.roles import BUILTIN_ROLES, ORG_ACCESS_FLAGS, OWNERS_TEAM, TFE_ACCESS_LEVELS
from cairn.authz.subject import RESERVED_PREFIXES, Subject, is_reserved_name
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Forbidden, Invalid, NotFound
from cairn.names import check_slug
from cairn.organizations.model import Organization
from cairn.organizations.service import OrganizationService
from cairn.workspaces.model import Workspace
from cairn.workspaces.service import WorkspaceService

_PATTERN = re.compile(r"^[A-Za-z0-9_*?\[\]!-]{1,255}$")


@dataclass
class TeamView:
    team: Team
    org: Organization
    member_ids: list[str]


@dataclass
class GrantView:
    grant: Grant
    org: Organization
    team_name: str | None
    username: str | None
    workspace_name: str | None


class RbacService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # ---- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _managed_org(s: Session, caller: Subject, org_name: str) -> Organization:
        org = OrganizationService.readable(s, caller, org_name)
        if not authz.can(caller, ORG_MANAGE, org.id):
            raise Forbidden(f"managing access in organization {org_name!r} needs org:manage")
        return org

    @staticmethod
    def _team(s: Session, caller: Subject, team_id: str) -> tuple[Organization, Team]:
        row = s.execute(
            select(Organization, Team)
            .join(Team, Team.organization_id == Organization.id)
            .where(Team.id == team_id)
        ).first()
        visible = row is not None and (
            authz.can(caller, ORG_MANAGE, row[0].id)
            or (
                bool(authz.permissions(caller, row[0].id))
                and (row[1].visibility == "organization" or row[1].id in caller.access.team_ids)
            )
        )
        if row is None or not visible:
            raise NotFound(f"team {team_id!r} not found, or you are not allowed to see it")
        return row[0], row[1]

    @staticmethod
    def _members(s: Session, team_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {t: [] for t in team_ids}
        if team_ids:
            for team_id, user_id in s.execute(
                select(TeamMembership.team_id, TeamMembership.user_id).where(
                    TeamMembership.team_id.in_(team_ids)
                )
            ).all():
                out[team_id].append(user_id)
        return out

    @staticmethod
    def _user(s: Session, name_or_id: str, pointer: str) -> User:
        user = s.scalar(select(User).where((User.username == name_or_id) | (User.id == name_or_id)))
        if user is None:
            raise Invalid(f"user {name_or_id!r} does not exist", pointer=pointer)
        return user

    @staticmethod
    def _actor(caller: Subject, source: str) -> Actor:
        return Actor(caller.id, caller.name, source)

    # ---- teams ------------------------------------------------------------------------------

    def list_teams(self, caller: Subject, org_name: str) -> list[TeamView]:
        with self._db.unit_of_work() as s:
            org = OrganizationService.readable(s, caller, org_name)
            teams = list(
                s.scalars(select(Team).where(Team.organization_id == org.id).order_by(Team.name))
            )
            if not authz.can(caller, ORG_MANAGE, org.id):
                # As in HCP Terraform: secret teams are visible to their members only.
                teams = [
                    t
                    for t in teams
                    if t.visibility == "organization" or t.id in caller.access.team_ids
                ]
            members = self._members(s, [t.id for t in teams])
            return [TeamView(t, org, members[t.id]) for t in teams]

    def get_team(self, caller: Subject, team_id: str) -> TeamView:
        with self._db.unit_of_work() as s:
            org, team = self._team(s, caller, team_id)
            return TeamView(team, org, self._members(s, [team.id])[team.id])

    def create_team(
        self,
        caller: Subject,
        org_name: str,
        name: str,
        *,
        org_access: list[str],
        idp_group: str | None,
        visibility: str | None,
        source: str,
    ) -> TeamView:
        check_slug("team", name, max_len=100)
        flags = _check_flags(org_access)
        with self._db.unit_of_work(write=True) as s:
            org = self._managed_org(s, caller, org_name)
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
                actor=self._actor(caller, source),
                action="rbac.team.create",
                subject=f"{org.name}/{name}",
                organization_access=flags,
                idp_group=idp_group,
            )
            s.commit()
            return TeamView(team, org, [])

    def update_team(
        self,
        caller: Subject,
        team_id: str,
        *,
        name: str | None,
        org_access: list[str] | None,
        idp_group: str | None,
        clear_idp_group: bool,
        visibility: str | None,
        source: str,
    ) -> TeamView:
        with self._db.unit_of_work(write=True) as s:
            org, team = self._team(s, caller, team_id)
            self._managed_org(s, caller, org.name)
            where = f"{org.name}/{team.name}"
            if name is not None and name != team.name:
                if team.name == OWNERS_TEAM:
                    raise Invalid(
                        "the owners team cannot be renamed", pointer="/data/attributes/name"
                    )
                team.name = check_slug("team", name, max_len=100)
            if org_access is not None:
                team.organization_access = ",".join(_check_flags(org_access))
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
                actor=self._actor(caller, source),
                action="rbac.team.update",
                subject=where,
                name=team.name,
                organization_access=team.organization_access,
                idp_group=team.idp_group,
            )
            s.commit()
            return TeamView(team, org, self._members(s, [team.id])[team.id])

    def delete_team(self, caller: Subject, team_id: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            org, team = self._team(s, caller, team_id)
            self._managed_org(s, caller, org.name)
            if team.name == OWNERS_TEAM:
                raise Conflict("the owners team cannot be deleted")
            where = f"{org.name}/{team.name}"
            # The team's token accounts lose their membership with the team: revoke their tokens.
            s.execute(
                update(ApiToken)
                .where(
                    ApiToken.user_id.in_(
                        select(User.id).where(User.team_id == team.id, User.is_service_account)
                    ),
                    ApiToken.revoked_at.is_(None),
                )
                .values(revoked_at=self._clock.now())
                .execution_options(synchronize_session=False)
            )
            s.delete(team)
            record(
                s,
                at=self._clock.now(),
                actor=self._actor(caller, source),
                action="rbac.team.delete",
                subject=where,
            )
            s.commit()

    def change_members(
        self, caller: Subject, team_id: str, users: list[str], *, add: bool, source: str
    ) -> TeamView:
        with self._db.unit_of_work(write=True) as s:
            org, team = self._team(s, caller, team_id)
            self._managed_org(s, caller, org.name)
            for i, name in enumerate(users):
                user = self._user(s, name, f"/data/{i}")
                current = s.get(TeamMembership, (team.id, user.id))
                if add and current is None:
                    s.add(TeamMembership(team_id=team.id, user_id=user.id, source="manual"))
                elif not add and current is not None:
                    if team.name == OWNERS_TEAM and self._owner_count(s, team.id) <= 1:
                        raise Conflict("the owners team must keep at least one member")
                    s.delete(current)
                s.flush()
                record(
                    s,
                    at=self._clock.now(),
                    actor=self._actor(caller, source),
                    action="rbac.member.add" if add else "rbac.member.remove",
                    subject=f"{org.name}/{team.name}",
                    user=user.username,
                )
            s.commit()
            return TeamView(team, org, self._members(s, [team.id])[team.id])

    @staticmethod
    def _owner_count(s: Session, team_id: str) -> int:
        return int(
            s.scalar(
                select(func.count())
                .select_from(TeamMembership)
                .where(TeamMembership.team_id == team_id)
            )
            or 0
        )

    # ---- grants (TFE team-workspace access and cairn pattern grants) ------------------------

    def _grant_view(self, s: Session, org: Organization, g: Grant) -> GrantView:
        team = s.get(Team, g.team_id) if g.team_id else None
        user = s.get(User, g.user_id) if g.user_id else None
        ws = s.get(Workspace, g.workspace_id) if g.workspace_id else None
        return GrantView(
            g,
            org,
            team.name if team else None,
            user.username if user else None,
            ws.name if ws else None,
        )

    def list_grants(
        self,
        caller: Subject,
        org_name: str,
        *,
        kind: str | None = None,
        workspace_id: str | None = None,
    ) -> list[GrantView]:
        with self._db.unit_of_work() as s:
            org = self._managed_org(s, caller, org_name)
            stmt = select(Grant).where(Grant.organization_id == org.id)
            if kind:
                stmt = stmt.where(Grant.kind == kind)
            if workspace_id:
                stmt = stmt.where(Grant.workspace_id == workspace_id)
            return [self._grant_view(s, org, g) for g in s.scalars(stmt.order_by(Grant.created_at))]

    def org_of_workspace(self, caller: Subject, ws_id: str) -> str:
        """The organization of a workspace the caller may read (404 otherwise)."""
        with self._db.unit_of_work() as s:
            org, _ = WorkspaceService.find(s, caller, ws_id)
            return org.name

    def create_grant(
        self,
        caller: Subject,
        org_name: str,
        *,
        role: str,
        team: str | None,
        user: str | None,
        workspace_id: str | None,
        pattern: str | None,
        kind: str,
        source: str,
    ) -> GrantView:
        if (team is None) == (user is None):
            raise Invalid("name exactly one of a team or a user", pointer="/team")
        if (workspace_id is None) == (pattern is None):
            raise Invalid(
                "name exactly one of a workspace or a workspace pattern", pointer="/workspaces"
            )
        if pattern is not None and not _PATTERN.fullmatch(pattern):
            raise Invalid(
                "workspace patterns use letters, numbers, '-', '_' and the wildcards * ? [ ]",
                pointer="/workspaces",
            )
        with self._db.unit_of_work(write=True) as s:
            org = self._managed_org(s, caller, org_name)
            self._check_role(s, org, role, kind)
            team_row = None
            if team is not None:
                team_row = s.scalar(
                    select(Team).where(
                        Team.organization_id == org.id, (Team.name == team) | (Team.id == team)
                    )
                )
                if team_row is None:
                    raise Invalid(f"team {team!r} does not exist in {org.name!r}", pointer="/team")
            user_row = self._user(s, user, "/user") if user is not None else None
            if workspace_id is not None:
                ws = s.get(Workspace, workspace_id)
                if ws is None or ws.organization_id != org.id:
                    raise Invalid(
                        f"workspace {workspace_id!r} is not in {org.name!r}", pointer="/workspace"
                    )
            g = Grant(
                id=ids.new_id("team_workspace" if kind == "team-workspace" else "grant"),
                organization_id=org.id,
                team_id=team_row.id if team_row else None,
                user_id=user_row.id if user_row else None,
                role=role,
                workspace_id=workspace_id,
                workspace_pattern=pattern,
                kind=kind,
                created_at=self._clock.now(),
            )
            s.add(g)
            s.flush()
            view = self._grant_view(s, org, g)
            record(
                s,
                at=self._clock.now(),
                actor=self._actor(caller, source),
                action="rbac.grant.create",
                subject=f"{org.name}: {role} on {pattern or view.workspace_name} to "
                f"{'team ' + view.team_name if view.team_name else 'user ' + str(view.username)}",
                grant_id=g.id,
            )
            s.commit()
            return view

    def _check_role(self, s: Session, org: Organization, role: str, kind: str) -> None:
        if kind == "team-workspace":
            if role not in TFE_ACCESS_LEVELS:
                raise Invalid(
                    f"access must be one of {', '.join(TFE_ACCESS_LEVELS)}",
                    pointer="/data/attributes/access",
                )
            return
        if role in BUILTIN_ROLES:
            return
        found = s.scalar(select(Role.id).where(Role.organization_id == org.id, Role.name == role))
        if found is None:
            raise Invalid(
                f"role {role!r} does not exist: use {', '.join(BUILTIN_ROLES)} or create it",
                pointer="/role",
            )

    def find_grant(self, caller: Subject, grant_id: str) -> GrantView:
        with self._db.unit_of_work() as s:
            g = s.get(Grant, grant_id)
            if g is None:
                raise NotFound(f"grant {grant_id!r} not found")
            org = s.get(Organization, g.organization_id)
            assert org is not None
            if not authz.can(caller, ORG_MANAGE, org.id):
                raise NotFound(f"grant {grant_id!r} not found")
            return self._grant_view(s, org, g)

    def update_grant_role(
        self, caller: Subject, grant_id: str, role: str, source: str
    ) -> GrantView:
        with self._db.unit_of_work(write=True) as s:
            g = s.get(Grant, grant_id)
            org = s.get(Organization, g.organization_id) if g else None
            if g is None or org is None or not authz.can(caller, ORG_MANAGE, org.id):
                raise NotFound(f"grant {grant_id!r} not found")
            self._check_role(s, org, role, g.kind)
            g.role = role
            s.flush()
            record(
                s,
                at=self._clock.now(),
                actor=self._actor(caller, source),
                action="rbac.grant.update",
                subject=grant_id,
                role=role,
            )
            s.commit()
            return self._grant_view(s, org, g)

    def delete_grant(self, caller: Subject, grant_id: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            g = s.get(Grant, grant_id)
            org = s.get(Organization, g.organization_id) if g else None
            if g is None or org is None or not authz.can(caller, ORG_MANAGE, org.id):
                raise NotFound(f"grant {grant_id!r} not found")
            s.delete(g)
            record(
                s,
                at=self._clock.now(),
                actor=self._actor(caller, source),
                action="rbac.grant.delete",
                subject=grant_id,
            )
            s.commit()

    # ---- roles ------------------------------------------------------------------------------

    def list_roles(self, caller: Subject, org_name: str) -> list[tuple[str, list[str], bool]]:
        with self._db.unit_of_work() as s:
            org = OrganizationService.readable(s, caller, org_name)
            out = [(n, sorted(p), True) for n, p in BUILTIN_ROLES.items()]
            for r in s.scalars(
                select(Role).where(Role.organization_id == org.id).order_by(Role.name)
            ):
                out.append((r.name, sorted(filter(None, r.permissions.split(","))), False))
            return out

    def create_role(
        self, caller: Subject, org_name: str, name: str, perms: frozenset[str], source: str
    ) -> None:
        check_slug("role", name, max_len=64)
        if name in BUILTIN_ROLES:
            raise Invalid(f"{name!r} is a built-in role", pointer="/name")
        with self._db.unit_of_work(write=True) as s:
            org = self._managed_org(s, caller, org_name)
            s.add(
                Role(
                    id=ids.new_id("role"),
                    organization_id=org.id,
                    name=name,
                    permissions=",".join(sorted(perms)),
                    created_at=self._clock.now(),
                )
            )
            try:
                s.flush()
            except IntegrityError:
                raise Invalid(f"role {name!r} already exists", pointer="/name") from None
            record(
                s,
                at=self._clock.now(),
                actor=self._actor(caller, source),
                action="rbac.role.create",
                subject=f"{org_name}/{name}",
                permissions=sorted(perms),
            )
            s.commit()

    def delete_role(self, caller: Subject, org_name: str, name: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            org = self._managed_org(s, caller, org_name)
            n = affected(
                s.execute(delete(Role).where(Role.organization_id == org.id, Role.name == name))
            )
            if not n:
                raise NotFound(f"role {name!r} not found in {org_name!r}")
            s.execute(delete(Grant).where(Grant.organization_id == org.id, Grant.role == name))
            record(
                s,
                at=self._clock.now(),
                actor=self._actor(caller, source),
                action="rbac.role.delete",
                subject=f"{org_name}/{name}",
            )
            s.commit()

    # ---- users (site admin) -----------------------------------------------------------------

    def create_user(self, caller: Subject, username: str, email: str, source: str) -> User:
        if not caller.is_site_admin:
            raise Forbidden("only a site admin may create users")
        check_slug("user", username, max_len=100)
        if is_reserved_name(username):
            raise Invalid(
                f"usernames starting with {' or '.join(RESERVED_PREFIXES)} are reserved for "
                "organization and team tokens",
                pointer="/username",
            )
        with self._db.unit_of_work(write=True) as s:
            user = User(
                id=ids.new_id("user"),
                username=username,
                email=email,
                is_site_admin=False,
                created_at=self._clock.now(),
            )
            s.add(user)
            try:
                s.flush()
            except IntegrityError:
                raise Invalid(f"user {username!r} already exists", pointer="/username") from None
            record(
                s,
                at=self._clock.now(),
                actor=self._actor(caller, source),
                action="rbac.user.create",
                subject=username,
            )
            s.commit()
            return user

    def list_users(self, caller: Subject) -> list[User]:
        if not caller.is_site_admin:
            raise NotFound("there is no such resource, or you are not allowed to see it")
        with self._db.unit_of_work() as s:
            return list(s.scalars(select(User).order_by(User.username)))


def _check_flags(flags: list[str]) -> list[str]:
    unknown = [f for f in flags if f not in ORG_ACCESS_FLAGS]
    if unknown:
        raise Invalid(
            f"unknown organization-access flag(s) {', '.join(unknown)}; known: "
            + ", ".join(ORG_ACCESS_FLAGS),
            pointer="/data/attributes/organization-access",
        )
    return sorted(set(flags))


def pattern_matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)
