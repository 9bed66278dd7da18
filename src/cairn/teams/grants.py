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
from cairn.authz.roles import (
    BUILTIN_ROLES,
    CUSTOM,
    TFE_ACCESS_LEVELS,
    WorkspaceAccess,
    custom_named,
    grant_workspace_access,
    parse_workspace_access,
)
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
        attributes: dict[str, object] | None = None,
    ) -> GrantView:
        """``attributes``: a team-workspace body's attributes (its custom access)."""
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
        custom = _workspace_access(role, attributes or {}, None)
        with self._db.unit_of_work(write=True) as s:
            org = managed_org(s, caller, org_name)
            _check_role(s, org, role, kind)
            if role == CUSTOM and kind != KIND_TEAM_WORKSPACE:
                raise Invalid("custom access is for team-workspace access", pointer="/role")
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
            _store_access(g, custom)
            s.add(g)
            taken = Invalid(
                f"Team has already been taken: team {team!r} already has access to workspace "
                f"{workspace_id!r}; change that access (PATCH /team-workspaces/:id) instead",
                pointer="/data/relationships/team",
            )
            try:
                s.flush()
            except IntegrityError:
                raise taken from None
            view = _view(s, org, g)
            to = f"team {view.team_name}" if view.team_name else f"user {view.username}"
            record(
                s,
                at=self._clock.now(),
                actor=_actor(caller, source),
                action="rbac.grant.create",
                subject=f"{org.name}: {role} on {pattern or view.workspace_name} to {to}",
                grant_id=g.id,
                custom=custom.attributes() if custom else None,
            )
            s.commit()
            return view

    def find_grant(self, caller: Subject, grant_id: str) -> GrantView:
        with self._db.unit_of_work() as s:
            org, g = _managed_grant(s, caller, grant_id)
            return _view(s, org, g)

    def update_grant_role(
        self,
        caller: Subject,
        grant_id: str,
        role: str | None,
        source: str,
        attributes: dict[str, object] | None = None,
    ) -> GrantView:
        """Change a grant's role (``None``: keep it) and, for team-workspace access, its custom
        attributes (a custom level starts from the attributes the grant had)."""
        with self._db.unit_of_work(write=True) as s:
            org, g = _managed_grant(s, caller, grant_id)
            role = role or g.role
            _check_role(s, org, role, g.kind)
            current = grant_workspace_access(g.role, g) if g.kind == KIND_TEAM_WORKSPACE else None
            custom = _workspace_access(role, attributes or {}, current)
            g.role = role
            _store_access(g, custom)
            s.flush()
            record(
                s,
                at=self._clock.now(),
                actor=_actor(caller, source),
                action="rbac.grant.update",
                subject=grant_id,
                role=role,
                custom=custom.attributes() if custom else None,
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
        if name in BUILTIN_ROLES or name == CUSTOM:
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


def _workspace_access(
    role: str, attributes: dict[str, object], current: WorkspaceAccess | None
) -> WorkspaceAccess | None:
    """The custom workspace access a team-workspace body asks for (``custom``: from
    ``current``, or HCP Terraform's defaults). With a fixed level, the custom attributes are
    the level's (read-only in HCP Terraform): sending them back unchanged is fine, asking for
    other values is a 422."""
    pointer = "/data/attributes"
    if role == CUSTOM:
        return parse_workspace_access(attributes, current or WorkspaceAccess(), pointer)
    fixed = grant_workspace_access(role, None)
    named = custom_named(attributes)
    if fixed is not None and named:
        wanted = parse_workspace_access(attributes, fixed, pointer)
        if wanted != fixed:
            raise Invalid(
                f"{', '.join(named)} can only be chosen with access custom; access {role} "
                "has fixed values (send them unchanged, or leave them out)",
                pointer=f"{pointer}/{named[0]}",
            )
    return None


def _store_access(g: Grant, custom: WorkspaceAccess | None) -> None:
    """Keep the custom attributes on the row (None for every other role)."""
    g.runs = custom.runs if custom else None
    g.variables = custom.variables if custom else None
    g.state_versions = custom.state_versions if custom else None
    g.sentinel_mocks = custom.sentinel_mocks if custom else None
    g.workspace_locking = custom.workspace_locking if custom else None
    g.run_tasks = custom.run_tasks if custom else None


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
