"""The real Terraform 1.0.3 CLI with `backend "http"` against a real cairn server (HTTPS,
cairn's development CA), on SQLite and PostgreSQL (issue 12, Deliver 4): init, apply with the
lock held (a second apply at the same moment is refused with the holder's lock info),
force-unlock of a lock left behind, the history through the TFE API, and the same state seen
through `backend "remote"`.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.terraform import TerraformCLI, hcl_string, remote_backend

pytestmark = pytest.mark.e2e


def config(backend_block: str) -> str:
    return f"""\
terraform {{
  required_providers {{
    null = {{
      source  = "hashicorp/null"
      version = "2.1.2"
    }}
  }}

{backend_block}}}

variable "instances" {{
  type    = number
  default = 3
}}

resource "null_resource" "item" {{
  count    = var.instances
  triggers = {{ index = tostring(count.index) }}
}}

output "instances" {{
  value = length(null_resource.item)
}}
"""


def http_backend(address: str, token: str) -> str:
    """The backend block the README documents: LOCK/UNLOCK replaced by POST/DELETE on
    `/lock`, the token as the password."""
    return (
        '  backend "http" {\n'
        f"    address        = {hcl_string(address)}\n"
        f"    lock_address   = {hcl_string(address + '/lock')}\n"
        f"    unlock_address = {hcl_string(address + '/lock')}\n"
        '    lock_method    = "POST"\n'
        '    unlock_method  = "DELETE"\n'
        '    username       = "terraform"\n'
        f"    password       = {hcl_string(token)}\n"
        "  }\n"
    )


def locked(api: httpx.Client, org: str, ws: str) -> bool:
    return bool(tfe.read_workspace(api, org, ws)["attributes"]["locked"])


def writer_token(api: httpx.Client, org: str, ws: str) -> str:
    """A second person with the workspace's write role (not allowed to force-unlock)."""
    name = tfe.unique_name("writer")
    made = api.post("/api/cairn/v1/admin/users", json={"username": name, "email": "w@e.test"})
    user_id = tfe.document(made, 201)["data"]["id"]
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": "e2e"}}}
    created = api.post(
        f"/api/v2/users/{user_id}/authentication-tokens",
        json=body,
        headers={"Content-Type": "application/vnd.api+json"},
    )
    token: str = tfe.document(created, 201)["data"]["attributes"]["token"]
    grant = {"role": "write", "user": name, "workspaces": ws}
    tfe.document(api.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)
    return token


def wait_until(check: Any, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"terraform exited {proc.returncode} before {what}:\n{out}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_http_backend_with_terraform(
    server: CairnServer, admin_token: str, tmp_path: Path, provider_mirror: Path
) -> None:
    assert server.ca_bundle is not None
    cli = TerraformCLI.for_https(
        tmp_path,
        hostname=server.hostname,
        token=admin_token,
        mirror=provider_mirror,
        ca_bundle=server.ca_bundle,
    )
    with server.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("http"))
        ws = tfe.unique_name("app")
        ws_id = tfe.create_workspace(api, org, ws)
        address = f"{server.url}/api/cairn/v1/http-state/{org}/{ws}"
        project = cli.project("http", config(http_backend(address, admin_token)))

        project.init()
        applied = project.apply()
        assert "Resources: 3 added" in applied.stdout
        assert not locked(api, org, ws)

        # An apply waiting for its approval holds the lock: a second apply is refused with
        # the holder's lock info, and the TFE API shows the workspace locked.
        first = project.popen("apply", "-var", "instances=4", input_enabled=True)
        try:
            wait_until(lambda: locked(api, org, ws), "the first apply locks", first)
            second = project.run("apply", "-auto-approve", expect=1)
            assert "Error acquiring the state lock" in second.stderr
            assert "HTTP remote state already locked" in second.stderr
            out, _ = first.communicate("yes\n", timeout=120)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 0, out
        assert "Resources: 1 added" in out
        assert not locked(api, org, ws)

        # A lock left behind by another person's crashed Terraform: apply is refused with its
        # ID; the admin's force-unlock (UNLOCK, no body, in 1.0.3) releases it.
        stale = str(uuid.uuid4())
        info = {"ID": stale, "Operation": "OperationTypeApply", "Who": "bob@crashed"}
        taken = httpx.post(
            address + "/lock",
            json=info,
            auth=("bob", writer_token(api, org, ws)),
            verify=ssl.create_default_context(cafile=str(server.ca_bundle)),
        )
        assert taken.status_code == 200, taken.text
        refused = project.run("apply", "-auto-approve", expect=1)
        # Terraform 1.0.3 prints the holder's lock ID from the 423 body.
        assert f"HTTP remote state already locked:\nID={stale}" in refused.stderr
        project.run("force-unlock", "-force", stale)
        assert not locked(api, org, ws)
        trail = tfe.document(api.get("/api/cairn/v1/audit-events?page[size]=100"), 200)
        forced = [e for e in trail["data"] if e["attributes"]["action"] == "workspace.force_unlock"]
        assert forced, "the force-unlock was not audited"

        # The history through the TFE API: every write is a version, newest first.
        history = tfe.document(api.get(f"/api/v2/workspaces/{ws_id}/state-versions"), 200)
        serials = [v["attributes"]["serial"] for v in history["data"]]
        assert len(serials) >= 2 and serials == sorted(serials, reverse=True)

    # The same state through `backend "remote"`, and through an http backend block that
    # takes its credentials from the environment (TF_HTTP_USERNAME / TF_HTTP_PASSWORD).
    pulled = project.state_pull()
    bare = f'  backend "http" {{\n    address = {hcl_string(address)}\n  }}\n'
    from_env = cli.project("from-env", config(bare))
    env = {"TF_HTTP_USERNAME": "gitlab-ci-token", "TF_HTTP_PASSWORD": admin_token}
    from_env.run("init", env=env)
    assert json.loads(from_env.run("state", "pull", env=env).stdout) == pulled
    remote = cli.project("remote", config(remote_backend(cli.hostname, org, name=ws)))
    remote.init()
    through_remote = remote.state_pull()
    assert through_remote["serial"] == pulled["serial"] == serials[0]
    assert through_remote["lineage"] == pulled["lineage"]
    assert json.dumps(through_remote["resources"]) == json.dumps(pulled["resources"])
    assert len(pulled["resources"][0]["instances"]) == 4
