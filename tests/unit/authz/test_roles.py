"""The pure mappings of `authz.roles`: access levels, custom attributes, team-project levels and
organization-access flags onto permissions."""

from __future__ import annotations

import importlib
import itertools

import pytest

from cairn.authz.access import Access, ProjectGrant, WorkspaceGrant
from cairn.authz.authorizer import Project, Ws, permissions_on
from cairn.authz.roles import (
    FIXED_PROJECT_ACCESS,
    FIXED_WORKSPACE_ACCESS,
    ORG_ACCESS_FLAGS,
    WorkspaceAccess,
    org_access_permissions,
    parse_workspace_access,
    project_permissions,
    with_implied,
    workspace_permissions,
)
from cairn.authz.subject import User
from cairn.errors import Invalid

# The module itself (the function ``authz.permissions`` shadows it on the package).
p = importlib.import_module("cairn.authz.permissions")


def test_fixed_levels_grow_one_into_the_next() -> None:
    levels = [
        workspace_permissions(lv, FIXED_WORKSPACE_ACCESS[lv]) for lv in FIXED_WORKSPACE_ACCESS
    ]
    for smaller, bigger in itertools.pairwise(levels):
        assert smaller < bigger
    read, plan, write, admin = levels
    assert {p.STATE_READ, p.STATE_READ_OUTPUTS} <= read and p.STATE_WRITE not in read
    assert plan - read == {p.RUN_PLAN}
    assert {
        p.WORKSPACE_LOCK,
        p.STATE_WRITE,
        p.RUN_APPLY,
    } <= write and p.WORKSPACE_MANAGE not in write
    assert admin - write == {p.WORKSPACE_MANAGE, p.RUN_TASKS_MANAGE}


@pytest.mark.parametrize(
    ("state_versions", "expected"),
    [
        ("none", set()),
        ("read-outputs", {p.STATE_READ_OUTPUTS}),
        ("read", {p.STATE_READ_OUTPUTS, p.STATE_READ}),
        ("write", {p.STATE_READ_OUTPUTS, p.STATE_READ, p.STATE_WRITE}),
    ],
)
def test_custom_state_versions(state_versions: str, expected: set[str]) -> None:
    perms = workspace_permissions("custom", WorkspaceAccess(state_versions=state_versions))
    assert {x for x in perms if x.startswith("state:")} == expected
    assert p.WORKSPACE_READ in perms and p.WORKSPACE_MANAGE not in perms


def test_parse_workspace_access_points_at_the_bad_value() -> None:
    with pytest.raises(Invalid) as caught:
        parse_workspace_access({"runs": "destroy"}, WorkspaceAccess(), "/data/attributes")
    assert caught.value.pointer == "/data/attributes/runs"
    changed = parse_workspace_access({"workspace-locking": True}, WorkspaceAccess(), "/x")
    assert changed == WorkspaceAccess(workspace_locking=True)


def test_organization_flags() -> None:
    assert len(ORG_ACCESS_FLAGS) == 15
    assert p.ORG_MANAGE not in set().union(*ORG_ACCESS_FLAGS.values())
    assert org_access_permissions("owners", "") == p.ALL_PERMISSIONS
    assert org_access_permissions("t", "read-projects") == {p.PROJECT_READ}
    assert ORG_ACCESS_FLAGS["manage-membership"] < ORG_ACCESS_FLAGS["manage-teams"]
    assert ORG_ACCESS_FLAGS["manage-teams"] < ORG_ACCESS_FLAGS["manage-organization-access"]
    assert org_access_permissions("t", "manage-everything") == frozenset()


def test_custom_roles_keep_their_state_rights() -> None:
    assert with_implied(frozenset({p.WORKSPACE_READ})) >= {p.STATE_READ, p.STATE_READ_OUTPUTS}
    assert p.STATE_WRITE in with_implied(frozenset({p.WORKSPACE_WRITE}))


def test_project_access_reaches_the_projects_workspaces_only() -> None:
    on_project, on_workspaces = project_permissions("write", FIXED_PROJECT_ACCESS["write"])
    access = Access(
        grants=(WorkspaceGrant("org-1", on_workspaces, project_id="prj-1"),),
        projects=(ProjectGrant("org-1", "prj-1", on_project),),
    )
    user = User("user-1", "u", "at-1", access=access)
    inside = permissions_on(user, Ws("org-1", "o", "ws-1", "a", "prj-1"))
    assert {p.STATE_WRITE, p.WORKSPACE_LOCK, p.RUN_APPLY} <= inside
    assert permissions_on(user, Ws("org-1", "o", "ws-2", "b", "prj-2")) == frozenset()
    assert permissions_on(user, Ws("org-2", "o", "ws-3", "c", "prj-1")) == frozenset()
    project = permissions_on(user, Project("org-1", "o", "prj-1", "p"))
    assert p.PROJECT_READ in project and p.PROJECT_MANAGE not in project
    assert p.PROJECT_READ not in permissions_on(user, Project("org-1", "o", "prj-2", "q"))
    _, admin_ws = project_permissions("admin", FIXED_PROJECT_ACCESS["admin"])
    assert p.WORKSPACE_MANAGE in admin_ws
