"""The real Terraform 1.0.3 CLI with `backend "s3"` pointed at cairn's S3 endpoint (HTTPS, the
development CA), credentials from `cairn s3-credentials` as an AWS `credential_process`: init,
apply, `workspace new/select` under `workspace_key_prefix`, state pull; the state then moved to
`backend "remote"` with `terraform init -migrate-state`. One SQLite server for the module."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server
from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.terraform import TerraformCLI, hcl_string, remote_backend

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3_server(
    request: pytest.FixtureRequest, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CairnServer]:
    srv = start_server(request, tmp_path_factory.mktemp("cairn-s3"), "sqlite", admin_token)
    try:
        yield srv
    finally:
        srv.stop()


def _config(backend: str) -> str:
    return f"""\
terraform {{
  required_providers {{
    null = {{
      source  = "hashicorp/null"
      version = "2.1.2"
    }}
  }}
{backend}}}

variable "n" {{
  type    = number
  default = 3
}}

resource "null_resource" "item" {{
  count = var.n
}}

output "workspace" {{
  value = terraform.workspace
}}
"""


def _s3_backend(server: CairnServer, org: str) -> str:
    return (
        '  backend "s3" {\n'
        f"    bucket                      = {hcl_string(org)}\n"
        '    key                         = "network/terraform.tfstate"\n'
        '    region                      = "us-east-1"\n'
        f"    endpoint                    = {hcl_string(server.url + '/s3')}\n"
        '    profile                     = "cairn"\n'
        "    force_path_style            = true\n"
        "    skip_credentials_validation = true\n"
        "    skip_region_validation      = true\n"
        "    skip_metadata_api_check     = true\n"
        "  }\n"
    )


def test_s3_backend_lifecycle_and_migration_to_remote(
    s3_server: CairnServer, admin_token: str, tmp_path: Path, provider_mirror: Path
) -> None:
    assert s3_server.ca_bundle is not None
    cli = TerraformCLI.for_https(
        tmp_path,
        hostname=s3_server.hostname,
        token=admin_token,
        mirror=provider_mirror,
        ca_bundle=s3_server.ca_bundle,
    )
    cairn = Path(sys.executable).parent / "cairn"
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(
        "[profile cairn]\n"
        f"credential_process = {cairn} s3-credentials --format credential-process "
        f"--url {s3_server.url} --data-dir {s3_server.data_dir}\n"
    )
    env = {
        "AWS_CONFIG_FILE": str(aws_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_SDK_LOAD_CONFIG": "1",
        "CAIRN_TOKEN": admin_token,
        # The AWS SDK in Terraform builds its own root pool: name the CA for it too.
        "AWS_CA_BUNDLE": str(s3_server.ca_bundle),
    }
    with s3_server.client(admin_token) as api:
        org = tfe.create_organization(api, tfe.unique_name("s3"))
        project = cli.project("network", _config(_s3_backend(s3_server, org)))
        project.init(env=env)
        applied = project.apply(env=env)
        assert "Resources: 3 added" in applied.stdout
        ws = tfe.read_workspace(api, org, "network-terraform")
        version = tfe.current_state_version(api, ws["id"])
        state = json.loads(tfe.download_state(api, version))
        assert len(state["resources"][0]["instances"]) == 3
        assert ws["attributes"]["locked"] is False

        project.run("workspace", "new", "dev", env=env)
        project.apply("-var", "n=2", env=env)
        listed = project.run("workspace", "list", env=env).stdout
        assert "dev" in listed and "default" in listed
        dev = tfe.read_workspace(api, org, "env-dev-network-terraform")
        dev_state = json.loads(tfe.download_state(api, tfe.current_state_version(api, dev["id"])))
        assert dev_state["outputs"]["workspace"]["value"] == "dev"
        project.run("workspace", "select", "default", env=env)
        pulled = json.loads(project.run("state", "pull", env=env).stdout)
        assert pulled["lineage"] == state["lineage"]
        assert pulled["serial"] == state["serial"]

        # `workspace delete` (DeleteObject) deletes the emptied workspace.
        project.run("workspace", "select", "dev", env=env)
        project.run("destroy", "-auto-approve", env=env)
        project.run("workspace", "select", "default", env=env)
        project.run("workspace", "delete", "dev", env=env)
        gone = api.get(f"/api/v2/organizations/{org}/workspaces/env-dev-network-terraform")
        assert gone.status_code == 404
        # Move the default workspace's state to backend "remote" (a new workspace).
        project.write(_config(remote_backend(s3_server.hostname, org, name="network-remote")))
        project.run("init", "-migrate-state", "-force-copy", env=env)
        remote = tfe.read_workspace(api, org, "network-remote")
        moved = json.loads(tfe.download_state(api, tfe.current_state_version(api, remote["id"])))
        # Terraform 1.0.3 copies the resources (it gives the copy a lineage of its own).
        assert moved["resources"] == state["resources"]
        assert "No changes." in project.run("plan", env=env).stdout


def test_wrong_credentials_are_refused_by_terraform(
    s3_server: CairnServer, admin_token: str, tmp_path: Path, provider_mirror: Path
) -> None:
    assert s3_server.ca_bundle is not None
    cli = TerraformCLI.for_https(
        tmp_path,
        hostname=s3_server.hostname,
        token=admin_token,
        mirror=provider_mirror,
        ca_bundle=s3_server.ca_bundle,
    )
    with httpx.Client(base_url=s3_server.url, verify=s3_server.ssl_context()) as api:
        creds = api.post(
            "/api/cairn/v1/s3-credentials",
            json={},
            headers={"Authorization": f"Bearer {admin_token}"},
        ).json()
    backend = _s3_backend(s3_server, "some-org").replace(
        '    profile                     = "cairn"\n', ""
    )
    project = cli.project("wrong", _config(backend))
    env = {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"] + "x",
        "AWS_SESSION_TOKEN": creds["SessionToken"],
        "AWS_CA_BUNDLE": str(s3_server.ca_bundle),
    }
    failed = project.init(env=env, expect=1)
    assert "SignatureDoesNotMatch" in failed.stderr + failed.stdout
