"""Dynamic provider credentials: which workload-identity tokens a job gets, computed from the
job's environment variables exactly as HCP Terraform reads them (reference INJ-01…05).

Pure: no I/O, no clock. ``configs_for_job`` takes the job's merged environment variables
(``Variables.for_job(...).env``: variable sets and workspace variables, precedence applied),
the phase, whether the run is speculative and the workspace's ``speculative-plan-credentials``
setting, and answers the configurations to mint a token for, or raises ``CredentialsError``
(422, code ``credentials``) whose message names the variable to fix. The agent protocol's
``workload-identity`` endpoint mints one token per configuration; the executor turns them into
files, environment variables and ``tfc_<cloud>_dynamic_credentials``.

What is read (each cloud also with a ``_<TAG>`` suffix for a tagged alias, and, except
``*_PROVIDER_AUTH``, a ``TFC_DEFAULT_`` form that applies to every configuration):

* generic: ``TFC_WORKLOAD_IDENTITY_AUDIENCE[_TAG]`` (no token without it, INJ-03);
* AWS: ``TFC_AWS_PROVIDER_AUTH``, ``TFC_AWS_{RUN,PLAN,APPLY}_ROLE_ARN``;
* GCP: ``TFC_GCP_PROVIDER_AUTH``, ``TFC_GCP_PRINCIPAL_TYPE``, ``TFC_GCP_WORKLOAD_PROVIDER_NAME``
  or ``TFC_GCP_PROJECT_NUMBER`` + ``TFC_GCP_WORKLOAD_POOL_ID`` + ``TFC_GCP_WORKLOAD_PROVIDER_ID``,
  ``TFC_GCP_{RUN,PLAN,APPLY}_SERVICE_ACCOUNT_EMAIL``;
* Azure: ``TFC_AZURE_PROVIDER_AUTH``, ``TFC_AZURE_{RUN,PLAN,APPLY}_CLIENT_ID``;
* Vault: ``TFC_VAULT_PROVIDER_AUTH``, ``TFC_VAULT_ADDR``, ``TFC_VAULT_{RUN,PLAN,APPLY}_ROLE``,
  ``TFC_VAULT_NAMESPACE``, ``TFC_VAULT_AUTH_PATH``, ``TFC_VAULT_ENCODED_CACERT``,
  ``TFC_VAULT_CLIENT_TIMEOUT``;
* every cloud: ``TFC_<CLOUD>_WORKLOAD_IDENTITY_AUDIENCE`` (else the cloud's default audience).

A phase-specific value is looked up in HCP Terraform's order: phase-specific tagged
(``TFC_AWS_PLAN_ROLE_ARN_TAG``) → phase-specific default (``TFC_DEFAULT_AWS_PLAN_ROLE_ARN``) →
run-level tagged (``TFC_AWS_RUN_ROLE_ARN_TAG``) → run-level default
(``TFC_DEFAULT_AWS_RUN_ROLE_ARN``); for the untagged configuration "tagged" is the plain name.
Any other value: tagged → default. An empty value counts as unset. Tags are
``[A-Za-z0-9_]+`` and ``TYPE`` is reserved.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

from cairn.errors import Invalid
from cairn.organizations.model import SPECULATIVE_PLAN_CREDENTIALS

Kind = Literal["generic", "aws", "gcp", "azure", "vault"]
Phase = Literal["plan", "apply"]
TokenPhase = Literal["plan", "apply", "speculative_plan"]
Mode = Literal["same", "distinct_subject", "none"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)
assert MODES == SPECULATIVE_PLAN_CREDENTIALS  # one list, kept by organizations.model

CLOUDS: Final[dict[Kind, str]] = {"aws": "AWS", "gcp": "GCP", "azure": "AZURE", "vault": "VAULT"}
DEFAULT_AUDIENCES: Final[dict[Kind, str]] = {
    "aws": "aws.workload.identity",
    "azure": "api://AzureADTokenExchange",
    "vault": "vault.workload.identity",
}
GENERIC_AUDIENCE: Final = "TFC_WORKLOAD_IDENTITY_AUDIENCE"
RESERVED_TAGS: Final = frozenset({"TYPE"})
MAX_CONFIGS: Final = 32  # configurations per job (each is one signed token per phase)
MAX_VALUE: Final = 512  # characters of an audience or an identity value
MAX_CACERT: Final = 64 * 1024  # characters of TFC_VAULT_ENCODED_CACERT
GCP_PRINCIPAL_TYPES: Final = ("service_account", "workload_pool")
VAULT_DEFAULT_AUTH_PATH: Final = "jwt"
VAULT_DEFAULT_TIMEOUT_S: Final = 60
VAULT_MAX_TIMEOUT_S: Final = 3600

_TAG = re.compile(r"[A-Za-z0-9_]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_AWS_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_GCP_PROVIDER_NAME = re.compile(
    r"projects/([0-9]+)/locations/global/workloadIdentityPools/([^/\s]+)/providers/([^/\s]+)"
)
_GCP_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_VAULT_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_TIMEOUT = re.compile(r"([0-9]{1,6})s?")


class CredentialsError(Invalid):
    """A misconfiguration of dynamic credentials: the phase fails before Terraform starts with
    this message (which names ``variable``, the one to fix) as its last log line."""

    code = "credentials"

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


@dataclass(frozen=True)
class CredentialConfig:
    """One token to mint and what the executor needs besides it (wire format:
    ``wire(token)``). Holds no secret: identity values (role ARNs, client IDs, Vault
    addresses) are configuration, not credentials."""

    kind: Kind
    tag: str | None
    audience: str
    fields: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        """For messages and audit events: ``aws`` or ``aws (tag PROD)``."""
        return self.kind if self.tag is None else f"{self.kind} (tag {self.tag})"

    def wire(self, token: str) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tag": self.tag,
            "audience": self.audience,
            "token": token,
            **self.fields,
        }


def token_phase(phase: Phase, *, speculative: bool, mode: Mode) -> TokenPhase:
    """The ``run_phase`` a token carries (in ``sub`` and ``terraform_run_phase``): the job's
    phase, except a speculative plan under ``distinct_subject``: ``speculative_plan``, so that
    trust policies written for ``…:run_phase:plan`` fail closed."""
    if speculative and phase == "plan" and mode == "distinct_subject":
        return "speculative_plan"
    return phase


def check_mode(value: object, pointer: str) -> Mode:
    """A ``speculative-plan-credentials`` value (Invalid at ``pointer`` otherwise)."""
    if value not in MODES:
        raise Invalid(
            f"speculative-plan-credentials must be one of {', '.join(MODES)}, not {value!r}",
            pointer=pointer,
        )
    return value  # narrowed to MODES by the check above


def configs_for_job(
    env: Iterable[tuple[str, str]] | Mapping[str, str],
    *,
    phase: Phase,
    speculative: bool,
    mode: Mode,
) -> list[CredentialConfig]:
    """The configurations to mint a token for, in a stable order (generic, AWS, GCP, Azure,
    Vault; untagged first, then tags in order). Raises CredentialsError naming the variable
    to fix. ``mode`` only matters for a speculative plan: ``none`` refuses one whose
    variables ask for credentials."""
    if phase not in ("plan", "apply"):
        raise ValueError(f"phase {phase!r} is not plan or apply")
    check_mode(mode, "/speculative-plan-credentials")
    values = _Env(env)
    wanted = _requested(values)
    if wanted and speculative and phase == "plan" and mode == "none":
        variable = wanted[0][2]
        raise CredentialsError(
            variable,
            f"{variable} asks for workload-identity credentials, but this workspace's "
            "speculative-plan-credentials setting is 'none': speculative plans get no "
            f"credentials. Remove {variable} from what this workspace's speculative plans "
            "see, or change the setting to 'distinct_subject' (a subject ending in "
            "run_phase:speculative_plan) or 'same'",
        )
    if len(wanted) > MAX_CONFIGS:
        raise CredentialsError(
            wanted[MAX_CONFIGS][2],
            f"{len(wanted)} credential configurations are asked for; a job gets at most "
            f"{MAX_CONFIGS} ({wanted[MAX_CONFIGS][2]} is one too many). Remove some "
            "TFC_*_PROVIDER_AUTH_<TAG> or TFC_WORKLOAD_IDENTITY_AUDIENCE_<TAG> variables",
        )
    return [_build(values, kind, tag, phase) for kind, tag, _ in wanted]


# ---- reading the variables ---------------------------------------------------------------


class _Env:
    """The job's environment variables, looked up by name (empty values count as unset)."""

    def __init__(self, env: Iterable[tuple[str, str]] | Mapping[str, str]) -> None:
        pairs = env.items() if isinstance(env, Mapping) else env
        self.values: dict[str, str] = {}
        for key, value in pairs:
            self.values[key] = value.strip()

    def get(self, name: str) -> str | None:
        value = self.values.get(name)
        return value or None

    def first(self, names: list[str]) -> tuple[str, str] | None:
        """The first of ``names`` that is set: (name, value)."""
        for name in names:
            value = self.get(name)
            if value is not None:
                return name, value
        return None


