"""Dynamic provider credentials in the executor: the server's answer checked, the files a run
sees (golden files for the AWS shared config, the GCP external-account JSON, the Azure files and
the multi-configuration variables), 0600 files removed after the phase whatever its outcome,
Vault login/renew/revoke against a scripted Vault, and a whole job: tokens masked in the log, a
422 failing the phase before Terraform starts."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import stat
import tarfile
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.executor import credentials
from cairn.executor.credentials import CredentialsError, Grant, Injection
from cairn.executor.job import ExecutorSettings, JobRun
from cairn.executor.protocol import AgentClient, Job

GOLDEN = Path(__file__).parent / "golden"
PROVIDER = "projects/123456/locations/global/workloadIdentityPools/cairn/providers/cairn-prov"


def jwt_like() -> str:
    """A compact JWT shape with a unique signature (the executor never parses tokens)."""
    return f"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ4In0.{secrets.token_urlsafe(32)}"


def aws(
    tag: str | None = None, role: str = "arn:aws:iam::123456789012:role/plan"
) -> dict[str, Any]:
    return {
        "kind": "aws",
        "tag": tag,
        "audience": "aws.workload.identity",
        "token": jwt_like(),
        "role_arn": role,
    }


def gcp(tag: str | None = None, principal: str = "service_account") -> dict[str, Any]:
    return {
        "kind": "gcp",
        "tag": tag,
        "audience": f"//iam.googleapis.com/{PROVIDER}",
        "token": jwt_like(),
        "principal_type": principal,
        "workload_provider_name": PROVIDER,
        "service_account_email": "tf@proj.iam.gserviceaccount.com"
        if principal == "service_account"
        else None,
    }


def azure(tag: str | None = None) -> dict[str, Any]:
    return {
        "kind": "azure",
        "tag": tag,
        "audience": "api://AzureADTokenExchange",
        "token": jwt_like(),
        "client_id": "00000000-1111-2222-3333-444444444444",
    }


def generic(tag: str | None = None) -> dict[str, Any]:
    return {"kind": "generic", "tag": tag, "audience": "example.com", "token": jwt_like()}


def vault(tag: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "vault",
        "tag": tag,
        "audience": "vault.workload.identity",
        "token": jwt_like(),
        "address": "https://vault.test:8200",
        "namespace": None,
        "auth_path": "jwt",
        "role": "tfc",
        "encoded_cacert": None,
        "client_timeout_s": 5,
        **extra,
    }


def grant(*configs: dict[str, Any]) -> Grant:
    return Grant.from_json({"expires_at": "2026-12-01T08:00:00Z", "configs": list(configs)})


def workdir(tmp_path: Path, declare: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "config"
    path.mkdir(exist_ok=True)
    for cloud in declare:
        (path / f"{cloud}.tf").write_text(
            f'variable "tfc_{cloud}_dynamic_credentials" {{\n  type = any\n}}\n'
        )
    return path


def normalised(text: str, tmp_path: Path) -> str:
    return text.replace(str(tmp_path), "$JOB")


def golden(name: str, text: str) -> None:
    """Compare with ``golden/<name>``; CAIRN_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("CAIRN_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


# -- the answer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**aws(), "tag": "bad-tag"}, "tag 'bad-tag'"),
        ({**aws(), "tag": "TYPE"}, "tag 'TYPE'"),
        ({**aws(), "role_arn": ""}, "role_arn"),
        ({**gcp(), "workload_provider_name": "projects/1/providers/x"}, "workload_provider_name"),
        ({**gcp(), "service_account_email": None}, "service_account_email"),
        ({**gcp(), "principal_type": "user"}, "principal_type"),
        ({**azure(), "client_id": None}, "client_id"),
        ({**vault(), "address": "vault.test"}, "address"),
        ({**vault(), "client_timeout_s": 0}, "client_timeout_s"),
        ({**aws(), "kind": "oracle"}, "unknown kind"),
        ({**aws(), "token": "not-a-jwt"}, "compact JWT"),
        ({**aws(), "token": "a.b." + "c" * 20_000}, "compact JWT"),
        ({**aws(), "role_arn": "arn:aws:iam::1:role/x\nweb_identity_token_file = /etc"}, "control"),
    ],
)
def test_a_malformed_answer_is_refused_without_its_token(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(CredentialsError) as caught:
        grant(config)
    assert message in str(caught.value)
    assert config["token"] not in str(caught.value)


def test_the_answer_limits_and_duplicates() -> None:
    with pytest.raises(CredentialsError, match="more than 64"):
        grant(*[generic(f"T{i}") for i in range(65)])
    with pytest.raises(CredentialsError, match=r"aws \(tag PROD\) twice"):
        grant(aws("PROD"), aws("PROD"))
    with pytest.raises(CredentialsError, match="not an object"):
        Grant.from_json([])
    assert grant().configs == ()


def test_tokens_stay_out_of_reprs() -> None:
    g = grant(aws(), vault())
    for value in (repr(g), repr(g.configs[0]), repr(g.configs[1])):
        assert all(token not in value for token in g.secrets)


# -- golden files ------------------------------------------------------------------------------


def test_aws_files_and_environment(tmp_path: Path) -> None:
    g = grant(aws())
    with Injection(g, tmp_path / "credentials", workdir=workdir(tmp_path)) as inj:
        shared = Path(inj.env["AWS_CONFIG_FILE"])
        golden("aws_shared_config.ini", normalised(shared.read_text(), tmp_path))
        token_file = Path(inj.env["AWS_WEB_IDENTITY_TOKEN_FILE"])
        assert token_file.read_text() == g.configs[0].token
        assert inj.env["AWS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/plan"
        assert inj.env["AWS_SDK_LOAD_CONFIG"] == "1"
        for path in (shared, token_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "credentials").stat().st_mode) == 0o700
        assert inj.tfvars_file is None  # the configuration declares no such variable
    assert not (tmp_path / "credentials").exists()


@pytest.mark.parametrize("principal", ["service_account", "workload_pool"])
def test_gcp_external_account_json(tmp_path: Path, principal: str) -> None:
    g = grant(gcp(principal=principal))
    with Injection(g, tmp_path / "credentials", workdir=workdir(tmp_path)) as inj:
        path = Path(inj.env["GOOGLE_APPLICATION_CREDENTIALS"])
        golden(f"gcp_{principal}.json", normalised(path.read_text(), tmp_path))
        doc = json.loads(path.read_text())
        assert Path(doc["credential_source"]["file"]).read_text() == g.configs[0].token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_azure_files_and_environment(tmp_path: Path) -> None:
    g = grant(azure(), azure("PROD"))
    with Injection(g, tmp_path / "credentials", workdir=workdir(tmp_path, ("azure",))) as inj:
        assert inj.tfvars_file is not None
        files = {p.name: p.read_text() for p in sorted((tmp_path / "credentials").iterdir())}
        tokens = {c.tag: c.token for c in g.configs}
        files = {
            k: v.replace(tokens[None], "<token default>").replace(tokens["PROD"], "<token PROD>")
            for k, v in files.items()
        }
        env = {k: normalised(v, tmp_path) for k, v in inj.env.items()}
        text = json.dumps(
            {
                "env": env,
                "files": files,
                "tfvars": json.loads(normalised(inj.tfvars_file.read_text(), tmp_path)),
            },
            indent=2,
            sort_keys=True,
        )
        golden("azure.json", text + "\n")


def test_every_cloud_in_the_multi_configuration_variables(tmp_path: Path) -> None:
    configs = [aws(), aws("PROD"), gcp("DATA"), azure(), generic(), generic("TAILSCALE")]
    g = grant(*configs)
    wd = workdir(tmp_path, ("aws", "gcp", "azure"))
    with Injection(g, tmp_path / "credentials", workdir=wd) as inj:
        assert inj.tfvars_file == wd / credentials.TFVARS_FILE
        assert stat.S_IMODE(inj.tfvars_file.stat().st_mode) == 0o600
        golden("multi_config.auto.tfvars.json", normalised(inj.tfvars_file.read_text(), tmp_path))
        assert inj.env["TFC_WORKLOAD_IDENTITY_TOKEN"] == configs[4]["token"]
        assert inj.env["TFC_WORKLOAD_IDENTITY_TOKEN_TAILSCALE"] == configs[5]["token"]
        # tagged configurations set no provider environment: only the variables reach them
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in inj.env
        assert inj.env["AWS_ROLE_ARN"] == configs[0]["role_arn"]
    assert not (wd / credentials.TFVARS_FILE).exists()
    assert not (tmp_path / "credentials").exists()


def test_generic_only_writes_nothing(tmp_path: Path) -> None:
    g = grant(generic())
    with Injection(g, tmp_path / "credentials", workdir=workdir(tmp_path, ("aws",))) as inj:
        assert list(inj.env) == ["TFC_WORKLOAD_IDENTITY_TOKEN"]
        assert inj.files == [] and inj.tfvars_file is None


def test_no_configs_no_directory(tmp_path: Path) -> None:
    with Injection(grant(), tmp_path / "credentials", workdir=workdir(tmp_path)) as inj:
        assert inj.env == {}
    assert not (tmp_path / "credentials").exists()


def test_declared_variables_native_and_json(tmp_path: Path) -> None:
    wd = tmp_path / "w"
    wd.mkdir()
    (wd / "a.tf").write_text("variable tfc_gcp_dynamic_credentials {\n}\n")
    (wd / "b.tf.json").write_text(
        json.dumps({"variable": {"tfc_vault_dynamic_credentials": {"type": "any"}, "other": {}}})
    )
    (wd / "c.tf.json").write_text("{ broken")
    (wd / "d.tf").write_text('resource "x" "y" { tfc_aws_dynamic_credentials = 1 }\n')
    assert credentials.declared_variables(wd) == {
        "tfc_gcp_dynamic_credentials",
        "tfc_vault_dynamic_credentials",
    }


def test_only_tagged_configurations_still_give_a_default(tmp_path: Path) -> None:
    g = grant(aws("PROD"))
    wd = workdir(tmp_path, ("aws",))
    with Injection(g, tmp_path / "credentials", workdir=wd) as inj:
        doc = inj.variables["tfc_aws_dynamic_credentials"]
        assert doc["default"] == {"shared_config_file": ""}
        assert set(doc["aliases"]) == {"PROD"}
        assert "AWS_CONFIG_FILE" not in inj.env


def test_the_directory_is_the_runs_and_never_someone_elses(tmp_path: Path) -> None:
    path = credentials.run_directory(tmp_path, "run-AbC123")
    assert path == tmp_path / "cairn-run-AbC123-credentials"  # the same for plan and apply
    with pytest.raises(CredentialsError, match="malformed"):
        credentials.run_directory(tmp_path, "run-../../etc")
    # a leftover of an earlier attempt (this user's) is taken over, its old files removed
    path.mkdir(mode=0o755)
    (path / "stale.jwt").write_text("old")
    with Injection(grant(aws()), path, workdir=workdir(tmp_path)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert not (path / "stale.jwt").exists()
    assert not path.exists()
    # a symlink planted at the path (a shared /tmp) is refused and left alone
    target = tmp_path / "elsewhere"
    target.mkdir()
    path.symlink_to(target)
    inj = Injection(grant(aws()), path, workdir=workdir(tmp_path))
    with pytest.raises(CredentialsError, match="not this agent's own directory"):
        inj.open()
    assert path.is_symlink() and target.is_dir() and list(target.iterdir()) == []


# -- Vault against a scripted server ------------------------------------------------------------


class ScriptedVault:
    def __init__(self, *, login_status: int = 200, lease: int = 2, revoke_status: int = 204):
        self.login_status = login_status
        self.lease = lease
        self.revoke_status = revoke_status
        self.requests: list[httpx.Request] = []
        self.token = "hvs." + secrets.token_urlsafe(20)
        self.renewed = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/auth/jwt/login":
            if self.login_status != 200:
                body = json.loads(request.content)
                return httpx.Response(
                    self.login_status,
                    json={"errors": [f"error validating token: invalid audience ({body['jwt']})"]},
                )
            return httpx.Response(
                200,
                json={
                    "auth": {
                        "client_token": self.token,
                        "lease_duration": self.lease,
                        "renewable": True,
                    }
                },
            )
        if request.headers.get("X-Vault-Token") != self.token:
            return httpx.Response(403, json={"errors": ["permission denied"]})
        if path == "/v1/auth/token/renew-self":
            self.renewed.set()
            return httpx.Response(
                200,
                json={
                    "auth": {
                        "client_token": self.token,
                        "lease_duration": self.lease,
                        "renewable": True,
                    }
                },
            )
        if path == "/v1/auth/token/revoke-self":
            return httpx.Response(
                self.revoke_status, json={"errors": ["boom"]} if self.revoke_status >= 400 else None
            )
        return httpx.Response(404, json={"errors": []})

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def test_vault_login_renews_then_revokes(tmp_path: Path) -> None:
    fake = ScriptedVault()
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    config = vault(namespace="admin", encoded_cacert=base64.b64encode(pem.encode()).decode())
    wd = workdir(tmp_path, ("vault",))
    inj = Injection(
        grant(config),
        tmp_path / "credentials",
        workdir=wd,
        vault_transport=httpx.MockTransport(fake),
    )
    with pytest.raises(CredentialsError, match="cannot be loaded"):
        inj.open()  # a PEM block that is no certificate: refused before any request
    assert fake.requests == [] and not (tmp_path / "credentials").exists()

    config = vault(namespace="admin")
    masked: list[str] = []
    inj = Injection(
        grant(config),
        tmp_path / "credentials",
        workdir=wd,
        vault_transport=httpx.MockTransport(fake),
        on_secret=masked.extend,
    )
    with inj:
        login = fake.requests[0]
        assert login.headers["X-Vault-Namespace"] == "admin"
        assert json.loads(login.content) == {"role": "tfc", "jwt": config["token"]}
        assert inj.env["VAULT_TOKEN"] == fake.token and inj.env["VAULT_NAMESPACE"] == "admin"
        assert fake.token in masked and config["token"] in masked
        value = inj.variables["tfc_vault_dynamic_credentials"]["default"]
        assert Path(value["token_filename"]).read_text() == fake.token
        assert value["address"] == "https://vault.test:8200" and value["ca_cert_file"] == ""
        assert fake.renewed.wait(5), "the token was not renewed within its lease"
    assert fake.paths()[-1] == "/v1/auth/token/revoke-self"
    assert not (tmp_path / "credentials").exists()


def test_vault_refusal_names_the_role_and_hides_the_token(tmp_path: Path) -> None:
    fake = ScriptedVault(login_status=400)
    config = vault()
    inj = Injection(
        grant(aws(), config),
        tmp_path / "credentials",
        workdir=workdir(tmp_path),
        vault_transport=httpx.MockTransport(fake),
    )
    with pytest.raises(CredentialsError) as caught:
        inj.open()
    text = str(caught.value)
    assert "role 'tfc'" in text and "(400)" in text and "bound_audiences" in text
    assert config["token"] not in text and "***" in text
    assert not (tmp_path / "credentials").exists()  # the AWS files written before are gone


def test_a_failed_revocation_is_reported_not_raised(tmp_path: Path) -> None:
    fake = ScriptedVault(revoke_status=500, lease=0)
    lines: list[str] = []
    with Injection(
        grant(vault()),
        tmp_path / "credentials",
        workdir=workdir(tmp_path),
        vault_transport=httpx.MockTransport(fake),
        notify=lines.append,
    ):
        pass
    assert fake.paths() == ["/v1/auth/jwt/login", "/v1/auth/token/revoke-self"]
    assert len(lines) == 1 and "refused to revoke" in lines[0] and fake.token not in lines[0]


def test_an_oversized_vault_answer_is_refused(tmp_path: Path) -> None:
    def huge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * (credentials.MAX_VAULT_ANSWER + 1))

    inj = Injection(
        grant(vault()),
        tmp_path / "c",
        workdir=workdir(tmp_path),
        vault_transport=httpx.MockTransport(huge),
    )
    with pytest.raises(CredentialsError, match="larger than"):
        inj.open()
    assert not (tmp_path / "c").exists()


def test_bad_ca_certificate_is_a_clear_error(tmp_path: Path) -> None:
    inj = Injection(grant(vault(encoded_cacert="%%%")), tmp_path / "c", workdir=workdir(tmp_path))
    with pytest.raises(CredentialsError, match="TFC_VAULT_ENCODED_CACERT"):
        inj.open()


# -- a whole job -------------------------------------------------------------------------------

FAKE_TERRAFORM = r"""#!/bin/sh
case "$1" in
  version) echo '{"terraform_version":"1.0.3"}' ;;
  plan)
    echo "generic=$TFC_WORKLOAD_IDENTITY_TOKEN"
    echo "aws-token=$(cat "$AWS_WEB_IDENTITY_TOKEN_FILE")"
    echo "mode=$(stat -c %a "$AWS_CONFIG_FILE")"
    echo "files=$AWS_CONFIG_FILE"
    cat zzz_cairn_dynamic_credentials.auto.tfvars.json
    if [ -n "$FAKE_PLAN_FAIL" ]; then echo "Error: broken" >&2; exit 1; fi
    echo plan > tfplan ;;
  show) echo '{"resource_changes":[]}' ;;
esac
exit 0
"""


class AgentServer:
    def __init__(self, answer: httpx.Response, env: dict[str, str] | None = None):
        self.answer = answer
        self.env = env or {}
        self.log = bytearray()
        self.finish: dict[str, Any] = {}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        action = request.url.path.rsplit("/", 1)[-1]
        self.calls.append(action)
        if action == "workload-identity":
            assert json.loads(request.content) == {"attempt": 1}
            return self.answer
        if action == "configuration":
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                data = b'variable "tfc_aws_dynamic_credentials" {\n  type = any\n}\n'
                info = tarfile.TarInfo("main.tf")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            return httpx.Response(200, content=buf.getvalue())
        if action == "variables":
            env = [{"key": k, "value": v} for k, v in self.env.items()]
            return httpx.Response(200, json={"terraform": [], "env": env, "sensitive": []})
        if action == "logs":
            self.log += request.content
            return httpx.Response(204)
        if action == "finish":
            self.finish = json.loads(request.content)
            return httpx.Response(200, json={})
        if action == "heartbeat":
            return httpx.Response(200, json={"lease_expires_at": "x", "cancel": "none"})
        return httpx.Response(204) if request.method == "PUT" else httpx.Response(200, json={})


def run_job(
    tmp_path: Path, answer: httpx.Response, env: dict[str, str] | None = None
) -> AgentServer:
    server = AgentServer(answer, env)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "terraform").write_text(FAKE_TERRAFORM)
    (bindir / "terraform").chmod(0o755)
    base = "https://cairn.test/api/agent/v1/jobs/job-1"
    job = Job.from_json(
        {
            "job_id": "job-1",
            "attempt": 1,
            "run_id": "run-1",
            "workspace_name": "w",
            "organization_name": "o",
            "phase": "plan",
            "job_token": "cairn_job_abc",
            "timeout_s": 60,
            "terraform_version": "1.0.3",
            "hostname": "cairn.test",
            "urls": {
                k: f"{base}/{k}"
                for k in (
                    "configuration",
                    "variables",
                    "plan",
                    "logs",
                    "heartbeat",
                    "start",
                    "finish",
                )
            },
        }
    )
    client = AgentClient(
        "https://cairn.test",
        "t",
        name="n",
        version="v",
        transport=httpx.MockTransport(server),
        retries=0,
    )
    settings = ExecutorSettings(
        terraform_path=bindir,
        work_root=tmp_path / "work",
        heartbeat_s=5,
        log_interval=0.1,
        inherited_env={"PATH": "/usr/bin:/bin"},
    )
    (tmp_path / "work").mkdir()
    JobRun(client, job, settings).run()
    return server


