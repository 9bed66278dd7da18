"""The real Terraform 1.0.3 CLI against a real cairn server, `backend "remote"`, local execution.

Each flow runs on both metadata backends (SQLite, PostgreSQL). The main lifecycle also runs over
both transports: HTTPS with real service discovery and cairn's development CA (hostname
`localhost:<port>`), and plain HTTP with discovery pre-seeded by a CLI `host` block
(reference §1.1, §10). Every test works in an organization of its own, so one server per
backend serves the whole module.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.terraform import TerraformCLI, TerraformProject, remote_backend

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Target:
    """A server, an admin API client for it, a Terraform configured for it, and an org."""

    server: CairnServer
    api: httpx.Client
    cli: TerraformCLI
    org: str

    def project(
        self,
        name: str,
        *,
        workspace: str | None = None,
        prefix: str | None = None,
    ) -> TerraformProject:
        backend = remote_backend(self.cli.hostname, self.org, name=workspace, prefix=prefix)
        return self.cli.project(name, null_resources_config(backend))


def null_resources_config(backend_block: str) -> str:
    """`var.instances` null_resources (50 by default) whose triggers change with `generation`."""
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
  default = 50
}}

variable "generation" {{
  type    = string
  default = "1"
}}

resource "null_resource" "item" {{
  count = var.instances

  triggers = {{
    index      = tostring(count.index)
    generation = var.generation
  }}
}}

output "instances" {{
  value = length(null_resource.item)
}}

output "secret" {{
  value     = "hunter2"
  sensitive = true
}}
"""


def make_target(server: CairnServer, token: str, root: Path, mirror: Path) -> Iterator[Target]:
    if server.plain_http:
        cli = TerraformCLI.for_plain_http(root, api_url=server.api_url, token=token, mirror=mirror)
    else:
        assert server.ca_bundle is not None
        cli = TerraformCLI.for_https(
            root, hostname=server.hostname, token=token, mirror=mirror, ca_bundle=server.ca_bundle
        )
    with server.client(token) as api:
        org = tfe.create_organization(api, tfe.unique_name("tf"))
        yield Target(server, api, cli, org)


@pytest.fixture
def https_target(
    server: CairnServer, admin_token: str, tmp_path: Path, provider_mirror: Path
) -> Iterator[Target]:
    """Terraform talking to the HTTPS server through real discovery."""
    yield from make_target(server, admin_token, tmp_path, provider_mirror)


@pytest.fixture(params=["https", "http"])
def target(
    request: pytest.FixtureRequest,
    backend: str,
    admin_token: str,
    tmp_path: Path,
    provider_mirror: Path,
) -> Iterator[Target]:
    """Terraform over HTTPS (real discovery) or plain HTTP (CLI `host` block).

    `backend` is requested only so the test is parametrised over it; the server fixture is
    looked up by transport, and both server fixtures follow the module's `backend`.
    """
    fixture = "server" if request.param == "https" else "plain_server"
    srv: CairnServer = request.getfixturevalue(fixture)
    yield from make_target(srv, admin_token, tmp_path, provider_mirror)


def workspace_id(target: Target, name: str) -> str:
    ws_id: str = tfe.read_workspace(target.api, target.org, name)["id"]
    return ws_id


