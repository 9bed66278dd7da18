"""Workspace variables through the official Python SDK, pytfe 1.5.0, against a real cairn
server over HTTPS, on both metadata backends: create, list (and ``list_all``), read, update,
delete; a sensitive value is None in every answer and never in the server's log."""

from __future__ import annotations

import pytest
from pytfe import TFEClient
from pytfe.errors import NotFound, TFEError
from pytfe.models import (
    CategoryType,
    Variable,
    VariableCreateOptions,
    VariableUpdateOptions,
    WorkspaceCreateOptions,
)

from tests.support import api as tfe_api
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e

SECRET = "pytfe-sensitive-value-7f3a9c"


def ident(variable: Variable) -> str:
    assert variable.id is not None
    return variable.id


def test_variables_create_list_read_update_delete(
    tfe: TFEClient, org: str, server: CairnServer
) -> None:
    ws = tfe.workspaces.create(org, WorkspaceCreateOptions(name=tfe_api.unique_name("vars")))
    region = tfe.variables.create(
        ws.id,
        VariableCreateOptions(
            key="region", value="eu-west-1", description="where", category=CategoryType.TERRAFORM
        ),
    )
    assert region.id and region.id.startswith("var-")
    assert (region.key, region.value, region.description) == ("region", "eu-west-1", "where")
    assert region.category == CategoryType.TERRAFORM
    assert region.hcl is False and region.sensitive is False
    sizes = tfe.variables.create(
        ws.id,
        VariableCreateOptions(
            key="sizes", value="[1, 2]", category=CategoryType.TERRAFORM, hcl=True
        ),
    )
    assert sizes.hcl is True
    secret = tfe.variables.create(
        ws.id,
        VariableCreateOptions(
            key="API_TOKEN", value=SECRET, category=CategoryType.ENV, sensitive=True
        ),
    )
    assert secret.sensitive is True and secret.value is None

    listed = {v.key: v for v in tfe.variables.list(ws.id)}
    assert set(listed) == {"region", "sizes", "API_TOKEN"}
    assert listed["region"].value == "eu-west-1"
    assert listed["API_TOKEN"].value is None
    assert {v.id for v in tfe.variables.list_all(ws.id)} == {v.id for v in listed.values()}

    read = tfe.variables.read(ws.id, ident(secret))
    assert read.key == "API_TOKEN" and read.value is None

    updated = tfe.variables.update(ws.id, ident(region), VariableUpdateOptions(value="us-east-2"))
    assert updated.value == "us-east-2" and updated.description == "where"
    rotated = tfe.variables.update(ws.id, ident(secret), VariableUpdateOptions(value=SECRET + "-2"))
    assert rotated.value is None and rotated.sensitive is True
    with pytest.raises(TFEError):
        tfe.variables.update(ws.id, ident(secret), VariableUpdateOptions(sensitive=False))
    with pytest.raises(TFEError):  # not a Terraform variable name
        tfe.variables.create(
            ws.id, VariableCreateOptions(key="1x", value="v", category=CategoryType.TERRAFORM)
        )

    tfe.variables.delete(ws.id, ident(sizes))
    with pytest.raises(NotFound):
        tfe.variables.read(ws.id, ident(sizes))
    assert {v.key for v in tfe.variables.list(ws.id)} == {"region", "API_TOKEN"}
    assert SECRET not in server.output(limit=10_000_000)
