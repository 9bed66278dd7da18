"""The injection contract computed from a job's variables (``cairn.runs.credentials``): pure
and fast. A matrix over each cloud x {single, tagged alias, TFC_DEFAULT_* only, phase-specific
override} x phase, HCP Terraform's lookup order, and every misconfiguration (INJ-02, INJ-05)
with the variable its message names."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from cairn.errors import Invalid
from cairn.runs import credentials as c
from cairn.runs.credentials import CredentialConfig, CredentialsError

PROVIDER = "projects/123456789/locations/global/workloadIdentityPools/pool-1/providers/prov-1"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZm9vYmFy\n-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class Cloud:
    kind: c.Kind
    cloud: str  # the variables' infix
    identity: str  # the phase-specific variable (RUN/PLAN/APPLY)
    field: str  # the wire field it fills
    value: Callable[[str], str]  # a valid value labelled with a word
    base: dict[str, str]  # other variables a configuration needs (suffix → value)
    audience: str  # the default audience


CLOUDS = [
    Cloud(
        "aws",
        "AWS",
        "ROLE_ARN",
        "role_arn",
        lambda w: f"arn:aws:iam::123456789012:role/{w}",
        {},
        "aws.workload.identity",
    ),
    Cloud(
        "gcp",
        "GCP",
        "SERVICE_ACCOUNT_EMAIL",
        "service_account_email",
        lambda w: f"{w}@proj.iam.gserviceaccount.com",
        {"WORKLOAD_PROVIDER_NAME": PROVIDER},
        f"//iam.googleapis.com/{PROVIDER}",
    ),
    Cloud(
        "azure",
        "AZURE",
        "CLIENT_ID",
        "client_id",
        lambda w: f"00000000-0000-0000-0000-{w.encode().hex()[:12].ljust(12, '0')}",
        {},
        "api://AzureADTokenExchange",
    ),
    Cloud(
        "vault",
        "VAULT",
        "ROLE",
        "role",
        lambda w: f"role-{w}",
        {"ADDR": "https://vault.example.com:8200"},
        "vault.workload.identity",
    ),
]
PHASES: list[c.Phase] = ["plan", "apply"]


def configs(
    env: dict[str, str],
    phase: c.Phase = "plan",
    *,
    speculative: bool = False,
    mode: c.Mode = "same",
) -> list[CredentialConfig]:
    return c.configs_for_job(env, phase=phase, speculative=speculative, mode=mode)


def only(env: dict[str, str], phase: c.Phase = "plan") -> CredentialConfig:
    found = configs(env, phase)
    assert len(found) == 1, found
    return found[0]


def error(env: dict[str, str], phase: c.Phase = "plan", **kw: Any) -> CredentialsError:
    with pytest.raises(CredentialsError) as caught:
        configs(env, phase, **kw)
    err = caught.value
    assert err.status == 422 and err.code == "credentials"
    assert err.variable in err.detail  # the message names the variable to fix
    return err


# ---- the matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("cloud", CLOUDS, ids=lambda x: x.kind)
def test_single_configuration(cloud: Cloud, phase: c.Phase) -> None:
    env = {f"TFC_{cloud.cloud}_PROVIDER_AUTH": "true"}
    env |= {f"TFC_{cloud.cloud}_{k}": v for k, v in cloud.base.items()}
    env[f"TFC_{cloud.cloud}_RUN_{cloud.identity}"] = cloud.value("run")
    cfg = only(env, phase)
    assert (cfg.kind, cfg.tag, cfg.audience) == (cloud.kind, None, cloud.audience)
    assert cfg.fields[cloud.field] == cloud.value("run")


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("cloud", CLOUDS, ids=lambda x: x.kind)
def test_tagged_alias_beside_the_default_configuration(cloud: Cloud, phase: c.Phase) -> None:
    p = cloud.cloud
    env = {f"TFC_{p}_PROVIDER_AUTH": "true", f"TFC_{p}_PROVIDER_AUTH_PROD": "true"}
    env |= {f"TFC_{p}_{k}": v for k, v in cloud.base.items()}
    env |= {f"TFC_{p}_{k}_PROD": v for k, v in cloud.base.items()}
    env[f"TFC_{p}_RUN_{cloud.identity}"] = cloud.value("main")
    env[f"TFC_{p}_RUN_{cloud.identity}_PROD"] = cloud.value("prod")
    env[f"TFC_{p}_WORKLOAD_IDENTITY_AUDIENCE_PROD"] = "custom-audience"
    default, prod = configs(env, phase)
    assert (default.tag, prod.tag) == (None, "PROD")
    assert default.fields[cloud.field] == cloud.value("main")
    assert prod.fields[cloud.field] == cloud.value("prod")
    assert default.audience == cloud.audience
    assert prod.audience == "custom-audience"
    assert default.wire("tok") == {
        "kind": cloud.kind,
        "tag": None,
        "audience": cloud.audience,
        "token": "tok",
        **default.fields,
    }


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("cloud", CLOUDS, ids=lambda x: x.kind)
def test_tfc_default_values_only(cloud: Cloud, phase: c.Phase) -> None:
    p = cloud.cloud
    env = {f"TFC_{p}_PROVIDER_AUTH": "true", f"TFC_{p}_PROVIDER_AUTH_OTHER": "true"}
    env |= {f"TFC_DEFAULT_{p}_{k}": v for k, v in cloud.base.items()}
    env[f"TFC_DEFAULT_{p}_RUN_{cloud.identity}"] = cloud.value("shared")
    env[f"TFC_DEFAULT_{p}_WORKLOAD_IDENTITY_AUDIENCE"] = "shared-audience"
    found = configs(env, phase)
    assert [cfg.tag for cfg in found] == [None, "OTHER"]
    for cfg in found:
        assert cfg.fields[cloud.field] == cloud.value("shared")
        assert cfg.audience == "shared-audience"


@pytest.mark.parametrize("cloud", CLOUDS, ids=lambda x: x.kind)
def test_phase_specific_override(cloud: Cloud) -> None:
    p = cloud.cloud
    env = {f"TFC_{p}_PROVIDER_AUTH_T1": "true"}
    env |= {f"TFC_{p}_{k}_T1": v for k, v in cloud.base.items()}
    env[f"TFC_{p}_RUN_{cloud.identity}_T1"] = cloud.value("run")
    env[f"TFC_{p}_PLAN_{cloud.identity}_T1"] = cloud.value("plan")
    assert only(env, "plan").fields[cloud.field] == cloud.value("plan")
    assert only(env, "apply").fields[cloud.field] == cloud.value("run")
    env[f"TFC_{p}_APPLY_{cloud.identity}_T1"] = cloud.value("apply")
    assert only(env, "apply").fields[cloud.field] == cloud.value("apply")


@pytest.mark.parametrize("cloud", CLOUDS, ids=lambda x: x.kind)
def test_hcp_lookup_order(cloud: Cloud) -> None:
    """phase-specific tagged → phase-specific default → run-level tagged → run-level default."""
    p, x = cloud.cloud, cloud.identity
    order = [
        f"TFC_{p}_PLAN_{x}_T",
        f"TFC_DEFAULT_{p}_PLAN_{x}",
        f"TFC_{p}_RUN_{x}_T",
        f"TFC_DEFAULT_{p}_RUN_{x}",
    ]
    env = {f"TFC_{p}_PROVIDER_AUTH_T": "true"}
    env |= {f"TFC_{p}_{k}_T": v for k, v in cloud.base.items()}
    env |= {name: cloud.value(f"w{i}") for i, name in enumerate(order)}
    for i, name in enumerate(order):
        assert only(env).fields[cloud.field] == cloud.value(f"w{i}"), name
        env[name] = ""  # an empty value counts as unset: the next one is used
    with pytest.raises(CredentialsError):
        configs(env)


def test_a_tagged_value_does_not_leak_into_another_configuration() -> None:
    env = {
        "TFC_AWS_PROVIDER_AUTH": "true",
        "TFC_AWS_PROVIDER_AUTH_B": "true",
        "TFC_AWS_RUN_ROLE_ARN_A": "arn:aws:iam::123456789012:role/a",
        "TFC_AWS_RUN_ROLE_ARN_B": "arn:aws:iam::123456789012:role/b",
    }
    err = error(env)  # the untagged configuration has no role: A's is not its
    assert err.variable == "TFC_AWS_RUN_ROLE_ARN"


def test_explicit_beats_default_and_provider_auth_has_no_default_form() -> None:
    env = {
        "TFC_DEFAULT_AWS_PROVIDER_AUTH": "true",  # no such form: asks for nothing
        "TFC_DEFAULT_AWS_RUN_ROLE_ARN": "arn:aws:iam::123456789012:role/default",
    }
    assert configs(env) == []
    env["TFC_AWS_PROVIDER_AUTH"] = "true"
    assert only(env).fields["role_arn"].endswith("/default")
    env["TFC_AWS_RUN_ROLE_ARN"] = "arn:aws:iam::123456789012:role/explicit"
    assert only(env).fields["role_arn"].endswith("/explicit")


# ---- generic audiences ---------------------------------------------------------------------


def test_generic_audiences_single_and_tagged() -> None:
    env = {
        "TFC_WORKLOAD_IDENTITY_AUDIENCE": "api.example.com",
        "TFC_WORKLOAD_IDENTITY_AUDIENCE_TAILSCALE": "tailscale-aud",
        "TFC_WORKLOAD_IDENTITY_AUDIENCE_ANTHROPIC": "anthropic-aud",
    }
    found = configs(env)
    assert [(x.kind, x.tag, x.audience) for x in found] == [
        ("generic", None, "api.example.com"),
        ("generic", "ANTHROPIC", "anthropic-aud"),
        ("generic", "TAILSCALE", "tailscale-aud"),
    ]
    assert found[0].wire("t") == {
        "kind": "generic",
        "tag": None,
        "audience": "api.example.com",
        "token": "t",
    }


def test_no_token_without_an_audience_or_provider_auth() -> None:
    """INJ-03: nothing is asked for, nothing is minted."""
    assert configs({}) == []
    assert configs({"TFC_AWS_PROVIDER_AUTH": "false", "OTHER": "x"}) == []
    assert configs({"TFC_AWS_RUN_ROLE_ARN": "arn:aws:iam::123456789012:role/x"}) == []


def test_configurations_come_in_a_stable_order() -> None:
    env = {
        "TFC_VAULT_PROVIDER_AUTH": "true",
        "TFC_VAULT_ADDR": "https://vault.example.com",
        "TFC_VAULT_RUN_ROLE": "r",
        "TFC_AZURE_PROVIDER_AUTH": "TRUE",
        "TFC_AZURE_RUN_CLIENT_ID": "cid",
        "TFC_AWS_PROVIDER_AUTH": "True",
        "TFC_AWS_RUN_ROLE_ARN": "arn:aws:iam::123456789012:role/x",
        "TFC_GCP_PROVIDER_AUTH": "true",
        "TFC_GCP_WORKLOAD_PROVIDER_NAME": PROVIDER,
        "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "sa@p.iam.gserviceaccount.com",
        "TFC_WORKLOAD_IDENTITY_AUDIENCE": "aud",
    }
    assert [x.kind for x in configs(env)] == ["generic", "aws", "gcp", "azure", "vault"]
    # the same from a list of (key, value) pairs, like Variables.for_job(...).env
    assert configs(env) == c.configs_for_job(
        list(env.items()), phase="plan", speculative=False, mode="same"
    )


# ---- GCP, Vault details ------------------------------------------------------------------------


def test_gcp_provider_triple_and_default_audience() -> None:
    env = {
        "TFC_GCP_PROVIDER_AUTH": "true",
        "TFC_GCP_PROJECT_NUMBER": "123456789",
        "TFC_GCP_WORKLOAD_POOL_ID": "pool-1",
        "TFC_GCP_WORKLOAD_PROVIDER_ID": "prov-1",
        "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "sa@proj.iam.gserviceaccount.com",
    }
    cfg = only(env)
    assert cfg.fields == {
        "principal_type": "service_account",
        "workload_provider_name": PROVIDER,
        "service_account_email": "sa@proj.iam.gserviceaccount.com",
    }
    assert cfg.audience == f"//iam.googleapis.com/{PROVIDER}"
    # the full name wins over the triple
    other = PROVIDER.replace("prov-1", "prov-2")
    env["TFC_GCP_WORKLOAD_PROVIDER_NAME"] = other
    assert only(env).fields["workload_provider_name"] == other


def test_gcp_workload_pool_needs_no_service_account() -> None:
    env = {
        "TFC_GCP_PROVIDER_AUTH": "true",
        "TFC_GCP_PRINCIPAL_TYPE": "workload_pool",
        "TFC_GCP_WORKLOAD_PROVIDER_NAME": PROVIDER,
    }
    cfg = only(env)
    assert cfg.fields["principal_type"] == "workload_pool"
    assert cfg.fields["service_account_email"] is None


def test_vault_fields_and_defaults() -> None:
    encoded = base64.b64encode(PEM).decode()
    env = {
        "TFC_VAULT_PROVIDER_AUTH": "true",
        "TFC_VAULT_ADDR": "https://vault.example.com:8200/",
        "TFC_VAULT_RUN_ROLE": "tfc-role",
    }
    assert only(env).fields == {
        "address": "https://vault.example.com:8200",
        "namespace": None,
        "auth_path": "jwt",
        "role": "tfc-role",
        "encoded_cacert": None,
        "client_timeout_s": 60,
    }
    env |= {
        "TFC_VAULT_NAMESPACE": "admin/team",
        "TFC_VAULT_AUTH_PATH": "/tfc/jwt/",
        "TFC_VAULT_ENCODED_CACERT": encoded,
        "TFC_VAULT_CLIENT_TIMEOUT": "15",
        "TFC_VAULT_WORKLOAD_IDENTITY_AUDIENCE": "vault-aud",
    }
    cfg = only(env)
    assert cfg.audience == "vault-aud"
    assert cfg.fields["namespace"] == "admin/team"
    assert cfg.fields["auth_path"] == "tfc/jwt"
    assert cfg.fields["encoded_cacert"] == encoded
    assert cfg.fields["client_timeout_s"] == 15


# ---- speculative plans --------------------------------------------------------------------------

AWS = {"TFC_AWS_PROVIDER_AUTH": "true", "TFC_AWS_RUN_ROLE_ARN": "arn:aws:iam::123456789012:role/x"}


@pytest.mark.parametrize(
    ("phase", "speculative", "mode", "expected"),
    [
        ("plan", False, "same", "plan"),
        ("plan", True, "same", "plan"),
        ("plan", True, "distinct_subject", "speculative_plan"),
        ("plan", False, "distinct_subject", "plan"),
        ("apply", False, "distinct_subject", "apply"),
        ("plan", True, "none", "plan"),
    ],
)
def test_token_phase(phase: c.Phase, speculative: bool, mode: c.Mode, expected: str) -> None:
    assert c.token_phase(phase, speculative=speculative, mode=mode) == expected


def test_none_mode_refuses_a_speculative_plan_that_asks_for_credentials() -> None:
    err = error(AWS, speculative=True, mode="none")
    assert err.variable == "TFC_AWS_PROVIDER_AUTH"
    assert "speculative-plan-credentials" in err.detail and "'none'" in err.detail
    err = error({"TFC_WORKLOAD_IDENTITY_AUDIENCE": "a"}, speculative=True, mode="none")
    assert err.variable == "TFC_WORKLOAD_IDENTITY_AUDIENCE"
    # nothing asked: nothing minted, no error
    assert configs({}, speculative=True, mode="none") == []
    # runs that are not speculative are not concerned
    assert len(configs(AWS, speculative=False, mode="none")) == 1
    assert len(configs(AWS, "apply", mode="none")) == 1


def test_distinct_subject_changes_no_configuration() -> None:
    assert configs(AWS, speculative=True, mode="distinct_subject") == configs(AWS)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(Invalid):
        configs(AWS, mode="sometimes")  # type: ignore[arg-type]


# ---- misconfigurations (INJ-02, INJ-05) -----------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TFC_AWS_PROVIDER_AUTH_TYPE": "true"}, "TFC_AWS_PROVIDER_AUTH_TYPE"),
        ({"TFC_GCP_PROVIDER_AUTH_TYPE": "false"}, "TFC_GCP_PROVIDER_AUTH_TYPE"),
        ({"TFC_WORKLOAD_IDENTITY_AUDIENCE_TYPE": "a"}, "TFC_WORKLOAD_IDENTITY_AUDIENCE_TYPE"),
        ({"TFC_AWS_PROVIDER_AUTH_bad-tag": "true"}, "TFC_AWS_PROVIDER_AUTH_bad-tag"),
        ({"TFC_AZURE_PROVIDER_AUTH_": "true"}, "TFC_AZURE_PROVIDER_AUTH_"),
        ({"TFC_WORKLOAD_IDENTITY_AUDIENCE_a.b": "x"}, "TFC_WORKLOAD_IDENTITY_AUDIENCE_a.b"),
    ],
)
def test_bad_and_reserved_tags(env: dict[str, str], variable: str) -> None:
    err = error(env)
    assert err.variable == variable


def test_provider_auth_must_be_a_boolean() -> None:
    err = error({"TFC_VAULT_PROVIDER_AUTH": "yes"})
    assert err.variable == "TFC_VAULT_PROVIDER_AUTH" and "true or false" in err.detail


@pytest.mark.parametrize("cloud", CLOUDS, ids=lambda x: x.kind)
@pytest.mark.parametrize("tag", [None, "PROD"])
def test_missing_identity_names_the_variable(cloud: Cloud, tag: str | None) -> None:
    suffix = "" if tag is None else f"_{tag}"
    env = {f"TFC_{cloud.cloud}_PROVIDER_AUTH{suffix}": "true"}
    env |= {f"TFC_{cloud.cloud}_{k}{suffix}": v for k, v in cloud.base.items()}
    err = error(env, "apply")
    assert err.variable == f"TFC_{cloud.cloud}_RUN_{cloud.identity}{suffix}"
    assert f"TFC_{cloud.cloud}_APPLY_{cloud.identity}{suffix}" in err.detail
    assert f"TFC_DEFAULT_{cloud.cloud}_RUN_{cloud.identity}" in err.detail


GCP = {"TFC_GCP_PROVIDER_AUTH": "true", "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "sa@x.iam"}
VAULT = {"TFC_VAULT_PROVIDER_AUTH": "true", "TFC_VAULT_RUN_ROLE": "r"}
VAULT_OK = VAULT | {"TFC_VAULT_ADDR": "https://vault.example.com"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        # AWS
        (AWS | {"TFC_AWS_RUN_ROLE_ARN": "my-role"}, "TFC_AWS_RUN_ROLE_ARN"),
        (
            AWS | {"TFC_AWS_PLAN_ROLE_ARN": "arn:aws:iam::12345:role/short-account"},
            "TFC_AWS_PLAN_ROLE_ARN",
        ),
        (
            AWS | {"TFC_AWS_WORKLOAD_IDENTITY_AUDIENCE": "a" * 600},
            "TFC_AWS_WORKLOAD_IDENTITY_AUDIENCE",
        ),
        # GCP: the provider name, the triple, the principal, the service account
        (GCP, "TFC_GCP_PROJECT_NUMBER"),
        (
            GCP | {"TFC_GCP_WORKLOAD_PROVIDER_NAME": "projects/1/pools/p/providers/q"},
            "TFC_GCP_WORKLOAD_PROVIDER_NAME",
        ),
        (
            GCP | {"TFC_GCP_WORKLOAD_PROVIDER_NAME": PROVIDER.replace("123456789", "my-project")},
            "TFC_GCP_WORKLOAD_PROVIDER_NAME",
        ),
        (
            GCP | {"TFC_GCP_WORKLOAD_PROVIDER_NAME": PROVIDER.replace("global", "europe-west1")},
            "TFC_GCP_WORKLOAD_PROVIDER_NAME",
        ),
        (
            GCP | {"TFC_GCP_WORKLOAD_PROVIDER_NAME": PROVIDER + "/extra"},
            "TFC_GCP_WORKLOAD_PROVIDER_NAME",
        ),
        (GCP | {"TFC_GCP_PROJECT_NUMBER": "1"}, "TFC_GCP_WORKLOAD_POOL_ID"),
        (
            GCP | {"TFC_GCP_PROJECT_NUMBER": "1", "TFC_GCP_WORKLOAD_POOL_ID": "p"},
            "TFC_GCP_WORKLOAD_PROVIDER_ID",
        ),
        (
            GCP
            | {
                "TFC_GCP_PROJECT_NUMBER": "my-project",
                "TFC_GCP_WORKLOAD_POOL_ID": "p",
                "TFC_GCP_WORKLOAD_PROVIDER_ID": "q",
            },
            "TFC_GCP_PROJECT_NUMBER",
        ),
        (
            GCP
            | {
                "TFC_GCP_PROJECT_NUMBER": "1",
                "TFC_GCP_WORKLOAD_POOL_ID": "Pool/x",
                "TFC_GCP_WORKLOAD_PROVIDER_ID": "q",
            },
            "TFC_GCP_WORKLOAD_POOL_ID",
        ),
        (
            GCP | {"TFC_GCP_WORKLOAD_PROVIDER_NAME": PROVIDER, "TFC_GCP_PRINCIPAL_TYPE": "user"},
            "TFC_GCP_PRINCIPAL_TYPE",
        ),
        (
            GCP
            | {
                "TFC_GCP_WORKLOAD_PROVIDER_NAME": PROVIDER,
                "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "not-an-email",
            },
            "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL",
        ),
        # Azure
        (
            {"TFC_AZURE_PROVIDER_AUTH": "true", "TFC_AZURE_RUN_CLIENT_ID": "a b"},
            "TFC_AZURE_RUN_CLIENT_ID",
        ),
        # Vault
        (VAULT, "TFC_VAULT_ADDR"),
        (VAULT | {"TFC_VAULT_ADDR": "vault.example.com"}, "TFC_VAULT_ADDR"),
        (VAULT | {"TFC_VAULT_ADDR": "ftp://vault.example.com"}, "TFC_VAULT_ADDR"),
        (VAULT | {"TFC_VAULT_ADDR": "https://vault.example.com/?x=1"}, "TFC_VAULT_ADDR"),
        (VAULT_OK | {"TFC_VAULT_AUTH_PATH": "../sys"}, "TFC_VAULT_AUTH_PATH"),
        (VAULT_OK | {"TFC_VAULT_AUTH_PATH": "jwt?x"}, "TFC_VAULT_AUTH_PATH"),
        (VAULT_OK | {"TFC_VAULT_ENCODED_CACERT": "not base64!"}, "TFC_VAULT_ENCODED_CACERT"),
        (
            VAULT_OK | {"TFC_VAULT_ENCODED_CACERT": base64.b64encode(b"hello").decode()},
            "TFC_VAULT_ENCODED_CACERT",
        ),
        (VAULT_OK | {"TFC_VAULT_CLIENT_TIMEOUT": "soon"}, "TFC_VAULT_CLIENT_TIMEOUT"),
        (VAULT_OK | {"TFC_VAULT_CLIENT_TIMEOUT": "0"}, "TFC_VAULT_CLIENT_TIMEOUT"),
        (VAULT_OK | {"TFC_VAULT_CLIENT_TIMEOUT": "99999"}, "TFC_VAULT_CLIENT_TIMEOUT"),
        # generic
        ({"TFC_WORKLOAD_IDENTITY_AUDIENCE": "  "}, "TFC_WORKLOAD_IDENTITY_AUDIENCE"),
        ({"TFC_WORKLOAD_IDENTITY_AUDIENCE_X": "a\x01b"}, "TFC_WORKLOAD_IDENTITY_AUDIENCE_X"),
    ],
)
def test_misconfiguration_names_the_variable(env: dict[str, str], variable: str) -> None:
    assert error(env).variable == variable


def test_too_many_configurations() -> None:
    env = {f"TFC_WORKLOAD_IDENTITY_AUDIENCE_T{i:02d}": "aud" for i in range(c.MAX_CONFIGS + 1)}
    err = error(env)
    assert f"at most {c.MAX_CONFIGS}" in err.detail
    env.popitem()
    assert len(configs(env)) == c.MAX_CONFIGS


def test_vault_timeout_accepts_a_seconds_suffix() -> None:
    assert only(VAULT_OK | {"TFC_VAULT_CLIENT_TIMEOUT": "30s"}).fields["client_timeout_s"] == 30