def current_state(target: Target, ws_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The current state version's document and its downloaded state file."""
    version = tfe.current_state_version(target.api, ws_id)
    return version, json.loads(tfe.download_state(target.api, version))


def assert_unlocked(target: Target, name: str) -> None:
    attributes = tfe.read_workspace(target.api, target.org, name)["attributes"]
    assert attributes["locked"] is False, f"workspace {name} was left locked: {attributes}"


def write_state(project: TerraformProject, filename: str, state: dict[str, Any]) -> str:
    (project.path / filename).write_text(json.dumps(state, indent=2), encoding="utf-8")
    return filename


def test_apply_plan_and_state_roundtrip(target: Target) -> None:
    """init creates the workspace; 50 resources applied, planned clean, changed, listed, pulled."""
    ws = tfe.unique_name("app")
    project = target.project("app", workspace=ws)

    project.init()
    workspace = tfe.read_workspace(target.api, target.org, ws)
    assert workspace["attributes"]["terraform-version"] in ("1.0.3", "latest")
    ws_id = workspace["id"]

    applied = project.apply()
    assert "Apply complete! Resources: 50 added, 0 changed, 0 destroyed." in applied.stdout
    version, state = current_state(target, ws_id)
    assert len(state["resources"]) == 1
    assert len(state["resources"][0]["instances"]) == 50
    assert version["attributes"]["serial"] == state["serial"]
    assert version["attributes"]["lineage"] == state["lineage"]
    assert_unlocked(target, ws)

    # Nothing to do: -detailed-exitcode 0 (2 would mean "changes present").
    plan = project.run("plan", "-detailed-exitcode")
    assert "No changes." in plan.stdout
    assert_unlocked(target, ws)

    project.run("plan", "-detailed-exitcode", "-var", "instances=55", expect=2)
    changed = project.apply("-var", "instances=55")
    assert "Apply complete! Resources: 5 added, 0 changed, 0 destroyed." in changed.stdout
    new_version, new_state = current_state(target, ws_id)
    assert new_version["id"] != version["id"]
    assert new_version["attributes"]["serial"] > version["attributes"]["serial"]
    assert new_state["lineage"] == state["lineage"]
    assert len(new_state["resources"][0]["instances"]) == 55

    listed = project.state_list()
    assert len(listed) == 55
    assert set(listed) == {f"null_resource.item[{i}]" for i in range(55)}

    pulled = project.state_pull()
    assert pulled["serial"] == new_version["attributes"]["serial"]
    assert pulled["lineage"] == state["lineage"]
    assert pulled["outputs"]["instances"]["value"] == 55

    outputs = json.loads(project.run("output", "-json").stdout)
    assert outputs["instances"]["value"] == 55
    assert outputs["secret"]["sensitive"] is True
    assert_unlocked(target, ws)


def test_state_push_bumps_serial_and_guards_lineage(https_target: Target) -> None:
    """push of a modified pulled state; lineage mismatch refused unless -force; no going back."""
    target = https_target
    ws = tfe.unique_name("push")
    project = target.project("push", workspace=ws)
    project.init()
    project.apply("-var", "instances=3")
    ws_id = workspace_id(target, ws)

    pulled = project.state_pull()
    serial = pulled["serial"]
    # A changed state needs a higher serial (same serial + other content is refused client-side).
    modified = json.loads(json.dumps(pulled))
    modified["serial"] = serial + 1
    modified["outputs"]["pushed"] = {"value": "by state push", "type": "string"}
    project.run("state", "push", write_state(project, "modified.tfstate", modified))
    version, state = current_state(target, ws_id)
    # Terraform bumps the serial once more because the content differs from what it read.
    assert version["attributes"]["serial"] == modified["serial"] + 1
    assert state["serial"] == modified["serial"] + 1
    assert state["lineage"] == pulled["lineage"]
    assert state["outputs"]["pushed"]["value"] == "by state push"
    assert_unlocked(target, ws)

    # Another lineage: Terraform refuses client-side without -force.
    foreign = json.loads(json.dumps(state))
    foreign["lineage"] = str(uuid.uuid4())
    foreign["serial"] = serial + 10
    foreign_file = write_state(project, "foreign.tfstate", foreign)
    refused = project.run("state", "push", foreign_file, expect=1)
    assert "lineage" in refused.stderr
    unchanged, _ = current_state(target, ws_id)
    assert unchanged["id"] == version["id"]
    assert_unlocked(target, ws)

    project.run("state", "push", "-force", foreign_file)
    forced, forced_state = current_state(target, ws_id)
    assert forced["attributes"]["lineage"] == foreign["lineage"]
    assert forced_state["lineage"] == foreign["lineage"]
    # Terraform uploads the file's serial + 1 because the content differs from what it read.
    assert forced["attributes"]["serial"] == foreign["serial"] + 1
    assert forced["attributes"]["serial"] > version["attributes"]["serial"]
    assert_unlocked(target, ws)

    # Even with -force, the server never lets the serial go backwards. A failed upload leaves
    # the workspace locked (the CLI keeps the lock until the state is fixed, reference §3.4).
    stale = json.loads(json.dumps(forced_state))
    stale["serial"] = 1
    backwards = project.run(
        "state", "push", "-force", write_state(project, "stale.tfstate", stale), expect=1
    )
    assert "Error uploading state: Conflict" in backwards.stderr  # refused by the server
    after, _ = current_state(target, ws_id)
    assert after["id"] == forced["id"]
    assert after["attributes"]["serial"] == forced["attributes"]["serial"]
    assert tfe.read_workspace(target.api, target.org, ws)["attributes"]["locked"] is True
    project.run("force-unlock", "-force", f"{target.org}/{ws}")
    assert_unlocked(target, ws)


def test_prefix_workspaces_new_list_select_delete(https_target: Target) -> None:
    """Prefix mode: the first prefixed workspace comes from the API, the rest from the CLI."""
    target = https_target
    first_id = tfe.create_workspace(target.api, target.org, "svc-first")
    tfe.create_workspace(target.api, target.org, "unrelated")  # no prefix: never listed

    project = target.project("prefixed", prefix="svc-")
    # No CLI workspace is selected yet and `default` is not allowed in prefix mode.
    project.init(env={"TF_WORKSPACE": "first"})

    listed = project.run("workspace", "list").stdout
    assert workspace_names(listed) == ["first"]

    created = project.run("workspace", "new", "dev")
    assert 'Created and switched to workspace "dev"!' in created.stdout
    dev = tfe.read_workspace(target.api, target.org, "svc-dev")
    assert dev["attributes"]["name"] == "svc-dev"
    listed = project.run("workspace", "list").stdout
    assert workspace_names(listed) == ["dev", "first"]
    assert current_workspace(listed) == "dev"

    project.apply("-var", "instances=2")
    _, dev_state = current_state(target, dev["id"])
    assert len(dev_state["resources"][0]["instances"]) == 2

    project.run("workspace", "select", "first")
    assert current_workspace(project.run("workspace", "list").stdout) == "first"
    project.apply("-var", "instances=1")
    _, first_state = current_state(target, first_id)
    assert len(first_state["resources"][0]["instances"]) == 1

    # dev holds resources, so Terraform wants -force before deleting it.
    project.run("workspace", "delete", "dev", expect=1)
    project.run("workspace", "delete", "-force", "dev")
    gone = target.api.get(f"/api/v2/organizations/{target.org}/workspaces/svc-dev")
    tfe.expect(gone, 404)
    listed = project.run("workspace", "list").stdout
    assert workspace_names(listed) == ["first"]
    assert current_workspace(listed) == "first"


def workspace_names(listing: str) -> list[str]:
    """Names in `terraform workspace list` output (the current one is starred)."""
    return sorted(line.strip(" *") for line in listing.splitlines() if line.strip())


def current_workspace(listing: str) -> str | None:
    for line in listing.splitlines():
        if line.startswith("* "):
            return line[2:].strip()
    return None


def test_apply_refused_while_locked_then_force_unlock(https_target: Target) -> None:
    """A workspace locked through the API makes apply fail; force-unlock -force frees it."""
    target = https_target
    ws = tfe.unique_name("locked")
    project = target.project("locked", workspace=ws)
    project.init()
    ws_id = workspace_id(target, ws)

    tfe.workspace_action(target.api, ws_id, "lock")
    refused = project.apply("-var", "instances=2", expect=1)
    assert "workspace already locked" in refused.stderr
    assert f"{target.org}/{ws}" in refused.stderr
    tfe.expect(target.api.get(f"/api/v2/workspaces/{ws_id}/current-state-version"), 404)
    assert tfe.read_workspace(target.api, target.org, ws)["attributes"]["locked"] is True

    unlocked = project.run("force-unlock", "-force", f"{target.org}/{ws}")
    assert "successfully unlocked" in unlocked.stdout
    assert_unlocked(target, ws)
    # Nothing to unlock any more: the server answers 409, the CLI reports it.
    again = project.run("force-unlock", "-force", f"{target.org}/{ws}", expect=1)
    assert "already unlocked" in again.stderr

    applied = project.apply("-var", "instances=2")
    assert "Resources: 2 added" in applied.stdout
    assert_unlocked(target, ws)
