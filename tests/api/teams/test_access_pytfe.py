"""The access API through the official SDK (pytfe) against a real server, on SQLite and on
PostgreSQL: every organization-access flag, team-workspace access `custom` with its attributes,
and team-project access (pytfe sends `team-project-access` as the type, which HCP Terraform
takes)."""

from __future__ import annotations

import httpx
from pytfe import TFEClient
from pytfe.models import Project, Team, TeamCreateOptions, TeamUpdateOptions
from pytfe.models.team import OrganizationAccessOptions
from pytfe.models.team_project_access import (
    TeamProjectAccessAddOptions,
    TeamProjectAccessListOptions,
    TeamProjectAccessType,
    TeamProjectAccessUpdateOptions,
    TeamProjectAccessWorkspacePermissionsOptions,
    WorkspaceStateVersionsPermissionType,
)
from pytfe.models.team_workspace_access import (
    TeamWorkspaceAccessAddOptions,
    TeamWorkspaceAccessType,
    TeamWorkspaceAccessUpdateOptions,
    TeamWorkspaceRunsPermission,
    TeamWorkspaceStateVersionsPermission,
)

from tests.support import api as tfe_api

FIELDS = list(OrganizationAccessOptions.model_fields)


def test_every_organization_access_flag_round_trips(tfe: TFEClient, org: str) -> None:
    assert len(FIELDS) == 15
    every = OrganizationAccessOptions(**{f: True for f in FIELDS})
    made = tfe.teams.create(org, TeamCreateOptions(name="everything", organization_access=every))
    read = tfe.teams.read(made.id)
    assert read.organization_access is not None
    assert read.organization_access.model_dump() == {f: True for f in FIELDS}

    # An update names some flags; the others stay.
    change = OrganizationAccessOptions(manage_policies=False, read_projects=False)
    tfe.teams.update(made.id, TeamUpdateOptions(organization_access=change))
    again = tfe.teams.read(made.id).organization_access
    assert again is not None
    assert again.model_dump() == {f: f not in ("manage_policies", "read_projects") for f in FIELDS}


def test_custom_team_workspace_access(tfe: TFEClient, api: httpx.Client, org: str) -> None:
    ws_id = tfe_api.create_workspace(api, org, "app")
    devs = tfe.teams.create(org, TeamCreateOptions(name="devs"))
    added = tfe.team_workspace_accesses.add(
        TeamWorkspaceAccessAddOptions(
            team_id=devs.id,
            workspace_id=ws_id,
            access=TeamWorkspaceAccessType.CUSTOM,
            state_versions=TeamWorkspaceStateVersionsPermission.READ_OUTPUTS,
            workspace_locking=True,
        )
    )
    assert added.access == TeamWorkspaceAccessType.CUSTOM
    assert added.state_versions == TeamWorkspaceStateVersionsPermission.READ_OUTPUTS
    assert added.workspace_locking is True
    assert added.runs == TeamWorkspaceRunsPermission.READ

    updated = tfe.team_workspace_accesses.update(
        added.id, TeamWorkspaceAccessUpdateOptions(runs=TeamWorkspaceRunsPermission.PLAN)
    )
    assert updated.runs == TeamWorkspaceRunsPermission.PLAN
    assert updated.state_versions == TeamWorkspaceStateVersionsPermission.READ_OUTPUTS
    read = tfe.team_workspace_accesses.read(added.id)
    assert read.runs == TeamWorkspaceRunsPermission.PLAN and read.workspace_locking is True
    assert [a.id for a in tfe.team_workspace_accesses.list(ws_id)] == [added.id]

    fixed = tfe.team_workspace_accesses.update(
        added.id, TeamWorkspaceAccessUpdateOptions(access=TeamWorkspaceAccessType.WRITE)
    )
    assert fixed.runs == TeamWorkspaceRunsPermission.APPLY
    assert fixed.state_versions == TeamWorkspaceStateVersionsPermission.WRITE
    tfe.team_workspace_accesses.remove(added.id)
    assert list(tfe.team_workspace_accesses.list(ws_id)) == []


def test_team_project_access(tfe: TFEClient, api: httpx.Client, org: str) -> None:
    body = {"data": {"type": "projects", "attributes": {"name": "platform"}}}
    made = api.post(
        f"/api/v2/organizations/{org}/projects",
        json=body,
        headers={"Content-Type": tfe_api.JSONAPI},
    )
    prj = Project(id=tfe_api.document(made, 201)["data"]["id"])
    devs = tfe.teams.create(org, TeamCreateOptions(name="devs"))
    added = tfe.team_project_accesses.add(
        TeamProjectAccessAddOptions(
            access=TeamProjectAccessType.TEAM_PROJECT_ACCESS_CUSTOM,
            team=Team(id=devs.id),
            project=Project(id=prj.id),
            workspace_access=TeamProjectAccessWorkspacePermissionsOptions(
                state_versions=WorkspaceStateVersionsPermissionType.WORKSPACE_STATE_VERSIONS_PERMISSION_READ_OUTPUTS,
                locking=True,
            ),
        )
    )
    assert added.id.startswith("tprj-")
    assert added.access == TeamProjectAccessType.TEAM_PROJECT_ACCESS_CUSTOM
    assert added.workspace_access is not None and added.workspace_access.locking is True
    assert (
        added.workspace_access.state_versions
        == WorkspaceStateVersionsPermissionType.WORKSPACE_STATE_VERSIONS_PERMISSION_READ_OUTPUTS
    )
    assert added.team is not None and added.team.id == devs.id
    assert added.project is not None and added.project.id == prj.id

    listed = list(tfe.team_project_accesses.list(TeamProjectAccessListOptions(project_id=prj.id)))
    assert [a.id for a in listed] == [added.id]
    updated = tfe.team_project_accesses.update(
        added.id,
        TeamProjectAccessUpdateOptions(access=TeamProjectAccessType.TEAM_PROJECT_ACCESS_ADMIN),
    )
    assert updated.access == TeamProjectAccessType.TEAM_PROJECT_ACCESS_ADMIN
    read = tfe.team_project_accesses.read(added.id)
    assert read.access == TeamProjectAccessType.TEAM_PROJECT_ACCESS_ADMIN
    assert read.project_access is not None
    tfe.team_project_accesses.remove(added.id)
    assert (
        list(tfe.team_project_accesses.list(TeamProjectAccessListOptions(project_id=prj.id))) == []
    )
