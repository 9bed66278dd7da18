"""Dynamic provider credentials in a real remote apply (issue 10, item 5): Terraform 1.0.3 in
remote mode against a real cairn whose built-in worker runs the apply. A `local-exec`
provisioner hands back what the run saw: the generic token (verified through cairn's discovery
and JWKS: `sub` of the apply phase, the run's id), the AWS shared config file (mode 0600, and
gone once the phase ended), and the multi-configuration variable. No token value appears in the
CLI output or in the stored logs. A workspace that asks for AWS credentials without a role fails
its plan before Terraform starts, and the log's last line names the variable to set."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_remote_runs import (  # noqa: F401 - run_server, site, streams: fixtures
    Site,
    Stream,
    finished,
    run_server,
    site,
    streams,
)
from tests.support import api as tfe
from tests.support.identity import verifier_for
from tests.support.terraform import hcl_string

pytestmark = pytest.mark.e2e

ROLE_ARN = "arn:aws:iam::123456789012:role/cairn-e2e"


def set_env(at: Site, ws_id: str, variables: dict[str, str]) -> None:
    for key, value in variables.items():
        attributes = {"key": key, "value": value, "category": "env"}
        tfe.expect(
            at.api.post(
                f"/api/v2/workspaces/{ws_id}/vars",
                json={"data": {"type": "vars", "attributes": attributes}},
                headers={"Content-Type": tfe.JSONAPI},
            ),
            201,
        )


def probe(out: Path) -> str:
    command = (
        f'printf %s "$TFC_WORKLOAD_IDENTITY_TOKEN" > {out}/token; '
        f'stat -c %a "$AWS_CONFIG_FILE" > {out}/mode; '
        f'printf %s "$AWS_CONFIG_FILE" > {out}/config_path; '
        f'cat "$AWS_CONFIG_FILE" > {out}/config; '
        'echo "probe token=$TFC_WORKLOAD_IDENTITY_TOKEN"'
    )
    return f"""\
variable "tfc_aws_dynamic_credentials" {{
  type = object({{
    default = object({{ shared_config_file = string }})
    aliases = map(object({{ shared_config_file = string }}))
  }})
}}

resource "null_resource" "probe" {{
  provisioner "local-exec" {{
    command = {hcl_string(command)}
  }}
}}

output "shared_config_file" {{
  value = var.tfc_aws_dynamic_credentials.default.shared_config_file
}}
"""


def test_a_remote_apply_sees_its_credentials_and_they_leave_no_trace(
    site: Site,  # noqa: F811
    streams: Callable[[subprocess.Popen[str]], Stream],  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "probe"
    out.mkdir()
    ws_id = site.workspace("creds")
    set_env(
        site,
        ws_id,
        {
            "TFC_WORKLOAD_IDENTITY_AUDIENCE": "cairn.e2e",
            "TFC_AWS_PROVIDER_AUTH": "true",
            "TFC_AWS_RUN_ROLE_ARN": ROLE_ARN,
        },
    )
    project = site.project("creds", "creds", probe(out))
    apply = streams(project.popen("apply", "-auto-approve"))
    text = finished(apply)
    run_id = apply.run_id()

    token = (out / "token").read_text()
    claims = verifier_for(site.server).verify(token, "cairn.e2e")
    assert claims["sub"].endswith(":workspace:creds:run_phase:apply")
    assert claims["terraform_run_phase"] == "apply"
    assert claims["terraform_run_id"] == run_id
    assert (out / "mode").read_text().strip() == "600"
    config_path = Path((out / "config_path").read_text())
    config = (out / "config").read_text()
    assert f"role_arn = {ROLE_ARN}\n" in config and "web_identity_token_file = " in config
    assert config_path.parent.name == f"cairn-{run_id}-credentials"
    assert not config_path.exists() and not config_path.parent.exists()
    # The saved plan carries the plan phase's variable values into the apply: the path the
    # plan was given is the one the apply's files were written at.
    outputs = site.state(ws_id)["outputs"]
    assert outputs["shared_config_file"]["value"] == str(config_path)

    logs = site.log(run_id, "plan") + site.log(run_id, "apply")
    assert "probe token=***" in logs
    assert token not in logs and token not in text


def test_a_missing_role_fails_the_plan_before_terraform_starts(
    site: Site,  # noqa: F811
    streams: Callable[[subprocess.Popen[str]], Stream],  # noqa: F811
) -> None:
    ws_id = site.workspace("norole")
    set_env(site, ws_id, {"TFC_AWS_PROVIDER_AUTH": "true"})
    project = site.project("norole", "norole", 'output "x" {\n  value = 1\n}\n')
    plan = streams(project.popen("plan"))
    finished(plan, expect=1)
    run_id = plan.run_id()
    run = site.run(run_id)
    assert run["attributes"]["status"] == "errored"
    log = site.log(run_id, "plan")
    last = log.strip("\x02\x03\n").splitlines()[-1]  # the stored log is framed by STX/ETX
    assert last.startswith("Error: ") and "TFC_AWS_RUN_ROLE_ARN" in last, log
    assert "Terraform has been successfully initialized" not in log
    assert json.dumps(run["attributes"].get("has-changes")) in ("false", "null")
