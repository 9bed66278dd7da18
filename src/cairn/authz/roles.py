"""Built-in roles (TFE's workspace access levels), custom workspace access, team-project
access levels and TFE organization-access flags, mapped onto cairn's permissions. Pure
functions of values: the tables are ``authz.model``, the decisions ``authz.authorizer``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from cairn.authz.permissions import (
    ALL_PERMISSIONS,
    IMPLIED,
    ORG_MANAGE_ACCESS,
    ORG_MANAGE_AGENT_POOLS,
    ORG_MANAGE_MEMBERSHIP,
    ORG_MANAGE_MODULES,
    ORG_MANAGE_POLICIES,
    ORG_MANAGE_POLICY_OVERRIDES,
    ORG_MANAGE_PROVIDERS,
    ORG_MANAGE_RUN_TASKS,
    ORG_MANAGE_TEAMS,
    ORG_MANAGE_VCS,
    ORG_SECRET_TEAMS,
    PROJECT_MANAGE,
    PROJECT_READ,
    PROJECT_TEAMS_MANAGE,
    PROJECT_TEAMS_READ,
    PUBLIC_PERMISSIONS,
    RUN_APPLY,
    RUN_PLAN,
    RUN_TASKS_MANAGE,
    SENTINEL_MOCKS_READ,
    STATE_READ,
    STATE_READ_OUTPUTS,
    STATE_WRITE,
    VARIABLES_READ,
    VARIABLES_WRITE,
    WORKSPACE_LOCK,
    WORKSPACE_MANAGE,
    WORKSPACE_READ,
    WORKSPACE_WRITE,
)
from cairn.errors import Invalid

# ---- workspace access (team-workspaces, and what a team-project gives its workspaces) ------

RUNS: Final = ("read", "plan", "apply")
VARIABLES: Final = ("none", "read", "write")
STATE_VERSIONS: Final = ("none", "read-outputs", "read", "write")
SENTINEL_MOCKS: Final = ("none", "read")


@dataclass(frozen=True)
class WorkspaceAccess:
    """TFE's per-permission workspace access (the attributes of a team-workspace)."""

    runs: str = "read"
    variables: str = "none"
    state_versions: str = "none"
    sentinel_mocks: str = "none"
    workspace_locking: bool = False
    run_tasks: bool = False

    def attributes(self) -> dict[str, Any]:
        """As the TFE API shows them."""
        return {
            "runs": self.runs,
            "variables": self.variables,
            "state-versions": self.state_versions,
            "sentinel-mocks": self.sentinel_mocks,
            "workspace-locking": self.workspace_locking,
            "run-tasks": self.run_tasks,
        }


# What HCP Terraform answers for the fixed levels (their attributes are read-only).
FIXED_WORKSPACE_ACCESS: Final[dict[str, WorkspaceAccess]] = {
    "read": WorkspaceAccess("read", "read", "read", "none", False, False),
    "plan": WorkspaceAccess("plan", "read", "read", "none", False, False),
    "write": WorkspaceAccess("apply", "write", "write", "read", True, False),
    "admin": WorkspaceAccess("apply", "write", "write", "read", True, True),
}
CUSTOM: Final = "custom"
CUSTOM_DEFAULT: Final = WorkspaceAccess()  # what "custom" starts from: read runs, nothing else
TFE_ACCESS_LEVELS: Final = ("read", "plan", "write", "admin", CUSTOM)


def workspace_permissions(level: str, access: WorkspaceAccess) -> frozenset[str]:
    """The permissions a workspace access level (with its attributes, for ``custom``) gives
    on a workspace."""
    perms = {WORKSPACE_READ}  # every level reads runs, so sees the workspace
    if access.runs in ("plan", "apply"):
        perms.add(RUN_PLAN)
    if access.runs == "apply":
        perms.add(RUN_APPLY)
    if access.variables in ("read", "write"):
        perms.add(VARIABLES_READ)
    if access.variables == "write":
        perms.add(VARIABLES_WRITE)
    if access.state_versions in ("read-outputs", "read", "write"):
        perms.add(STATE_READ_OUTPUTS)
    if access.state_versions in ("read", "write"):
        perms.add(STATE_READ)
    if access.state_versions == "write":
        perms.add(STATE_WRITE)
    if access.sentinel_mocks == "read":
        perms.add(SENTINEL_MOCKS_READ)
    if access.workspace_locking:
        perms.add(WORKSPACE_LOCK)
    if access.run_tasks:
        perms.add(RUN_TASKS_MANAGE)
    if level in ("write", "admin"):
        perms.add(WORKSPACE_WRITE)
    if level == "admin":
        perms.add(WORKSPACE_MANAGE)
    return frozenset(perms)


