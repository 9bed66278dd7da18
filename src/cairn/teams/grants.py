"""Grants and roles: TFE team-workspace access (a team's access level on one workspace) and
cairn's own grants (a role on the workspaces whose names match a pattern, to a team or a
user), and the organization's custom roles. Rules inside the caller's unit of work; every
change is audit-logged in the same transaction.

Who may: ``org:manage`` in the organization. Grants are not shown to anyone else (404); lists
and changes answer 404 to a caller who may not see the organization and 403 to one who may.
Roles are listed to anyone who may see the organization.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.model import Grant, Role
from cairn.authz.roles import BUILTIN_ROLES, TFE_ACCESS_LEVELS
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Invalid, NotFound
from cairn.names import check_slug
from cairn.organizations.model import Organization
from cairn.teams import store
from cairn.teams.targets import managed_org, may_manage, readable_org, readable_workspace

KIND_TEAM_WORKSPACE = "team-workspace"  # Grant.kind of TFE team-workspace access
KIND_GRANT = "grant"  # Grant.kind of cairn's own grants
# What authz.authorizer turns into SQL: letters, digits, '-', '_' and the wildcards.
_PATTERN = re.compile(r"^[A-Za-z0-9_*?\[\]!-]{1,255}$")


@dataclass
class GrantView:
    """A grant with the names it shows."""

    grant: Grant
    org: Organization
    team_name: str | None
    username: str | None
    workspace_name: str | None


def _view(s: Session, org: Organization, g: Grant) -> GrantView:
    return GrantView(g, org, *store.grant_names(s, g))


def _actor(caller: Subject, source: str) -> Actor:
    return Actor(caller.id, caller.name, source)


class GrantService:
    """Team-workspace access, pattern grants and custom roles."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # ---- grants -----------------------------------------------------------------------------

    def list_grants(
        self,
        caller: Subject,
        org_name: str,
        *,
        kind: str | None = None,
        workspace_id: str | None = None,
    ) -> list[GrantView]:
        with self._db.unit_of_work() as s:
            org = managed_org(s, caller, org_name)
            rows = store.grants(s, org.id, kind=kind, workspace_id=workspace_id)
            return [_view(s, org, g) for g in rows]

    def org_of_workspace(self, caller: Subject, ws_id: str) -> str:
        """The organization of a workspace the caller may read (404 otherwise)."""
        with self._db.unit_of_work() as s:
            org, _ = readable_workspace(s, caller, ws_id)
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
            org = managed_org(s, caller, org_name)
            _check_role(s, org, role, kind)
            team_row = None
            if team is not None:
                team_row = store.team_in(s, org.id, team)
                if team_row is None:
                    raise Invalid(f"team {team!r} does not exist in {org.name!r}", pointer="/team")
            user_row = None
            if user is not None:
                user_row = store.user(s, user)
                if user_row is None:
                    raise Invalid(f"user {user!r} does not exist", pointer="/user")
            if workspace_id is not None:
                found = store.workspace(s, workspace_id)
                if found is None or found[1].organization_id != org.id:
                    raise Invalid(
                        f"workspace {workspace_id!r} is not in {org.name!r}", pointer="/workspace"
                    )
            g = Grant(
                id=ids.new_id("team_workspace" if kind == KIND_TEAM_WORKSPACE else "grant"),
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
            view = _view(s, org, g)
            to = f"team {view.team_name}" if view.team_name else f"user {view.username}"
            record(
                s,
                at=self._clock.now(),
                actor=_actor(caller, source),
                action="rbac.grant.create",
                subject=f"{org.name}: {role} on {pattern or view.workspace_name} to {to}",
                grant_id=g.id,
            )
            s.commit()
            return view

    def find_grant(self, caller: Subject, grant_id: str) -> GrantView:
        with self._db.unit_of_work() as s:
            org, g = _managed_grant(s, caller, grant_id)
            return _view(s, org, g)

    def update_grant_role(
        self, caller: Subject, grant_id: str, role: str, source: str
    ) -> GrantView:
        with self._db.unit_of_work(write=True) as s:
            org, g = _managed_grant(s, caller, grant_id)
            _check_role(s, org, role, g.kind)
            g.role = role
            s.flush()
            record(
                s,
                at=self._clock.now(),
                actor=_actor(caller, source),
                action="rbac.grant.update",
                subject=grant_id,
                role=role,
            )
            s.commit()
            return _view(s, org, g)

    def delete_grant(self, caller: Subject, grant_id: str, source: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            _, g = _managed_grant(s, caller, grant_id)
            s.delete(g)
            record(
                s,
                at=self._clock.now(),
                actor=_actor(caller, source),
                action="rbac.grant.delete",
                subject=grant_id,
            )
            s.commit()

    # ---- roles ------------------------------------------------------------------------------

    def list_roles(self, caller: Subject, org_name: str) -> list[tuple[str, list[str], bool]]:
        """(name, permissions, built-in) of every role usable in the organization."""
        with self._db.unit_of_work() as s:
            org = readable_org(s, caller, org_name)
            out = [(n, sorted(p), True) for n, p in BUILTIN_ROLES.items()]
            for r in store.roles(s, org.id):
                out.append((r.name, sorted(filter(None, r.permissions.split(","))), False))
            return out

    def create_role(
        self, caller: Subject, org_name: str, name: str, perms: frozenset[str], source: str
    ) -> None:
        check_slug("role", name, max_len=64)
        if name in BUILTIN_ROLES:
            raise Invalid(f"{name!r} is a built-in role", pointer="/name")
        with self._db.unit_of_work(write=True) as s:
            org = managed_org(s, caller, org_name)
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
                actor=_actor(caller, source),
                action="rbac.role.create",
                subject=f"{org_name}/{name}",
                permissions=sorted(perms),
            )
            s.commit()

    def delete_role(self, caller: Subject, org_name: str, name: str, source: str) -> None:
        """Delete a custom role and every grant of it."""
        with self._db.unit_of_work(write=True) as s:
            org = managed_org(s, caller, org_name)
            if not store.delete_role(s, org.id, name):
                raise NotFound(f"role {name!r} not found in {org_name!r}")
            record(
                s,
                at=self._clock.now(),
                actor=_actor(caller, source),
                action="rbac.role.delete",
                subject=f"{org_name}/{name}",
            )
            s.commit()


def _managed_grant(s: Session, caller: Subject, grant_id: str) -> tuple[Organization, Grant]:
    """A grant in an organization whose access the caller manages (404 otherwise: grants are
    not shown to anyone else)."""
    found = store.grant(s, grant_id)
    if found is None or not may_manage(caller, found[0]):
        raise authz.not_found("grant", repr(grant_id))
    return found


def _check_role(s: Session, org: Organization, role: str, kind: str) -> None:
    if kind == KIND_TEAM_WORKSPACE:
        if role not in TFE_ACCESS_LEVELS:
            raise Invalid(
                f"access must be one of {', '.join(TFE_ACCESS_LEVELS)}",
                pointer="/data/attributes/access",
            )
        return
    if role in BUILTIN_ROLES:
        return
    if not store.role_exists(s, org.id, role):
        raise Invalid(
            f"role {role!r} does not exist: use {', '.join(BUILTIN_ROLES)} or create it",
            pointer="/role",
        )