def test_a_job_gets_its_credentials_masked_and_removed(tmp_path: Path) -> None:
    configs = [generic(), aws()]
    answer = httpx.Response(200, json={"expires_at": "2026-12-01T08:00:00Z", "configs": configs})
    server = run_job(tmp_path, answer)
    log = server.log.decode()
    assert server.finish["status"] == "finished", log
    assert "generic=***" in log and "aws-token=***" in log and "mode=600" in log
    assert all(c["token"] not in log for c in configs)
    assert '"tfc_aws_dynamic_credentials"' in log
    shared = Path(log.split("files=", 1)[1].split("\n", 1)[0])
    assert shared == tmp_path / "work" / "cairn-run-1-credentials" / "aws-default.aws-config"
    assert not shared.exists()
    assert list((tmp_path / "work").iterdir()) == []


def test_a_failed_plan_still_removes_the_credentials(tmp_path: Path) -> None:
    configs = [aws()]
    answer = httpx.Response(200, json={"expires_at": "", "configs": configs})
    server = run_job(tmp_path, answer, {"FAKE_PLAN_FAIL": "1"})
    log = server.log.decode()
    assert server.finish["status"] == "errored", log
    assert "aws-token=***" in log and configs[0]["token"] not in log
    assert list((tmp_path / "work").iterdir()) == []


def test_a_refused_configuration_fails_the_phase_before_terraform(tmp_path: Path) -> None:
    detail = "TFC_AWS_RUN_ROLE_ARN is missing: set it (or TFC_AWS_PLAN_ROLE_ARN)"
    answer = httpx.Response(422, json={"error": "credentials", "detail": detail})
    server = run_job(tmp_path, answer)
    log = server.log.decode()
    assert server.finish["status"] == "errored"
    assert server.finish["error"] == f"Error: {detail}"
    assert log.rstrip("\n").splitlines()[-1] == f"Error: {detail}"
    assert "plan" not in server.calls  # nothing uploaded: Terraform never planned
    assert "generic=" not in log


def test_a_malformed_answer_fails_the_phase(tmp_path: Path) -> None:
    answer = httpx.Response(200, json={"configs": [{"kind": "aws", "token": "x"}]})
    server = run_job(tmp_path, answer)
    assert server.finish["status"] == "errored"
    assert "malformed" in server.finish["error"]