def fixed(level: str) -> frozenset[str]:
    return workspace_permissions(level, FIXED_WORKSPACE_ACCESS[level])


READ: Final = fixed("read")
PLAN: Final = fixed("plan")
WRITE: Final = fixed("write")
ADMIN: Final = fixed("admin")

BUILTIN_ROLES: Final[dict[str, frozenset[str]]] = {
    "read": READ,
    "plan": PLAN,
    "write": WRITE,
    "admin": ADMIN,
}


def parse_workspace_access(
    attrs: dict[str, Any], base: WorkspaceAccess, pointer: str
) -> WorkspaceAccess:
    """``base`` with the custom attributes ``attrs`` names (TFE's wire names); 422 on a bad
    value."""
    changes: dict[str, Any] = {}
    for wire, field, choices in (
        ("runs", "runs", RUNS),
        ("variables", "variables", VARIABLES),
        ("state-versions", "state_versions", STATE_VERSIONS),
        ("sentinel-mocks", "sentinel_mocks", SENTINEL_MOCKS),
    ):
        if attrs.get(wire) is None:
            continue
        value = attrs[wire]
        if value not in choices:
            raise Invalid(
                f"{wire} must be one of {', '.join(choices)}", pointer=f"{pointer}/{wire}"
            )
        changes[field] = value
    for wire, field in (("workspace-locking", "workspace_locking"), ("run-tasks", "run_tasks")):
        if attrs.get(wire) is None:
            continue
        if not isinstance(attrs[wire], bool):
            raise Invalid(f"{wire} must be true or false", pointer=f"{pointer}/{wire}")
        changes[field] = attrs[wire]
    return replace(base, **changes)


def custom_named(attrs: dict[str, Any]) -> list[str]:
    """The custom workspace-access attributes a body names (to refuse them beside a fixed
    level that disagrees)."""
    names = ("runs", "variables", "state-versions", "sentinel-mocks", "workspace-locking")
    return [n for n in (*names, "run-tasks") if attrs.get(n) is not None]


# ---- team-project access ----------------------------------------------------------------------

PROJECT_LEVELS: Final = ("read", "write", "maintain", "admin", CUSTOM)
PROJECT_SETTINGS: Final = ("read", "update", "delete")
PROJECT_TEAMS: Final = ("none", "read", "manage")
PROJECT_VARIABLE_SETS: Final = ("none", "read", "write")


@dataclass(frozen=True)
class ProjectAccess:
    """TFE's team-project access: on the project itself, and on every workspace in it."""

    settings: str = "read"
    teams: str = "none"
    variable_sets: str = "none"
    workspaces: WorkspaceAccess = WorkspaceAccess()
    create: bool = False
    locking: bool = False
    move: bool = False
    delete: bool = False

    def project_attributes(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "teams": self.teams,
            "variable-sets": self.variable_sets,
        }

    def workspace_attributes(self) -> dict[str, Any]:
        w = self.workspaces
        return {
            "runs": w.runs,
            "sentinel-mocks": w.sentinel_mocks,
            "state-versions": w.state_versions,
            "variables": w.variables,
            "create": self.create,
            "locking": self.locking,
            "move": self.move,
            "delete": self.delete,
            "run-tasks": w.run_tasks,
        }