def _tagged(base: str, tag: str | None) -> str:
    return base if tag is None else f"{base}_{tag}"


def _check_tag(variable: str, tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise CredentialsError(
            variable,
            f"{variable}: the tag {tag!r} after the last known part of the name must be "
            "letters, digits and underscores only (e.g. TFC_AWS_PROVIDER_AUTH_PROD); rename "
            "the variable",
        )
    if tag in RESERVED_TAGS:
        raise CredentialsError(
            variable,
            f"{variable}: the tag {tag} is reserved (HCP Terraform uses it internally); "
            "rename the variable with another tag",
        )
    return tag


def _flag(variable: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise CredentialsError(
            variable, f"{variable} must be true or false, not {value[:40]!r}; fix its value"
        )
    return lowered == "true"


def _requested(env: _Env) -> list[tuple[Kind, str | None, str]]:
    """(kind, tag, the variable that asks for it) for every configuration asked for, in the
    order configs are answered; tags checked (INJ-05)."""
    found: list[tuple[Kind, str | None, str]] = []
    generic_prefix = f"{GENERIC_AUDIENCE}_"
    if GENERIC_AUDIENCE in env.values:
        found.append(("generic", None, GENERIC_AUDIENCE))
    for name in sorted(env.values):
        if name.startswith(generic_prefix):
            found.append(("generic", _check_tag(name, name[len(generic_prefix) :]), name))
    for kind, cloud in CLOUDS.items():
        enable = f"TFC_{cloud}_PROVIDER_AUTH"
        if enable in env.values and _flag(enable, env.values[enable]):
            found.append((kind, None, enable))
        for name in sorted(env.values):
            if name.startswith(f"{enable}_"):
                tag = _check_tag(name, name[len(enable) + 1 :])
                if _flag(name, env.values[name]):
                    found.append((kind, tag, name))
    return found


def _plain(variable: str, value: str, what: str) -> str:
    if len(value) > MAX_VALUE or _CONTROL.search(value):
        raise CredentialsError(
            variable,
            f"{variable} is not a valid {what}: at most {MAX_VALUE} characters, no control "
            "characters; fix its value",
        )
    return value


class _Config:
    """Lookups for one configuration (a cloud, a tag or the untagged one, a phase)."""

    def __init__(self, env: _Env, kind: Kind, tag: str | None, phase: Phase) -> None:
        self.env = env
        self.kind = kind
        self.cloud = CLOUDS[kind]
        self.tag = tag
        self.phase = phase.upper()

    def enable(self) -> str:
        return _tagged(f"TFC_{self.cloud}_PROVIDER_AUTH", self.tag)

    def value(self, name: str) -> tuple[str, str] | None:
        """A value that is the same for every phase: tagged → default."""
        return self.env.first(
            [_tagged(f"TFC_{self.cloud}_{name}", self.tag), f"TFC_DEFAULT_{self.cloud}_{name}"]
        )

    def phased(self, name: str) -> tuple[str, str] | None:
        """A phase-specific value, in HCP Terraform's lookup order."""
        c, p = self.cloud, self.phase
        return self.env.first(
            [
                _tagged(f"TFC_{c}_{p}_{name}", self.tag),
                f"TFC_DEFAULT_{c}_{p}_{name}",
                _tagged(f"TFC_{c}_RUN_{name}", self.tag),
                f"TFC_DEFAULT_{c}_RUN_{name}",
            ]
        )

    def missing(self, name: str, what: str, *, phased: bool) -> CredentialsError:
        """The error for a required value that is not set: names the variable to set."""
        c = self.cloud
        if phased:
            variable = _tagged(f"TFC_{c}_RUN_{name}", self.tag)
            also = (
                f"{_tagged(f'TFC_{c}_{self.phase}_{name}', self.tag)} for the "
                f"{self.phase.lower()} phase only, or TFC_DEFAULT_{c}_RUN_{name} for every "
                "configuration"
            )
        else:
            variable = _tagged(f"TFC_{c}_{name}", self.tag)
            also = f"TFC_DEFAULT_{c}_{name} for every configuration"
        return CredentialsError(
            variable,
            f"{self.enable()} is true but no {what} is set for the {self.phase.lower()} "
            f"phase: set {variable} (or {also})",
        )

    def audience(self, default: str) -> str:
        found = self.value("WORKLOAD_IDENTITY_AUDIENCE")
        if found is None:
            return default
        return _plain(found[0], found[1], "audience")


def _build(env: _Env, kind: Kind, tag: str | None, phase: Phase) -> CredentialConfig:
    if kind == "generic":
        variable = _tagged(GENERIC_AUDIENCE, tag)
        value = env.get(variable)
        if value is None:
            raise CredentialsError(
                variable,
                f"{variable} is empty: set the audience the token is for, or delete the variable",
            )
        return CredentialConfig("generic", tag, _plain(variable, value, "audience"))
    cfg = _Config(env, kind, tag, phase)
    if kind == "aws":
        return _aws(cfg)
    if kind == "gcp":
        return _gcp(cfg)
    if kind == "azure":
        return _azure(cfg)
    return _vault(cfg)


def _aws(cfg: _Config) -> CredentialConfig:
    found = cfg.phased("ROLE_ARN")
    if found is None:
        raise cfg.missing("ROLE_ARN", "AWS role ARN", phased=True)
    variable, arn = found
    if not _AWS_ROLE_ARN.fullmatch(arn):
        raise CredentialsError(
            variable,
            f"{variable} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>); "
            "fix its value",
        )
    audience = cfg.audience(DEFAULT_AUDIENCES["aws"])
    return CredentialConfig("aws", cfg.tag, audience, {"role_arn": arn})


def _gcp(cfg: _Config) -> CredentialConfig:
    principal = cfg.value("PRINCIPAL_TYPE")
    principal_type = "service_account" if principal is None else principal[1]
    if principal is not None and principal_type not in GCP_PRINCIPAL_TYPES:
        raise CredentialsError(
            principal[0],
            f"{principal[0]} must be service_account or workload_pool, not "
            f"{principal_type[:40]!r}; fix its value",
        )
    named = cfg.value("WORKLOAD_PROVIDER_NAME")
    if named is not None:
        variable, provider_name = named
        if not _GCP_PROVIDER_NAME.fullmatch(provider_name):
            raise CredentialsError(
                variable,
                f"{variable} must look like projects/<project number>/locations/global/"
                "workloadIdentityPools/<pool ID>/providers/<provider ID> (the project "
                "number, digits, not the project ID); fix its value",
            )
    else:
        parts: list[str] = []
        for name, what, pattern in (
            ("PROJECT_NUMBER", "GCP project number", re.compile(r"[0-9]{1,20}")),
            ("WORKLOAD_POOL_ID", "workload identity pool ID", _GCP_ID),
            ("WORKLOAD_PROVIDER_ID", "workload identity pool provider ID", _GCP_ID),
        ):
            found = cfg.value(name)
            if found is None:
                raise CredentialsError(
                    _tagged(f"TFC_GCP_{name}", cfg.tag),
                    f"{cfg.enable()} is true but no {what} is set: set "
                    f"{_tagged(f'TFC_GCP_{name}', cfg.tag)} (or "
                    f"{_tagged('TFC_GCP_WORKLOAD_PROVIDER_NAME', cfg.tag)} with the full "
                    "provider name)",
                )
            if not pattern.fullmatch(found[1]):
                raise CredentialsError(
                    found[0],
                    f"{found[0]} is not a valid {what} ("
                    + ("digits" if name == "PROJECT_NUMBER" else "lowercase letters, digits, -")
                    + "); fix its value",
                )
            parts.append(found[1])
        number, pool, provider = parts
        provider_name = (
            f"projects/{number}/locations/global/workloadIdentityPools/{pool}/providers/{provider}"
        )
    email: str | None = None
    if principal_type == "service_account":
        found = cfg.phased("SERVICE_ACCOUNT_EMAIL")
        if found is None:
            raise cfg.missing("SERVICE_ACCOUNT_EMAIL", "service account email", phased=True)
        if not _EMAIL.fullmatch(found[1]) or len(found[1]) > MAX_VALUE:
            raise CredentialsError(
                found[0], f"{found[0]} is not a service account email; fix its value"
            )
        email = found[1]
    audience = cfg.audience(f"//iam.googleapis.com/{provider_name}")
    return CredentialConfig(
        "gcp",
        cfg.tag,
        audience,
        {
            "principal_type": principal_type,
            "workload_provider_name": provider_name,
            "service_account_email": email,
        },
    )


def _azure(cfg: _Config) -> CredentialConfig:
    found = cfg.phased("CLIENT_ID")
    if found is None:
        raise cfg.missing("CLIENT_ID", "Azure client ID", phased=True)
    variable, client_id = found
    if any(ch.isspace() for ch in client_id):
        raise CredentialsError(variable, f"{variable} must not contain spaces; fix its value")
    audience = cfg.audience(DEFAULT_AUDIENCES["azure"])
    return CredentialConfig(
        "azure", cfg.tag, audience, {"client_id": _plain(variable, client_id, "client ID")}
    )


def _vault(cfg: _Config) -> CredentialConfig:
    found = cfg.value("ADDR")
    if found is None:
        raise cfg.missing("ADDR", "Vault address", phased=False)
    variable, address = found
    parts = urlsplit(address)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or len(address) > MAX_VALUE
    ):
        raise CredentialsError(
            variable,
            f"{variable} must be the Vault server's URL (https://vault.example.com:8200); "
            "fix its value",
        )
    role = cfg.phased("ROLE")
    if role is None:
        raise cfg.missing("ROLE", "Vault JWT role", phased=True)
    namespace = cfg.value("NAMESPACE")
    if namespace is not None:
        _plain(namespace[0], namespace[1], "Vault namespace")
    auth_path = VAULT_DEFAULT_AUTH_PATH
    path = cfg.value("AUTH_PATH")
    if path is not None:
        auth_path = path[1].strip("/")
        if not _VAULT_PATH.fullmatch(auth_path) or ".." in auth_path.split("/"):
            raise CredentialsError(
                path[0],
                f"{path[0]} must be the mount path of Vault's JWT auth method (e.g. jwt or "
                "tfc/jwt: letters, digits, _ . - separated by /); fix its value",
            )
    cacert: str | None = None
    encoded = cfg.value("ENCODED_CACERT")
    if encoded is not None:
        cacert = _cacert(*encoded)
    timeout = VAULT_DEFAULT_TIMEOUT_S
    raw_timeout = cfg.value("CLIENT_TIMEOUT")
    if raw_timeout is not None:
        match = _TIMEOUT.fullmatch(raw_timeout[1])
        if match is None or not 1 <= int(match.group(1)) <= VAULT_MAX_TIMEOUT_S:
            raise CredentialsError(
                raw_timeout[0],
                f"{raw_timeout[0]} must be a number of seconds from 1 to "
                f"{VAULT_MAX_TIMEOUT_S} (e.g. 60); fix its value",
            )
        timeout = int(match.group(1))
    audience = cfg.audience(DEFAULT_AUDIENCES["vault"])
    return CredentialConfig(
        "vault",
        cfg.tag,
        audience,
        {
            "address": address.rstrip("/"),
            "namespace": None if namespace is None else namespace[1],
            "auth_path": auth_path,
            "role": _plain(role[0], role[1], "Vault role"),
            "encoded_cacert": cacert,
            "client_timeout_s": timeout,
        },
    )


def _cacert(variable: str, value: str) -> str:
    """``TFC_VAULT_ENCODED_CACERT``: base64 of one or more PEM certificates."""
    problem = f"{variable} must be the base64 encoding of the PEM CA certificate(s)"
    if len(value) > MAX_CACERT:
        raise CredentialsError(variable, f"{problem}, at most {MAX_CACERT} characters")
    try:
        pem = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError(variable, f"{problem} (it is not base64); fix its value") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise CredentialsError(
            variable, f"{problem} (it decodes to no PEM certificate); fix its value"
        )
    return "".join(value.split())
