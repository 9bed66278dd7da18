"""The real SDK credential chains consuming what the executor writes (issue 10, item 5).

A real `cairn serve` (HTTPS with its development CA) mints the workload identity tokens; the
executor's `credentials.Injection` writes the files a run sees; then

* `botocore` resolves credentials from the written AWS shared config through
  `AssumeRoleWithWebIdentity` at a local STS that verifies the token through cairn's discovery
  + JWKS like AWS (issuer, client ID = `aud`, trust policy on `sub`, signature), and signs a
  `GetCallerIdentity` with the keys it got;
* `google-auth` loads the written `external_account` JSON and exchanges the token at a local
  STS, then impersonates a service account at a local IAM credentials endpoint (and, for the
  `workload_pool` principal, uses the federated token directly);
* the executor logs in to a local Vault with Vault's JWT-auth semantics (bound audiences,
  bound claims on `sub`), renews the token while the phase runs and revokes it at the end.

Each chain also fails the way the real service fails: a wrong audience or a `sub` outside the
trust policy is an error the SDK surfaces, never credentials.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.session
import google.auth as google_auth
import httpx
import pytest
from google.auth import exceptions as google_exceptions
from google.auth.transport.requests import Request as GoogleRequest

from cairn.executor import credentials
from cairn.tls import ensure_dev_tls
from tests.conftest import start_server
from tests.support import api as tfe
from tests.support.fake_sts import (
    AwsRole,
    FakeAwsSts,
    FakeGcp,
    FakeVault,
    GcpProvider,
    OidcVerifier,
    VaultRole,
)
from tests.support.identity import minted
from tests.support.server import CairnServer

ROLE_ARN = "arn:aws:iam::123456789012:role/cairn-plan"
PROVIDER = "projects/123456/locations/global/workloadIdentityPools/cairn/providers/cairn"
GCP_AUDIENCE = f"//iam.googleapis.com/{PROVIDER}"
SA_EMAIL = "terraform@proj.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def issuer(
    request: pytest.FixtureRequest, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CairnServer]:
    srv = start_server(request, tmp_path_factory.mktemp("cairn-sdk"), "sqlite", admin_token)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def admin(issuer: CairnServer, admin_token: str) -> Iterator[httpx.Client]:
    with issuer.client(admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def workspace(admin: httpx.Client) -> dict[str, str]:
    org = tfe.create_organization(admin, tfe.unique_name("sdk"))
    ws_id = tfe.create_workspace(admin, org, "network-prod")
    return {"org": org, "ws": "network-prod", "ws_id": ws_id}


@pytest.fixture(scope="module")
def verifier(issuer: CairnServer) -> OidcVerifier:
    context = issuer.ssl_context()
    assert not isinstance(context, bool)
    return OidcVerifier(issuer.url, context)


def sub_of(workspace: dict[str, str], phase: str) -> str:
    return (
        f"organization:{workspace['org']}:project:Default Project:"
        f"workspace:{workspace['ws']}:run_phase:{phase}"
    )


def token_for(admin: httpx.Client, workspace: dict[str, str], audience: str, phase: str) -> str:
    doc = minted(admin, workspace["ws_id"], audience=audience, phase=phase, ttl_seconds=600)
    return str(doc["token"])


def inject(tmp_path: Path, configs: list[dict[str, Any]], **kwargs: Any) -> credentials.Injection:
    workdir = tmp_path / "config"
    workdir.mkdir(parents=True, exist_ok=True)
    grant = credentials.Grant.from_json({"expires_at": "", "configs": configs})
    return credentials.Injection(grant, tmp_path / "credentials", workdir=workdir, **kwargs)


def assert_private(paths: list[Path]) -> None:
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(paths[0].parent.stat().st_mode) == 0o700


# -- AWS ----------------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    return monkeypatch


def botocore_credentials(injection: credentials.Injection, sts: FakeAwsSts, env: Any) -> Any:
    """Resolve credentials as every AWS SDK does, with only the run's environment."""
    for key, value in injection.env.items():
        if key.startswith("AWS_"):
            env.setenv(key, value)
    # The run's AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE are unset here: the shared config
    # file alone must be enough (the path HCP's multi-configuration variable takes).
    env.delenv("AWS_ROLE_ARN")
    env.delenv("AWS_WEB_IDENTITY_TOKEN_FILE")
    env.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    session = botocore.session.Session()
    return session, session.get_credentials()