# As HCP Terraform documents the fixed project levels: read (read the project and its
# workspaces), write (write on its workspaces), maintain (admin on its workspaces, create them),
# admin (maintain, and the project's settings and team access; move and delete workspaces).
_W = FIXED_WORKSPACE_ACCESS
FIXED_PROJECT_ACCESS: Final[dict[str, ProjectAccess]] = {
    "read": ProjectAccess("read", "none", "none", _W["read"]),
    "write": ProjectAccess("read", "none", "none", _W["write"], locking=True),
    "maintain": ProjectAccess(
        "read", "none", "none", _W["admin"], create=True, locking=True, delete=True
    ),
    "admin": ProjectAccess(
        "delete", "manage", "write", _W["admin"], create=True, locking=True, move=True, delete=True
    ),
}
PROJECT_CUSTOM_DEFAULT: Final = ProjectAccess()


def project_permissions(level: str, access: ProjectAccess) -> tuple[frozenset[str], frozenset[str]]:
    """(permissions on the project, permissions on each of its workspaces) of a team-project
    access level."""
    on_project = {PROJECT_READ}
    if access.settings in ("update", "delete"):
        on_project.add(PROJECT_MANAGE)
    if access.teams in ("read", "manage"):
        on_project.add(PROJECT_TEAMS_READ)
    if access.teams == "manage":
        on_project.add(PROJECT_TEAMS_MANAGE)
    if access.create or access.move:
        on_project.add(WORKSPACE_MANAGE)  # place workspaces in it (authz.require_placement)
    w = access.workspaces
    ws_level = {"read": "read", "write": "write", "maintain": "admin", "admin": "admin"}.get(
        level, CUSTOM
    )
    on_workspaces = set(workspace_permissions(ws_level, w))
    if access.locking:
        on_workspaces.add(WORKSPACE_LOCK)
    if access.delete or access.move:
        on_workspaces.add(WORKSPACE_MANAGE)
    return frozenset(on_project), frozenset(on_workspaces)


def parse_project_access(
    attrs: dict[str, Any], workspace_attrs: dict[str, Any], base: ProjectAccess
) -> ProjectAccess:
    """``base`` changed by the ``project-access`` and ``workspace-access`` objects of a
    body (TFE's wire names); 422 on a bad value."""
    changes: dict[str, Any] = {}
    pointer = "/data/attributes/project-access"
    for wire, field, choices in (
        ("settings", "settings", PROJECT_SETTINGS),
        ("teams", "teams", PROJECT_TEAMS),
        ("variable-sets", "variable_sets", PROJECT_VARIABLE_SETS),
    ):
        if attrs.get(wire) is None:
            continue
        if attrs[wire] not in choices:
            raise Invalid(
                f"{wire} must be one of {', '.join(choices)}", pointer=f"{pointer}/{wire}"
            )
        changes[field] = attrs[wire]
    pointer = "/data/attributes/workspace-access"
    renamed = {k: v for k, v in workspace_attrs.items() if k != "locking"}
    changes["workspaces"] = parse_workspace_access(renamed, base.workspaces, pointer)
    for wire in ("create", "locking", "move", "delete"):
        if workspace_attrs.get(wire) is None:
            continue
        if not isinstance(workspace_attrs[wire], bool):
            raise Invalid(f"{wire} must be true or false", pointer=f"{pointer}/{wire}")
        changes[wire] = workspace_attrs[wire]
    return replace(base, **changes)


# ---- organization access --------------------------------------------------------------------

