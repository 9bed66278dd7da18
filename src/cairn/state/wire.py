"""State-version and state-version-output documents."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cairn.authz.subject import USER_TYPE
from cairn.clock import iso8601
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.state.store import VersionView

UploadToken = Callable[[StateVersion, str], str | None]
"""``(version, kind)`` → the signed segment of its upload URL, or None (``HostedUploads.token``)."""


def state_version(v: VersionView, base_url: str, upload_token: UploadToken) -> dict[str, Any]:
    sv = v.sv
    finalized = sv.status == "finalized"
    api = f"{base_url}/api/v2/state-versions/{sv.id}"
    upload = upload_token(sv, "state")
    json_upload = upload_token(sv, "json")
    return {
        "id": sv.id,
        "type": "state-versions",
        "attributes": {
            "created-at": iso8601(sv.created_at),
            "serial": sv.serial,
            "lineage": sv.lineage,
            "md5": sv.md5,
            "size": sv.size,
            "status": sv.status,
            "state-version": sv.state_format or 4,
            "terraform-version": sv.terraform_version,
            "resources-processed": finalized and sv.resource_count >= 0,
            "billable-rum-count": None,
            "modules": None,
            "providers": None,
            "resources": None,
            "intermediate": False,
            "vcs-commit-sha": None,
            "vcs-commit-url": None,
            "hosted-state-download-url": f"{api}/download" if finalized else None,
            "hosted-json-state-download-url": f"{api}/json-download"
            if finalized and sv.json_sha256
            else None,
            "hosted-state-upload-url": f"{api}/hosted-upload/{upload}" if upload else None,
            "hosted-json-state-upload-url": f"{api}/hosted-upload/{json_upload}"
            if json_upload
            else None,
        },
        "relationships": {
            "run": {"data": {"id": sv.run_id, "type": "runs"} if sv.run_id else None},
            "created-by": {
                "data": {"id": sv.created_by_id, "type": USER_TYPE} if sv.created_by_id else None
            },
            "workspace": {"data": {"id": v.ws.id, "type": "workspaces"}},
            "outputs": {"data": [{"id": o.id, "type": "state-version-outputs"} for o in v.outputs]},
            "rollback-state-version": {
                "data": {"id": sv.rolled_back_from_id, "type": "state-versions"}
                if sv.rolled_back_from_id
                else None
            },
        },
        "links": {"self": f"/api/v2/state-versions/{sv.id}"},
    }


def output(o: StateVersionOutput, *, reveal: bool = False) -> dict[str, Any]:
    hidden = o.sensitive and not reveal
    return {
        "id": o.id,
        "type": "state-version-outputs",
        "attributes": {
            "name": o.name,
            "sensitive": o.sensitive,
            "type": _simple_type(o.type_json),
            "value": None if hidden else json.loads(o.value_json),
            "detailed-type": json.loads(o.type_json),
        },
        "links": {"self": f"/api/v2/state-version-outputs/{o.id}"},
    }


def workspace_output(o: StateVersionOutput) -> dict[str, Any]:
    """An output of a workspace's current state, as a workspace's ``outputs`` relationship
    includes it (HCP Terraform's ``workspace-outputs``: a sensitive value is null)."""
    return {
        "id": o.id,
        "type": "workspace-outputs",
        "attributes": {
            "name": o.name,
            "sensitive": o.sensitive,
            "output-type": _simple_type(o.type_json),
            "detailed-type": json.loads(o.type_json),
            "value": None if o.sensitive else json.loads(o.value_json),
        },
        "links": {"self": f"/api/v2/workspace-outputs/{o.id}"},
    }


def _simple_type(type_json: str) -> str:
    t = json.loads(type_json)
    if isinstance(t, str):
        return t
    if isinstance(t, list) and t:
        return {
            "list": "array",
            "tuple": "array",
            "set": "array",
            "map": "object",
            "object": "object",
        }.get(str(t[0]), str(t[0]))
    return "string"