def test_botocore_assumes_the_role_from_the_written_shared_config(
    admin: httpx.Client,
    workspace: dict[str, str],
    verifier: OidcVerifier,
    tmp_path: Path,
    aws_env: pytest.MonkeyPatch,
) -> None:
    sts = FakeAwsSts(
        verifier,
        ["aws.workload.identity"],
        [AwsRole(ROLE_ARN, sub_like=sub_of(workspace, "*"), aud="aws.workload.identity")],
    )
    token = token_for(admin, workspace, "aws.workload.identity", "plan")
    config = {
        "kind": "aws",
        "tag": None,
        "audience": "aws.workload.identity",
        "token": token,
        "role_arn": ROLE_ARN,
    }
    with sts.running(), inject(tmp_path, [config]) as injection:
        shared = Path(injection.env["AWS_CONFIG_FILE"])
        assert_private([shared, Path(injection.env["AWS_WEB_IDENTITY_TOKEN_FILE"])])
        session, creds = botocore_credentials(injection, sts, aws_env)
        frozen = creds.get_frozen_credentials()
        assert frozen.access_key in sts.issued
        assert sts.issued[frozen.access_key]["sub"] == sub_of(workspace, "plan")
        client = session.create_client("sts", endpoint_url=sts.url)
        who = client.get_caller_identity()
        assert who["Arn"].startswith("arn:aws:sts::123456789012:assumed-role/cairn-plan/")
    assert not shared.exists()


@pytest.mark.parametrize(
    ("audience", "sub_like", "code"),
    [
        ("sts.amazonaws.com", "organization:*", "InvalidIdentityToken"),  # not a client ID
        ("aws.workload.identity", "organization:other:*", "AccessDenied"),  # trust policy
    ],
)
def test_botocore_surfaces_what_sts_refuses(
    admin: httpx.Client,
    workspace: dict[str, str],
    verifier: OidcVerifier,
    tmp_path: Path,
    aws_env: pytest.MonkeyPatch,
    audience: str,
    sub_like: str,
    code: str,
) -> None:
    sts = FakeAwsSts(
        verifier,
        ["aws.workload.identity"],
        [AwsRole(ROLE_ARN, sub_like=sub_like, aud="aws.workload.identity")],
    )
    token = token_for(admin, workspace, audience, "apply")
    config = {
        "kind": "aws",
        "tag": None,
        "audience": audience,
        "token": token,
        "role_arn": ROLE_ARN,
    }
    with sts.running(), inject(tmp_path, [config]) as injection:
        _, creds = botocore_credentials(injection, sts, aws_env)
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            creds.get_frozen_credentials()
    assert caught.value.response["Error"]["Code"] == code
    assert not sts.issued


def test_sts_rejects_a_forged_signature(
    admin: httpx.Client, workspace: dict[str, str], verifier: OidcVerifier
) -> None:
    """The fake really checks the signature (a token with a flipped signature byte fails)."""
    sts = FakeAwsSts(
        verifier,
        ["aws.workload.identity"],
        [AwsRole(ROLE_ARN, sub_like="*", aud="aws.workload.identity")],
    )
    token = token_for(admin, workspace, "aws.workload.identity", "plan")
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    with sts.running():
        answer = httpx.post(
            sts.url,
            data={
                "Action": "AssumeRoleWithWebIdentity",
                "RoleArn": ROLE_ARN,
                "RoleSessionName": "s",
                "WebIdentityToken": forged,
                "Version": "2011-06-15",
            },
        )
    assert answer.status_code == 400
    assert b"InvalidIdentityToken" in answer.content and b"signature" in answer.content


# -- GCP ----------------------------------------------------------------------------------------


def gcp_config(token: str, principal: str, audience: str = GCP_AUDIENCE) -> dict[str, Any]:
    return {
        "kind": "gcp",
        "tag": None,
        "audience": audience,
        "token": token,
        "principal_type": principal,
        "workload_provider_name": PROVIDER,
        "service_account_email": SA_EMAIL if principal == "service_account" else None,
    }


