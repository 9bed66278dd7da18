"""Terraform state files (format 4) and the JSON:API bodies that upload them.

`state_file` builds the bytes Terraform would write; `pad_to` grows a state to a given size
with one large resource attribute, so crash and limit tests get realistic large uploads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import httpx

from tests.support import api as tfe


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def new_lineage() -> str:
    return str(uuid.uuid4())


def null_resource(name: str, instances: int = 1, *, payload: str = "") -> dict[str, Any]:
    """A managed `null_resource` with `instances` instances (and an optional big attribute)."""
    return {
        "mode": "managed",
        "type": "null_resource",
        "name": name,
        "provider": 'provider["registry.terraform.io/hashicorp/null"]',
        "instances": [
            {
                "schema_version": 0,
                "attributes": {"id": f"{name}-{i}", "triggers": {"payload": payload}},
            }
            for i in range(instances)
        ],
    }


def state_file(
    serial: int,
    lineage: str,
    *,
    outputs: dict[str, Any] | None = None,
    resources: list[dict[str, Any]] | None = None,
    pad_to: int = 0,
) -> bytes:
    """A Terraform 1.0.3 state file; with `pad_to`, at least that many bytes long."""
    state: dict[str, Any] = {
        "version": 4,
        "terraform_version": "1.0.3",
        "serial": serial,
        "lineage": lineage,
        "outputs": outputs or {},
        "resources": list(resources or []),
    }
    raw = (json.dumps(state, indent=2) + "\n").encode()
    if pad_to > len(raw):
        state["resources"].append(null_resource("padding", payload="x" * (pad_to - len(raw))))
        raw = (json.dumps(state, indent=2) + "\n").encode()
    return raw


def version_attributes(
    raw: bytes,
    *,
    serial: int | None = None,
    lineage: str | None = None,
    md5: str | None = None,
    force: bool | None = None,
    inline: bool = True,
) -> dict[str, Any]:
    """The attributes go-tfe sends for a state version; serial/lineage default to the file's."""
    header = json.loads(raw)
    attrs: dict[str, Any] = {
        "serial": header["serial"] if serial is None else serial,
        "lineage": header["lineage"] if lineage is None else lineage,
        "md5": md5_hex(raw) if md5 is None else md5,
    }
    if force is not None:
        attrs["force"] = force
    if inline:
        attrs["state"] = base64.b64encode(raw).decode()
    return attrs


def version_body(raw: bytes, **kwargs: Any) -> dict[str, Any]:
    """`{"data": {"type": "state-versions", "attributes": ...}}` for `raw` (see above)."""
    return {"data": {"type": "state-versions", "attributes": version_attributes(raw, **kwargs)}}


def post_version(
    api: httpx.Client, workspace_id: str, body: dict[str, Any], *statuses: int
) -> httpx.Response:
    """POST /workspaces/<id>/state-versions; assert the status (default 201)."""
    response = api.post(
        f"/api/v2/workspaces/{workspace_id}/state-versions",
        json=body,
        headers={"Content-Type": tfe.JSONAPI},
    )
    return tfe.expect(response, *(statuses or (201,)))


def upload_inline(api: httpx.Client, workspace_id: str, raw: bytes) -> dict[str, Any]:
    """Create a finalized version holding `raw` (the workspace must be locked by `api`)."""
    data: dict[str, Any] = post_version(api, workspace_id, version_body(raw)).json()["data"]
    assert data["attributes"]["status"] == "finalized", data
    return data