_MEMBERSHIP: Final = frozenset({ORG_MANAGE_MEMBERSHIP})
_TEAMS: Final = _MEMBERSHIP | {ORG_MANAGE_TEAMS}
# Every flag of TFE's organization-access (go-tfe's OrganizationAccess), in its order → the
# permissions it gives in the organization (on every workspace/project of it for the workspace
# and project flags). As HCP Terraform documents them: read-workspaces is read on every
# workspace (and project), read-projects sees every project; manage-workspaces is admin on
# every workspace and manage-projects admin on every project and its workspaces;
# manage-membership adds people to teams and removes them; manage-teams creates, changes and
# deletes teams (and manages membership); manage-organization-access changes teams'
# organization access (and manages teams); access-secret-teams lets those three reach secret
# teams. None is org:manage. The flags of features cairn lacks give a permission nothing
# checks yet (so that only those who hold it may hand it out).
ORG_ACCESS_FLAGS: Final[dict[str, frozenset[str]]] = {
    "manage-policies": frozenset({ORG_MANAGE_POLICIES}),
    "manage-policy-overrides": frozenset({ORG_MANAGE_POLICY_OVERRIDES}),
    "manage-workspaces": ADMIN | {PROJECT_READ},
    "manage-vcs-settings": frozenset({ORG_MANAGE_VCS}),
    "manage-providers": frozenset({ORG_MANAGE_PROVIDERS}),
    "manage-modules": frozenset({ORG_MANAGE_MODULES}),
    "manage-run-tasks": frozenset({ORG_MANAGE_RUN_TASKS}),
    "manage-projects": ADMIN
    | {PROJECT_READ, PROJECT_MANAGE, PROJECT_TEAMS_READ, PROJECT_TEAMS_MANAGE},
    "read-workspaces": READ | {PROJECT_READ},
    "read-projects": frozenset({PROJECT_READ}),
    "manage-membership": _MEMBERSHIP,
    "manage-teams": _TEAMS,
    "manage-organization-access": _TEAMS | {ORG_MANAGE_ACCESS},
    "access-secret-teams": frozenset({ORG_SECRET_TEAMS}),
    "manage-agent-pools": frozenset({ORG_MANAGE_AGENT_POOLS}),
}
# Flags whose features cairn does not have yet: stored and shown, no effect.
INERT_FLAGS: Final = (
    "manage-policies",
    "manage-policy-overrides",
    "manage-vcs-settings",
    "manage-providers",
    "manage-modules",
    "manage-run-tasks",
    "manage-agent-pools",
)
OWNERS_TEAM: Final = "owners"


def parse_permissions(values: list[str], pointer: str) -> frozenset[str]:
    unknown = [v for v in values if v not in PUBLIC_PERMISSIONS]
    if unknown or not values:
        raise Invalid(
            "permissions must be a non-empty list drawn from "
            + ", ".join(sorted(PUBLIC_PERMISSIONS))
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            pointer=pointer,
        )
    return frozenset(values)


def with_implied(perms: frozenset[str]) -> frozenset[str]:
    """A custom role's permissions with what they imply (``permissions.IMPLIED``)."""
    out = set(perms)
    for p in perms:
        out |= IMPLIED.get(p, frozenset())
    return frozenset(out)


def org_access_permissions(team_name: str, flags: str) -> frozenset[str]:
    if team_name == OWNERS_TEAM:
        return ALL_PERMISSIONS
    perms: set[str] = set()
    for flag in filter(None, flags.split(",")):
        perms |= ORG_ACCESS_FLAGS.get(flag, frozenset())
    return frozenset(perms)


def grant_workspace_access(role: str, row: Any) -> WorkspaceAccess | None:
    """The workspace access of a grant row (``authz.model.Grant``-like: ``runs`` …): its
    stored attributes for ``custom``, the level's for a fixed level, None for a custom role."""
    if role == CUSTOM:
        return WorkspaceAccess(
            runs=row.runs or CUSTOM_DEFAULT.runs,
            variables=row.variables or CUSTOM_DEFAULT.variables,
            state_versions=row.state_versions or CUSTOM_DEFAULT.state_versions,
            sentinel_mocks=row.sentinel_mocks or CUSTOM_DEFAULT.sentinel_mocks,
            workspace_locking=bool(row.workspace_locking),
            run_tasks=bool(row.run_tasks),
        )
    return FIXED_WORKSPACE_ACCESS.get(role)


def team_project_access(row: Any) -> ProjectAccess:
    """The access of a team-project row (``authz.model.TeamProject``-like)."""
    return ProjectAccess(
        settings=row.settings,
        teams=row.teams,
        variable_sets=row.variable_sets,
        workspaces=WorkspaceAccess(
            runs=row.runs,
            variables=row.variables,
            state_versions=row.state_versions,
            sentinel_mocks=row.sentinel_mocks,
            workspace_locking=bool(row.ws_locking),
            run_tasks=bool(row.run_tasks),
        ),
        create=bool(row.ws_create),
        locking=bool(row.ws_locking),
        move=bool(row.ws_move),
        delete=bool(row.ws_delete),
    )
