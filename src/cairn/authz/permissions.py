"""The permission vocabulary: what a subject may do in an organization, a project or on a
workspace.

Roles (``authz.roles``) bundle these; grants bind roles to teams and users; the authorizer
(``authz.authorizer``) is the one place that decides. Permissions named for features cairn
does not have yet (Sentinel mocks, run tasks, policies, VCS, the private registry, agent
pools) are given and shown as HCP Terraform would, and are checked by nothing until the
feature exists; ``variables:read`` / ``variables:write`` are checked by ``cairn.variables``.
"""

from __future__ import annotations

from typing import Final

# ---- on workspaces (TFE workspace access: runs, state versions, locking, …) ----------------
WORKSPACE_READ: Final = "workspace:read"  # see the workspace and its runs (every level)
# Change the workspace's contents (tags; TFE's write and admin levels).
WORKSPACE_WRITE: Final = "workspace:write"
WORKSPACE_LOCK: Final = "workspace:lock"
WORKSPACE_MANAGE: Final = "workspace:manage"  # settings, delete, force-unlock (admin)
RUN_PLAN: Final = "run:plan"
RUN_APPLY: Final = "run:apply"
# State versions: "read-outputs" (the outputs only), "read" (whole states), "write".
STATE_READ_OUTPUTS: Final = "state:read-outputs"
STATE_READ: Final = "state:read"
STATE_WRITE: Final = "state:write"
# Workspace variables: list and show them (sensitive values never), create/change/delete them.
VARIABLES_READ: Final = "variables:read"
VARIABLES_WRITE: Final = "variables:write"
# Not enforced until the features exist.
SENTINEL_MOCKS_READ: Final = "sentinel-mocks:read"
RUN_TASKS_MANAGE: Final = "run-tasks:manage"

# ---- on projects (TFE team-project access) ----------------------------------------------------
# See the project. (On a project target, workspace:manage is placing workspaces in it.)
PROJECT_READ: Final = "project:read"
PROJECT_MANAGE: Final = "project:manage"  # change its settings, delete it
PROJECT_TEAMS_READ: Final = "project:read-teams"  # see the teams' access to it
PROJECT_TEAMS_MANAGE: Final = "project:manage-teams"  # give teams access to it

# ---- on the organization ------------------------------------------------------------------
ORG_MANAGE: Final = "org:manage"
# TFE's "manage membership": add people to teams and remove them (not the owners team), which
# is how someone joins or leaves an organization here; nothing on workspaces or settings.
ORG_MANAGE_MEMBERSHIP: Final = "org:manage-membership"
# TFE's "manage teams": create, rename, delete teams, their settings and tokens (and the
# membership of teams).
ORG_MANAGE_TEAMS: Final = "org:manage-teams"
# TFE's "manage organization access": change the organization-access flags of teams (not the
# owners team); it implies manage-teams and manage-membership (roles.ORG_ACCESS_FLAGS), not
# ``org:manage``.
ORG_MANAGE_ACCESS: Final = "org:manage-access"
# TFE's "include secret teams": the three above reach secret teams too.
ORG_SECRET_TEAMS: Final = "org:access-secret-teams"  # noqa: S105 (a permission name)
# Organization flags for features cairn does not have yet: stored, shown, checked by nothing.
ORG_MANAGE_POLICIES: Final = "org:manage-policies"
ORG_MANAGE_POLICY_OVERRIDES: Final = "org:manage-policy-overrides"
ORG_MANAGE_VCS: Final = "org:manage-vcs-settings"
ORG_MANAGE_PROVIDERS: Final = "org:manage-providers"
ORG_MANAGE_MODULES: Final = "org:manage-modules"
ORG_MANAGE_RUN_TASKS: Final = "org:manage-run-tasks"
ORG_MANAGE_AGENT_POOLS: Final = "org:manage-agent-pools"
# Internal: may see the organization itself (a member of one of its teams, or holds a grant).
ORG_READ: Final = "org:read"

WORKSPACE_PERMISSIONS: Final = frozenset(
    {
        WORKSPACE_READ,
        WORKSPACE_WRITE,
        WORKSPACE_LOCK,
        WORKSPACE_MANAGE,
        RUN_PLAN,
        RUN_APPLY,
        STATE_READ_OUTPUTS,
        STATE_READ,
        STATE_WRITE,
        VARIABLES_READ,
        VARIABLES_WRITE,
        SENTINEL_MOCKS_READ,
        RUN_TASKS_MANAGE,
    }
)
ALL_PERMISSIONS: Final = WORKSPACE_PERMISSIONS | frozenset(
    {
        PROJECT_READ,
        PROJECT_MANAGE,
        PROJECT_TEAMS_READ,
        PROJECT_TEAMS_MANAGE,
        ORG_MANAGE,
        ORG_MANAGE_MEMBERSHIP,
        ORG_MANAGE_TEAMS,
        ORG_MANAGE_ACCESS,
        ORG_SECRET_TEAMS,
        ORG_MANAGE_POLICIES,
        ORG_MANAGE_POLICY_OVERRIDES,
        ORG_MANAGE_VCS,
        ORG_MANAGE_PROVIDERS,
        ORG_MANAGE_MODULES,
        ORG_MANAGE_RUN_TASKS,
        ORG_MANAGE_AGENT_POOLS,
        ORG_READ,
    }
)
# What custom roles may be built from: a role is granted on workspaces (chosen by pattern), so
# only workspace permissions, plus org:manage (kept from before; it is every right).
PUBLIC_PERMISSIONS: Final = WORKSPACE_PERMISSIONS | {ORG_MANAGE}
# A custom role's workspace:read has always included reading states, and workspace:write
# writing them: roles made before state permissions were separate keep their meaning.
IMPLIED: Final[dict[str, frozenset[str]]] = {
    WORKSPACE_READ: frozenset({STATE_READ_OUTPUTS, STATE_READ}),
    WORKSPACE_WRITE: frozenset({STATE_WRITE}),
}
