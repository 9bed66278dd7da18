"""pytfe against a real `cairn serve`: the state leniencies HCP Terraform has (issue 8, item 2).
A format 3 state (Terraform 0.11) created inline without `lineage` (pytfe makes it optional):
stored byte for byte, the lineage read from the state, the root module's outputs listed. And
the upload URL rules through pytfe's own upload: a second upload to a used URL is refused."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import pytest
from pytfe import TFEClient
from pytfe.models import (
    ExecutionMode,
    StateVersionCreateOptions,
    WorkspaceCreateOptions,
    WorkspaceLockOptions,
)

from tests.support import api as tfe_api
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e


def v3_state(lineage: str) -> bytes:
    state: dict[str, Any] = {
        "version": 3,
        "terraform_version": "0.11.14",
        "serial": 4,
        "lineage": lineage,
        "modules": [
            {
                "path": ["root"],
                "outputs": {
                    "endpoint": {"sensitive": False, "type": "string", "value": "https://x"},
                    "token": {"sensitive": True, "type": "string", "value": "t0k3n"},
                },
                "resources": {"null_resource.a": {"type": "null_resource"}},
                "depends_on": [],
            },
            {
                "path": ["root", "net"],
                "outputs": {"cidr": {"sensitive": False, "type": "string", "value": "10/8"}},
                "resources": {},
                "depends_on": [],
            },
        ],
    }
    return (json.dumps(state, indent=4) + "\n").encode()


def locked_workspace(tfe: TFEClient, org: str) -> str:
    ws = tfe.workspaces.create(
        org,
        WorkspaceCreateOptions(name=tfe_api.unique_name("v3"), execution_mode=ExecutionMode.LOCAL),
    )
    tfe.workspaces.lock(ws.id, WorkspaceLockOptions(reason="pytfe test"))
    return ws.id


def test_a_format_3_state_without_lineage(
    tfe: TFEClient, org: str, server: CairnServer, admin_token: str
) -> None:
    ws_id = locked_workspace(tfe, org)
    lineage = str(uuid.uuid4())
    raw = v3_state(lineage)
    options = StateVersionCreateOptions(
        serial=4, md5=hashlib.md5(raw).hexdigest(), state=base64.b64encode(raw).decode()
    )
    created = tfe.state_versions.create(ws_id, options)
    assert created.serial == 4
    assert created.status is not None and created.status.value == "finalized"
    with server.client(admin_token) as api:  # pytfe's model does not carry the lineage
        shown = tfe_api.document(api.get(f"/api/v2/state-versions/{created.id}"), 200)
    assert shown["data"]["attributes"]["lineage"] == lineage
    assert shown["data"]["attributes"]["state-version"] == 3
    assert tfe.state_versions.download(created.id) == raw
    outputs = {o.name: o for o in tfe.state_versions.list_outputs(created.id)}
    assert set(outputs) == {"endpoint", "token"}
    assert outputs["endpoint"].value == "https://x"
    assert outputs["token"].sensitive is True


def test_an_upload_url_works_once(tfe: TFEClient, org: str, server: CairnServer) -> None:
    ws_id = locked_workspace(tfe, org)
    lineage = str(uuid.uuid4())
    raw = v3_state(lineage)
    options = StateVersionCreateOptions(serial=4, md5=hashlib.md5(raw).hexdigest(), lineage=lineage)
    pending = tfe.state_versions.create(ws_id, options)
    url = pending.hosted_state_upload_url
    assert url
    with server.client() as anonymous:  # the URL authorises itself
        refused = anonymous.put(url, content=raw + b" ")  # not the declared MD5
        assert refused.status_code == 422, refused.text
        again = anonymous.put(url, content=raw)
        assert again.status_code == 409, again.text
    assert "create a new state version" in again.json()["errors"][0]["detail"]
    uploaded = tfe.state_versions.upload(ws_id, raw_state=raw, options=options)
    assert tfe.state_versions.download(uploaded.id) == raw
