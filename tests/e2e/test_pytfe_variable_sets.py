"""Variable sets through the official Python SDK, pytfe 1.5.0, against a real cairn server over
HTTPS, on both metadata backends: sets (create, list, read with include, update, delete), their
variables, applying them to workspaces and projects, the sets of a workspace and of a project,
and HCP Terraform's precedence in ``variables.list_all`` (``all-vars``); a sensitive value is
None in every answer and never in the server's log."""

from __future__ import annotations

import pytest
from pytfe import TFEClient
from pytfe.errors import NotFound, TFEError
from pytfe.models import (
    CategoryType,
    Project,
    ProjectCreateOptions,
    VariableCreateOptions,
    VariableSetApplyToProjectsOptions,
    VariableSetApplyToWorkspacesOptions,
    VariableSetCreateOptions,
    VariableSetIncludeOpt,
    VariableSetListOptions,
    VariableSetReadOptions,
    VariableSetRemoveFromProjectsOptions,
    VariableSetRemoveFromWorkspacesOptions,
    VariableSetUpdateOptions,
    VariableSetUpdateWorkspacesOptions,
    VariableSetVariableCreateOptions,
    VariableSetVariableUpdateOptions,
    Workspace,
    WorkspaceCreateOptions,
)

from tests.support import api as tfe_api
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e

SECRET = "pytfe-varset-sensitive-5b1e0d"


def _id(value: str | None) -> str:
    assert value is not None
    return value


def test_variable_sets_through_pytfe(tfe: TFEClient, org: str, server: CairnServer) -> None:
    prj = tfe.projects.create(org, ProjectCreateOptions(name=tfe_api.unique_name("prj")))
    in_project = tfe.workspaces.create(
        org,
        WorkspaceCreateOptions(
            name=tfe_api.unique_name("vs-p"), project=Project.model_construct(id=prj.id)
        ),
    )
    ws = tfe.workspaces.create(org, WorkspaceCreateOptions(name=tfe_api.unique_name("vs")))
    tfe.variables.create(
        ws.id,
        VariableCreateOptions(key="region", value="own", category=CategoryType.TERRAFORM),
    )

    shared = tfe.variable_sets.create(
        org,
        VariableSetCreateOptions(name="B_shared", description="for all", **{"global": False}),
    )
    set_id = _id(shared.id)
    assert set_id.startswith("varset-")
    assert (shared.name, shared.description, shared.global_) == ("B_shared", "for all", False)
    region = tfe.variable_set_variables.create(
        set_id,
        VariableSetVariableCreateOptions(
            key="region", value="from-set", category=CategoryType.TERRAFORM
        ),
    )
    assert region.value == "from-set"
    token = tfe.variable_set_variables.create(
        set_id,
        VariableSetVariableCreateOptions(
            key="TOKEN", value=SECRET, category=CategoryType.ENV, sensitive=True
        ),
    )
    assert token.value is None and token.sensitive is True
    listed = {v.key: v for v in tfe.variable_set_variables.list(set_id)}
    assert set(listed) == {"region", "TOKEN"} and listed["TOKEN"].value is None
    assert tfe.variable_set_variables.read(set_id, _id(region.id)).value == "from-set"
    updated = tfe.variable_set_variables.update(
        set_id, _id(region.id), VariableSetVariableUpdateOptions(value="set-2")
    )
    assert updated.value == "set-2"
    with pytest.raises(TFEError):
        tfe.variable_set_variables.update(
            set_id, _id(token.id), VariableSetVariableUpdateOptions(sensitive=False)
        )

    tfe.variable_sets.apply_to_workspaces(
        set_id,
        VariableSetApplyToWorkspacesOptions(workspaces=[Workspace.model_construct(id=ws.id)]),
    )
    tfe.variable_sets.apply_to_projects(
        set_id, VariableSetApplyToProjectsOptions(projects=[Project.model_construct(id=prj.id)])
    )
    read = tfe.variable_sets.read(
        set_id, VariableSetReadOptions(include=[VariableSetIncludeOpt.VARS])
    )
    assert [w.id for w in read.workspaces] == [ws.id]
    assert [p.id for p in read.projects] == [prj.id]
    assert {v.key for v in read.vars} == {"region", "TOKEN"}
    assert [v.id for v in tfe.variable_sets.list_for_workspace(ws.id)] == [set_id]
    assert [v.id for v in tfe.variable_sets.list_for_project(prj.id)] == [set_id]
    assert set_id in {v.id for v in tfe.variable_sets.list(org)}
    assert [v.id for v in tfe.variable_sets.list(org, VariableSetListOptions(query="B_sh"))] == [
        set_id
    ]

    # The workspace's own variable beats a set's; a priority set beats the workspace's.
    effective = {v.key: v.value for v in tfe.variables.list_all(ws.id)}
    assert effective == {"region": "own", "TOKEN": None}
    assert {v.key: v.value for v in tfe.variables.list_all(in_project.id)} == {
        "region": "set-2",
        "TOKEN": None,
    }
    tfe.variable_sets.update(set_id, VariableSetUpdateOptions(priority=True))
    assert {v.key: v.value for v in tfe.variables.list_all(ws.id)}["region"] == "set-2"

    # A global set reaches every workspace; different global sets may not share a key.
    every = tfe.variable_sets.create(
        org, VariableSetCreateOptions(name="A_all", **{"global": True})
    )
    tfe.variable_set_variables.create(
        _id(every.id),
        VariableSetVariableCreateOptions(key="owner", value="ops", category=CategoryType.ENV),
    )
    clash = tfe.variable_sets.create(
        org, VariableSetCreateOptions(name="C_all", **{"global": True})
    )
    with pytest.raises(TFEError):
        tfe.variable_set_variables.create(
            _id(clash.id),
            VariableSetVariableCreateOptions(key="owner", value="x", category=CategoryType.ENV),
        )
    with pytest.raises(TFEError):  # a global set is applied to nothing by hand
        tfe.variable_sets.apply_to_workspaces(
            _id(every.id),
            VariableSetApplyToWorkspacesOptions(workspaces=[Workspace.model_construct(id=ws.id)]),
        )
    assert {v.key for v in tfe.variables.list_all(in_project.id)} == {"region", "TOKEN", "owner"}

    # Remove, replace, delete.
    tfe.variable_sets.remove_from_projects(
        set_id, VariableSetRemoveFromProjectsOptions(projects=[Project.model_construct(id=prj.id)])
    )
    assert {v.key for v in tfe.variables.list_all(in_project.id)} == {"owner"}
    tfe.variable_sets.remove_from_workspaces(
        set_id,
        VariableSetRemoveFromWorkspacesOptions(workspaces=[Workspace.model_construct(id=ws.id)]),
    )
    assert tfe.variable_sets.read(set_id).workspaces == []
    replaced = tfe.variable_sets.update_workspaces(
        set_id,
        VariableSetUpdateWorkspacesOptions(
            workspaces=[Workspace.model_construct(id=in_project.id)]
        ),
    )
    assert [w.id for w in replaced.workspaces] == [in_project.id]
    tfe.variable_set_variables.delete(set_id, _id(token.id))
    with pytest.raises(NotFound):
        tfe.variable_set_variables.read(set_id, _id(token.id))
    tfe.variable_sets.delete(set_id)
    with pytest.raises(NotFound):
        tfe.variable_sets.read(set_id)
    assert SECRET not in server.output(limit=10_000_000)