def google_credentials(path: str) -> Any:
    """Application Default Credentials from the run's GOOGLE_APPLICATION_CREDENTIALS."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
        env.setenv("GOOGLE_CLOUD_PROJECT", "proj")  # no project lookup over the network
        creds, _ = google_auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return creds


def test_google_auth_impersonates_the_service_account(
    admin: httpx.Client, workspace: dict[str, str], verifier: OidcVerifier, tmp_path: Path
) -> None:
    gcp = FakeGcp(
        verifier,
        GcpProvider(
            PROVIDER,
            sub_like=sub_of(workspace, "*"),
            impersonators={SA_EMAIL: sub_of(workspace, "*")},
        ),
    )
    token = token_for(admin, workspace, GCP_AUDIENCE, "plan")
    with gcp.running():
        endpoints = credentials.Endpoints(
            gcp_sts_url=f"{gcp.url}/v1/token", gcp_iam_url=f"{gcp.url}/v1"
        )
        with inject(tmp_path, [gcp_config(token, "service_account")], endpoints=endpoints) as inj:
            path = inj.env["GOOGLE_APPLICATION_CREDENTIALS"]
            assert_private([Path(path)])
            creds = google_credentials(path)
            creds.refresh(GoogleRequest())
            assert gcp.access_tokens.get(creds.token) == SA_EMAIL
    assert gcp.calls == [
        "POST /v1/token",
        f"POST /v1/projects/-/serviceAccounts/{SA_EMAIL}:generateAccessToken",
    ]
    assert not Path(path).exists()


def test_google_auth_workload_pool_principal_uses_the_federated_token(
    admin: httpx.Client, workspace: dict[str, str], verifier: OidcVerifier, tmp_path: Path
) -> None:
    gcp = FakeGcp(verifier, GcpProvider(PROVIDER, sub_like=sub_of(workspace, "*")))
    token = token_for(admin, workspace, GCP_AUDIENCE, "apply")
    with gcp.running():
        endpoints = credentials.Endpoints(gcp_sts_url=f"{gcp.url}/v1/token")
        with inject(tmp_path, [gcp_config(token, "workload_pool")], endpoints=endpoints) as inj:
            creds = google_credentials(inj.env["GOOGLE_APPLICATION_CREDENTIALS"])
            creds.refresh(GoogleRequest())
    assert gcp.federated.get(creds.token) == sub_of(workspace, "apply")
    assert gcp.calls == ["POST /v1/token"]


@pytest.mark.parametrize(
    ("audience", "sub_like", "impersonator", "reason"),
    [
        ("https://example.com/wrong", "organization:*", "organization:*", "audience"),
        (GCP_AUDIENCE, "organization:other:*", "organization:*", "attribute condition"),
        (GCP_AUDIENCE, "organization:*", "organization:other:*", "PERMISSION_DENIED"),
    ],
)
def test_google_auth_surfaces_what_google_refuses(
    admin: httpx.Client,
    workspace: dict[str, str],
    verifier: OidcVerifier,
    tmp_path: Path,
    audience: str,
    sub_like: str,
    impersonator: str,
    reason: str,
) -> None:
    gcp = FakeGcp(
        verifier, GcpProvider(PROVIDER, sub_like=sub_like, impersonators={SA_EMAIL: impersonator})
    )
    token = token_for(admin, workspace, audience, "plan")
    with gcp.running():
        endpoints = credentials.Endpoints(
            gcp_sts_url=f"{gcp.url}/v1/token", gcp_iam_url=f"{gcp.url}/v1"
        )
        config = gcp_config(token, "service_account", audience)
        with inject(tmp_path, [config], endpoints=endpoints) as inj:
            creds = google_credentials(inj.env["GOOGLE_APPLICATION_CREDENTIALS"])
            with pytest.raises(google_exceptions.GoogleAuthError) as caught:
                creds.refresh(GoogleRequest())
    assert reason in str(caught.value)
    assert token not in str(caught.value)
    assert gcp.calls[0] == "POST /v1/token"
    assert not gcp.access_tokens


# -- Vault --------------------------------------------------------------------------------------


def vault_config(token: str, address: str, role: str = "cairn", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "vault",
        "tag": None,
        "audience": "vault.workload.identity",
        "token": token,
        "address": address,
        "namespace": None,
        "auth_path": "jwt",
        "role": role,
        "encoded_cacert": None,
        "client_timeout_s": 10,
        **extra,
    }


def test_vault_login_renewal_and_revocation(
    admin: httpx.Client, workspace: dict[str, str], verifier: OidcVerifier, tmp_path: Path
) -> None:
    role = VaultRole(
        "cairn", ["vault.workload.identity"], {"sub": sub_of(workspace, "*")}, token_ttl_s=2
    )
    vault = FakeVault(verifier, [role], namespace="admin/team")
    token = token_for(admin, workspace, "vault.workload.identity", "apply")
    with vault.running():
        config = vault_config(token, vault.url, namespace="admin/team")
        lines: list[str] = []
        with inject(tmp_path, [config], notify=lines.append) as inj:
            vault_token = inj.env["VAULT_TOKEN"]
            assert inj.env["VAULT_ADDR"] == vault.url
            assert inj.env["VAULT_NAMESPACE"] == "admin/team"
            assert vault_token in inj.secrets and token in inj.secrets
            held = vault.tokens[vault_token]
            assert (
                held.entity == f"organization:{workspace['org']}:project:Default Project:"
                f"workspace:{workspace['ws']}"
            )
            time.sleep(3.2)  # past the 2 s TTL: only renewals keep it alive
            lookup = httpx.post(
                f"{vault.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": vault_token}
            )
            assert lookup.status_code == 200, lookup.text
            assert held.renewals >= 2
        assert held.revoked
        assert not lines
        after = httpx.post(
            f"{vault.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": vault_token}
        )
        assert after.status_code == 403
    assert not (tmp_path / "credentials").exists()


def test_vault_over_tls_trusts_the_encoded_ca_and_nothing_else(
    admin: httpx.Client, workspace: dict[str, str], verifier: OidcVerifier, tmp_path: Path
) -> None:
    tls = ensure_dev_tls(tmp_path / "vault-tls", ["localhost"])
    vault = FakeVault(verifier, [VaultRole("cairn", ["vault.workload.identity"], {"sub": "*"})])
    encoded = base64.b64encode(tls.ca.read_bytes()).decode()
    with vault.running(tls):
        assert vault.url.startswith("https://localhost:")
        untrusted = inject(
            tmp_path / "a",
            [
                vault_config(
                    token_for(admin, workspace, "vault.workload.identity", "plan"), vault.url
                )
            ],
        )
        with pytest.raises(credentials.CredentialsError, match="TFC_VAULT_ENCODED_CACERT"):
            untrusted.open()  # the dev CA is in no system trust store
        config = vault_config(
            token_for(admin, workspace, "vault.workload.identity", "plan"),
            vault.url,
            encoded_cacert=encoded,
        )
        with inject(tmp_path / "b", [config]) as inj:
            ca_file = Path(inj.env["VAULT_CACERT"])
            assert ca_file.read_bytes() == tls.ca.read_bytes()
            assert_private([ca_file])
            assert inj.env["VAULT_TOKEN"] in vault.tokens
        assert all(t.revoked for t in vault.tokens.values()) and len(vault.tokens) == 1


@pytest.mark.parametrize(
    ("audience", "bound_audiences", "bound_sub", "message"),
    [
        ("vault.workload.identity", [], "*", "no audiences bound to the role"),
        ("other", ["vault.workload.identity"], "*", "invalid audience (aud) claim"),
        (
            "vault.workload.identity",
            ["vault.workload.identity"],
            "organization:other:*",
            'claim "sub" does not match',
        ),
    ],
)
def test_vault_refusals_fail_the_phase_with_vaults_reason(
    admin: httpx.Client,
    workspace: dict[str, str],
    verifier: OidcVerifier,
    tmp_path: Path,
    audience: str,
    bound_audiences: list[str],
    bound_sub: str,
    message: str,
) -> None:
    vault = FakeVault(verifier, [VaultRole("cairn", bound_audiences, {"sub": bound_sub})])
    token = token_for(admin, workspace, audience, "plan")
    with vault.running():
        injection = inject(tmp_path, [vault_config(token, vault.url, audience=audience)])
        with pytest.raises(credentials.CredentialsError) as caught:
            injection.open()
    text = str(caught.value)
    assert message in text and "role 'cairn'" in text and token not in text
    assert not vault.tokens
    assert not (tmp_path / "credentials").exists()


def test_multi_configuration_variables_point_at_working_files(
    admin: httpx.Client,
    workspace: dict[str, str],
    verifier: OidcVerifier,
    tmp_path: Path,
    aws_env: pytest.MonkeyPatch,
) -> None:
    """A tagged AWS alias reaches STS through `tfc_aws_dynamic_credentials.aliases[TAG]`."""
    sts = FakeAwsSts(
        verifier,
        ["aws.workload.identity", "prod.aws"],
        [
            AwsRole(ROLE_ARN, sub_like="*", aud="aws.workload.identity"),
            AwsRole(ROLE_ARN + "-prod", sub_like="*", aud="prod.aws"),
        ],
    )
    default = token_for(admin, workspace, "aws.workload.identity", "plan")
    prod = token_for(admin, workspace, "prod.aws", "plan")
    configs: list[dict[str, Any]] = [
        {
            "kind": "aws",
            "tag": None,
            "audience": "aws.workload.identity",
            "token": default,
            "role_arn": ROLE_ARN,
        },
        {
            "kind": "aws",
            "tag": "PROD",
            "audience": "prod.aws",
            "token": prod,
            "role_arn": ROLE_ARN + "-prod",
        },
    ]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "variables.tf").write_text(
        'variable "tfc_aws_dynamic_credentials" {\n  type = any\n}\n'
    )
    with sts.running(), inject(tmp_path, configs) as inj:
        assert inj.tfvars_file is not None
        doc = json.loads(inj.tfvars_file.read_text())
        alias = doc["tfc_aws_dynamic_credentials"]["aliases"]["PROD"]["shared_config_file"]
        aws_env.setenv("AWS_CONFIG_FILE", alias)
        aws_env.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        frozen = botocore.session.Session().get_credentials().get_frozen_credentials()
        assert sts.issued[frozen.access_key]["assumed"].split("/")[1] == "cairn-plan-prod"
