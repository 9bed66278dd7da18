"""Dynamic provider credentials in a job: what HCP Terraform's runs see, written by the executor.

The server computes the workspace's configurations and mints one fresh token per
configuration and phase (``POST /api/agent/v1/jobs/{id}/workload-identity``); this module turns
that answer into what AWS, GCP, Azure, Vault and third-party providers read:

* **generic** — ``TFC_WORKLOAD_IDENTITY_TOKEN`` (``_<TAG>`` for a tagged audience) in the
  environment, nothing on disk;
* **aws** — a token file and an AWS shared config file whose ``[default]`` profile holds
  ``role_arn`` and ``web_identity_token_file``; the default configuration also sets
  ``AWS_CONFIG_FILE``, ``AWS_SDK_LOAD_CONFIG=1``, ``AWS_ROLE_ARN`` and
  ``AWS_WEB_IDENTITY_TOKEN_FILE``;
* **gcp** — a token file and an ``external_account`` credentials JSON (STS token exchange of a
  JWT read from the file, then service-account impersonation when an e-mail is given); the
  default configuration sets ``GOOGLE_APPLICATION_CREDENTIALS``;
* **azure** — a client-id file and a token file; the default configuration sets
  ``ARM_CLIENT_ID``, ``ARM_OIDC_TOKEN_FILE_PATH`` and ``ARM_USE_OIDC=true``;
* **vault** — the executor logs in at ``<address>/v1/auth/<path>/login`` with the token (namespace
  header, the CA it was given, the client timeout), writes the Vault token to a file, renews it
  while the phase runs and revokes it at the end; the default configuration sets ``VAULT_ADDR``,
  ``VAULT_TOKEN`` and, when given, ``VAULT_NAMESPACE`` and ``VAULT_CACERT``.

Tagged configurations (and the default one) are also handed to Terraform as the
multi-configuration variables ``tfc_<cloud>_dynamic_credentials = {default = {...}, aliases =
{TAG = {...}}}`` in ``zzz_cairn_dynamic_credentials.auto.tfvars.json``, for each such variable the
root module declares (a value for an undeclared variable would only add a warning to every
run). Every file is 0600 in a 0700 directory named after the run (``run_directory``: the
plan and the apply see the same paths) and is deleted when the phase ends, whatever its
outcome. Token values never reach a repr, an error or the executor's log.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import shutil
import ssl
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from cairn.errors import CairnError

Kind = Literal["generic", "aws", "gcp", "azure", "vault"]
KINDS: tuple[Kind, ...] = ("generic", "aws", "gcp", "azure", "vault")
CLOUDS: tuple[Kind, ...] = ("aws", "gcp", "azure", "vault")
TFVARS_FILE = "zzz_cairn_dynamic_credentials.auto.tfvars.json"
MAX_CONFIGS = 64
MAX_TOKEN_CHARS = 20_000  # AWS's limit on a web identity token
MAX_VAULT_ANSWER = 1024 * 1024
GCP_STS_URL = "https://sts.googleapis.com/v1/token"
GCP_IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com/v1"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a type name
_TAG = re.compile(r"^[A-Za-z0-9_]+$")
_RUN_ID = re.compile(r"^run-[A-Za-z0-9]{1,64}$")
_PROVIDER_NAME = re.compile(
    r"^projects/[^/]+/locations/global/workloadIdentityPools/[^/]+/providers/[^/]+$"
)
# The fields of each cloud's multi-configuration variable (HCP Terraform's names).
VARIABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "aws": ("shared_config_file",),
    "gcp": ("credentials",),
    "azure": ("client_id_file_path", "oidc_token_file_path"),
    "vault": ("token_filename", "address", "namespace", "ca_cert_file"),
}


class CredentialsError(CairnError):
    """The job's dynamic credentials cannot be set up; the phase fails with this message
    before Terraform starts."""

    code = "credentials"


# -- the server's answer ----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One configuration of the server's answer (the design's wire format)."""

    kind: Kind
    tag: str | None
    audience: str
    token: str = field(repr=False)
    role_arn: str = ""
    principal_type: Literal["service_account", "workload_pool"] = "service_account"
    workload_provider_name: str = ""
    service_account_email: str | None = None
    client_id: str = ""
    address: str = ""
    namespace: str | None = None
    auth_path: str = "jwt"
    role: str = ""
    encoded_cacert: str | None = field(default=None, repr=False)
    client_timeout_s: float = 60.0

    @property
    def label(self) -> str:
        """How a message names this configuration: ``aws`` or ``aws (tag PROD)``."""
        return self.kind if self.tag is None else f"{self.kind} (tag {self.tag})"


def _text(item: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = item.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{key} must be a non-empty string")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
        raise ValueError(f"{key} holds a control character")
    return value


def _config(item: Any) -> Config:
    if not isinstance(item, Mapping):
        raise ValueError("a configuration is not an object")
    kind = item.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    tag = item.get("tag")
    if tag is not None and (not isinstance(tag, str) or not _TAG.match(tag) or tag == "TYPE"):
        raise ValueError(f"tag {tag!r} is not letters, digits and '_' (and not TYPE)")
    token = _text(item, "token")
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise ValueError("the token is not a compact JWT of at most 20000 characters")
    base: dict[str, Any] = {
        "kind": kind,
        "tag": tag,
        "audience": _text(item, "audience"),
        "token": token,
    }
    if kind == "aws":
        base["role_arn"] = _text(item, "role_arn")
    elif kind == "gcp":
        principal = item.get("principal_type", "service_account")
        if principal not in ("service_account", "workload_pool"):
            raise ValueError(f"principal_type {principal!r} is neither service_account nor pool")
        name = _text(item, "workload_provider_name")
        if not _PROVIDER_NAME.match(name):
            raise ValueError(f"workload_provider_name {name!r} is not a provider resource name")
        email = _text(item, "service_account_email", required=False) or None
        if principal == "service_account" and email is None:
            raise ValueError("a service_account principal needs service_account_email")
        base.update(
            principal_type=principal,
            workload_provider_name=name,
            service_account_email=email if principal == "service_account" else None,
        )
    elif kind == "azure":
        base["client_id"] = _text(item, "client_id")
    elif kind == "vault":
        address = _text(item, "address").rstrip("/")
        if not address.startswith(("https://", "http://")):
            raise ValueError(f"address {address!r} is not an http(s) URL")
        auth_path = _text(item, "auth_path", required=False).strip("/") or "jwt"
        timeout = item.get("client_timeout_s", 60)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError("client_timeout_s must be a positive number")
        base.update(
            address=address,
            namespace=_text(item, "namespace", required=False) or None,
            auth_path=auth_path,
            role=_text(item, "role"),
            encoded_cacert=_text(item, "encoded_cacert", required=False) or None,
            client_timeout_s=float(min(timeout, 3600)),
        )
    return Config(**base)


@dataclass(frozen=True)
class Grant:
    """The server's answer: when the tokens expire and the configurations."""

    expires_at: str
    configs: tuple[Config, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Grant:
        """Parse and check the answer; raises ``CredentialsError`` (never with a token)."""
        try:
            if not isinstance(data, Mapping):
                raise ValueError("the answer is not an object")
            configs = data.get("configs") or []
            if not isinstance(configs, list):
                raise ValueError("configs is not a list")
            if len(configs) > MAX_CONFIGS:
                raise ValueError(f"more than {MAX_CONFIGS} configurations")
            parsed = tuple(_config(item) for item in configs)
        except ValueError as exc:
            raise CredentialsError(
                f"cairn's workload identity answer is malformed: {exc}"
            ) from None
        seen: set[tuple[str, str | None]] = set()
        for config in parsed:
            if (config.kind, config.tag) in seen:
                raise CredentialsError(
                    f"cairn's workload identity answer holds {config.label} twice"
                )
            seen.add((config.kind, config.tag))
        return cls(str(data.get("expires_at") or ""), parsed)

    @property
    def secrets(self) -> list[str]:
        return [c.token for c in self.configs]

    def __repr__(self) -> str:
        return f"Grant(expires_at={self.expires_at!r}, configs={[c.label for c in self.configs]})"


# -- what a file holds (pure, golden-tested) --------------------------------------------------


def aws_shared_config(role_arn: str, token_file: Path) -> str:
    """The AWS shared config file: the ``[default]`` profile assumes ``role_arn`` with the
    web identity token read from ``token_file`` (what every AWS SDK's chain resolves)."""
    return f"[default]\nrole_arn = {role_arn}\nweb_identity_token_file = {token_file}\n"


def gcp_external_account(
    config: Config,
    token_file: Path,
    *,
    sts_url: str = GCP_STS_URL,
    iam_url: str = GCP_IAM_CREDENTIALS_URL,
) -> dict[str, Any]:
    """Google's ``external_account`` credentials: exchange the JWT in ``token_file`` at STS for
    the workload identity provider, then (service-account principal) impersonate the account."""
    doc: dict[str, Any] = {
        "type": "external_account",
        "audience": f"//iam.googleapis.com/{config.workload_provider_name}",
        "subject_token_type": JWT_TOKEN_TYPE,
        "token_url": sts_url,
        "credential_source": {"file": str(token_file), "format": {"type": "text"}},
    }
    if config.principal_type == "service_account" and config.service_account_email:
        email = quote(config.service_account_email, safe="@.")
        doc["service_account_impersonation_url"] = (
            f"{iam_url.rstrip('/')}/projects/-/serviceAccounts/{email}:generateAccessToken"
        )
    return doc


def declared_variables(workdir: Path) -> set[str]:
    """The ``tfc_<cloud>_dynamic_credentials`` variables the root module in ``workdir``
    declares (native ``.tf`` and JSON ``.tf.json`` files)."""
    wanted = {f"tfc_{cloud}_dynamic_credentials" for cloud in CLOUDS}
    found: set[str] = set()
    native = re.compile(r'\bvariable\s+"?(tfc_(?:aws|gcp|azure|vault)_dynamic_credentials)"?\s*\{')
    for path in sorted(workdir.iterdir()):
        if not path.is_file():
            continue
        try:
            if path.name.endswith(".tf"):
                found.update(native.findall(path.read_text(encoding="utf-8", errors="replace")))
            elif path.name.endswith(".tf.json"):
                doc = json.loads(path.read_text(encoding="utf-8"))
                blocks = doc.get("variable") if isinstance(doc, dict) else None
                for block in blocks if isinstance(blocks, list) else [blocks]:
                    if isinstance(block, dict):
                        found.update(name for name in block if name in wanted)
        except (OSError, ValueError):
            continue  # Terraform itself will report an unreadable file
    return found & wanted


# -- Vault ------------------------------------------------------------------------------------


class VaultSession:
    """A Vault token obtained with a workload identity token: login, renewals, revocation."""

    def __init__(
        self,
        config: Config,
        *,
        ca_file: Path | None,
        transport: httpx.BaseTransport | None = None,
        notify: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.config = config
        self._notify = notify
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        headers = {"User-Agent": "cairn-agent"}
        if config.namespace:
            headers["X-Vault-Namespace"] = config.namespace
        self._http = httpx.Client(
            base_url=config.address,
            verify=verify,
            timeout=httpx.Timeout(config.client_timeout_s),
            transport=transport,
            headers=headers,
            follow_redirects=False,
        )
        self.token = ""
        self.lease_s = 0.0
        self.renewable = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"VaultSession(address={self.config.address!r}, role={self.config.role!r})"

    def _post(self, path: str, body: Mapping[str, Any] | None, token: str = "") -> httpx.Response:
        """POST to Vault; the answer is read up to ``MAX_VAULT_ANSWER`` bytes."""
        headers = {"X-Vault-Token": token} if token else {}
        request = self._http.build_request(
            "POST", path, json=body if body is not None else {}, headers=headers
        )
        response = self._http.send(request, stream=True)
        try:
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > MAX_VAULT_ANSWER:
                    raise CredentialsError(
                        f"Vault at {self.config.address}: the answer to {path} is larger than "
                        f"{MAX_VAULT_ANSWER} bytes"
                    )
        finally:
            response.close()
        return httpx.Response(response.status_code, content=bytes(data))

    def _errors(self, response: httpx.Response) -> str:
        try:
            errors = response.json().get("errors")
        except (ValueError, AttributeError):
            errors = None
        if isinstance(errors, list) and errors:
            text = "; ".join(str(e) for e in errors)[:500]
        else:
            text = response.text[:200].strip()
        for secret in (self.config.token, self.token):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _read_auth(self, response: httpx.Response) -> None:
        try:
            auth = response.json()["auth"]
            token = auth["client_token"]
            lease = float(auth.get("lease_duration") or 0)
            renewable = bool(auth.get("renewable"))
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(
                f"Vault at {self.config.address} answered its login without a token"
            ) from None
        if not isinstance(token, str) or not token:
            raise CredentialsError(f"Vault at {self.config.address} answered an empty token")
        self.token, self.lease_s, self.renewable = token, lease, renewable

    def login(self) -> str:
        """Log in at ``auth/<path>/login`` with the role and the JWT; return the Vault token."""
        path = f"/v1/auth/{self.config.auth_path}/login"
        where = f"{self.config.address}{path}"
        try:
            response = self._post(path, {"role": self.config.role, "jwt": self.config.token})
        except httpx.HTTPError as exc:
            raise CredentialsError(
                f"Vault login for {self.config.label} at {where} failed: {type(exc).__name__}"
                f"{': ' + str(exc) if str(exc) else ''}; check TFC_VAULT_ADDR, "
                "TFC_VAULT_ENCODED_CACERT and TFC_VAULT_CLIENT_TIMEOUT"
            ) from None
        if response.status_code != 200:
            raise CredentialsError(
                f"Vault login for {self.config.label} at {where} as role "
                f"{self.config.role!r} was refused ({response.status_code}): "
                f"{self._errors(response)}; check the role's bound_audiences and bound_claims"
            )
        self._read_auth(response)
        return self.token

    def start_renewing(self) -> None:
        """Renew the token in the background at half its lease, while the phase runs."""
        if not self.renewable or self.lease_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._renew_loop, name="vault-renew", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(1.0, self.lease_s / 2)):
            try:
                response = self._post("/v1/auth/token/renew-self", {}, self.token)
            except httpx.HTTPError as exc:
                self._notify(
                    f"Warning: renewing the Vault token of {self.config.label} failed "
                    f"({type(exc).__name__}); retrying"
                )
                continue
            if response.status_code != 200:
                self._notify(
                    f"Warning: Vault refused to renew the token of {self.config.label} "
                    f"({response.status_code}): {self._errors(response)}"
                )
                return
            try:
                auth = response.json()["auth"]
                self.lease_s = float(auth.get("lease_duration") or self.lease_s)
                if not auth.get("renewable", True):
                    return
            except (ValueError, KeyError, TypeError):
                continue

    def close(self) -> None:
        """Stop renewing and revoke the token (a failure is reported, never raised)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.client_timeout_s + 5)
        try:
            if self.token:
                response = self._post("/v1/auth/token/revoke-self", {}, self.token)
                if response.status_code not in (200, 204):
                    self._notify(
                        f"Warning: Vault refused to revoke the token of {self.config.label} "
                        f"({response.status_code}): {self._errors(response)}"
                    )
        except (httpx.HTTPError, CredentialsError) as exc:
            self._notify(
                f"Warning: revoking the Vault token of {self.config.label} failed "
                f"({type(exc).__name__}); it expires with its lease"
            )
        finally:
            self._http.close()


# -- the injection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """Where Google's token exchange and impersonation are (Private Service Connect or a test
    may move them)."""

    gcp_sts_url: str = GCP_STS_URL
    gcp_iam_url: str = GCP_IAM_CREDENTIALS_URL


def run_directory(parent: Path | None, run_id: str) -> Path:
    """Where a run's credential files live: the same path in its plan and its apply.

    Terraform stores the variables of a plan in the saved plan, and an apply of that plan uses
    them: a ``tfc_<cloud>_dynamic_credentials`` path handed to the plan must still name the
    apply's files. So the directory is named after the run (under the executor's work root),
    not after the job; the apply writes its own fresh files there."""
    if not _RUN_ID.match(run_id):
        raise CredentialsError(f"the run ID {run_id[:80]!r} is malformed")
    base = parent if parent is not None else Path(tempfile.gettempdir())
    return base / f"cairn-{run_id}-credentials"


def _private_directory(directory: Path) -> None:
    """Create ``directory`` 0700, or take over this user's own leftover of an earlier attempt;
    never write into a directory someone else made (a shared /tmp)."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise CredentialsError(
                f"{directory} exists and is not this agent's own directory; remove it "
                "(credential files are written only into a directory the agent made)"
            ) from None
        shutil.rmtree(directory)
        os.mkdir(directory, 0o700)
    os.chmod(directory, 0o700)


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


class Injection:
    """The dynamic credentials of one phase on disk and in the environment.

    ``open()`` writes the files (0600, under ``directory``, made 0700), logs in to Vault and
    starts the renewals; ``env`` and ``secrets`` are then what Terraform's environment gets and
    what the log must mask. ``close()`` stops the renewals, revokes the Vault tokens and
    deletes every file; it is safe to call more than once and after a failed ``open()``.
    """

    def __init__(
        self,
        grant: Grant,
        directory: Path,
        *,
        workdir: Path,
        endpoints: Endpoints = Endpoints(),
        vault_transport: httpx.BaseTransport | None = None,
        notify: Callable[[str], None] = lambda _line: None,
        on_secret: Callable[[Iterable[str]], None] = lambda _values: None,
    ) -> None:
        self.grant = grant
        self.directory = directory
        self.workdir = workdir
        self.endpoints = endpoints
        self._vault_transport = vault_transport
        self._notify = notify
        self._on_secret = on_secret
        self.env: dict[str, str] = {}
        self.secrets: list[str] = list(grant.secrets)
        self.files: list[Path] = []
        self.tfvars_file: Path | None = None
        self.variables: dict[str, dict[str, Any]] = {}
        self._vault: list[VaultSession] = []
        self._opened = False
        self._made_directory = False

    def __repr__(self) -> str:
        return f"Injection(configs={[c.label for c in self.grant.configs]})"

    def __enter__(self) -> Injection:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _file(self, name: str, text: str) -> Path:
        path = _write_private(self.directory / name, text)
        self.files.append(path)
        return path

    def open(self) -> Injection:
        if self._opened:
            return self
        self._opened = True
        self._on_secret(self.secrets)
        if not self.grant.configs:
            return self
        per_cloud: dict[str, dict[str, Any]] = {}
        try:
            _private_directory(self.directory)
            self._made_directory = True
            for config in self.grant.configs:
                values = self._one(config)
                if values is not None:
                    cloud = per_cloud.setdefault(config.kind, {"default": None, "aliases": {}})
                    if config.tag is None:
                        cloud["default"] = values
                    else:
                        cloud["aliases"][config.tag] = values
            self._write_variables(per_cloud)
        except BaseException:
            self.close()
            raise
        return self

    def _one(self, config: Config) -> dict[str, str] | None:
        """Write one configuration's files; set its environment when it is the default one;
        return its multi-configuration variable value (``None`` for generic)."""
        name = f"{config.kind}-{config.tag or 'default'}"
        default = config.tag is None
        if config.kind == "generic":
            key = "TFC_WORKLOAD_IDENTITY_TOKEN" + (f"_{config.tag}" if config.tag else "")
            self.env[key] = config.token
            return None
        if config.kind == "aws":
            token_file = self._file(f"{name}.jwt", config.token)
            shared = self._file(
                f"{name}.aws-config", aws_shared_config(config.role_arn, token_file)
            )
            if default:
                self.env.update(
                    AWS_CONFIG_FILE=str(shared),
                    AWS_SDK_LOAD_CONFIG="1",
                    AWS_ROLE_ARN=config.role_arn,
                    AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
                )
            return {"shared_config_file": str(shared)}
        if config.kind == "gcp":
            token_file = self._file(f"{name}.jwt", config.token)
            doc = gcp_external_account(
                config,
                token_file,
                sts_url=self.endpoints.gcp_sts_url,
                iam_url=self.endpoints.gcp_iam_url,
            )
            creds = self._file(f"{name}.gcp-credentials.json", json.dumps(doc, indent=2) + "\n")
            if default:
                self.env["GOOGLE_APPLICATION_CREDENTIALS"] = str(creds)
            return {"credentials": str(creds)}
        if config.kind == "azure":
            client_id_file = self._file(f"{name}.client-id", config.client_id)
            token_file = self._file(f"{name}.jwt", config.token)
            if default:
                self.env.update(
                    ARM_CLIENT_ID=config.client_id,
                    ARM_OIDC_TOKEN_FILE_PATH=str(token_file),
                    ARM_USE_OIDC="true",
                )
            return {
                "client_id_file_path": str(client_id_file),
                "oidc_token_file_path": str(token_file),
            }
        return self._vault_login(config, name)

    def _vault_login(self, config: Config, name: str) -> dict[str, str]:
        ca_file: Path | None = None
        if config.encoded_cacert:
            try:
                pem = base64.b64decode(config.encoded_cacert, validate=True).decode("ascii")
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialsError(
                    f"the CA certificate of {config.label} is not base64 of a PEM file; "
                    "fix TFC_VAULT_ENCODED_CACERT"
                ) from None
            if "-----BEGIN CERTIFICATE-----" not in pem:
                raise CredentialsError(
                    f"the CA certificate of {config.label} holds no PEM certificate; "
                    "fix TFC_VAULT_ENCODED_CACERT"
                )
            ca_file = self._file(f"{name}.ca.pem", pem)
        try:
            session = VaultSession(
                config, ca_file=ca_file, transport=self._vault_transport, notify=self._notify
            )
        except (ssl.SSLError, OSError):
            raise CredentialsError(
                f"the CA certificate of {config.label} cannot be loaded; "
                "fix TFC_VAULT_ENCODED_CACERT"
            ) from None
        self._vault.append(session)
        token = session.login()
        self.secrets.append(token)
        self._on_secret([token])
        token_file = self._file(f"{name}.vault-token", token)
        session.start_renewing()
        if config.tag is None:
            self.env.update(VAULT_ADDR=config.address, VAULT_TOKEN=token)
            if config.namespace:
                self.env["VAULT_NAMESPACE"] = config.namespace
            if ca_file is not None:
                self.env["VAULT_CACERT"] = str(ca_file)
        return {
            "token_filename": str(token_file),
            "address": config.address,
            "namespace": config.namespace or "",
            "ca_cert_file": str(ca_file) if ca_file is not None else "",
        }

    def _write_variables(self, per_cloud: Mapping[str, dict[str, Any]]) -> None:
        declared = declared_variables(self.workdir)
        doc: dict[str, Any] = {}
        for cloud, value in per_cloud.items():
            variable = f"tfc_{cloud}_dynamic_credentials"
            if variable not in declared:
                continue
            if value["default"] is None:  # only tagged ones: the type still needs a default
                value = {**value, "default": dict.fromkeys(VARIABLE_FIELDS[cloud], "")}
            doc[variable] = value
        self.variables = doc
        if doc:
            path = self.workdir / TFVARS_FILE
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # the configuration's own file of that name is replaced
            self.tfvars_file = _write_private(path, json.dumps(doc, indent=2) + "\n")

    def close(self) -> None:
        sessions, self._vault = self._vault, []
        for session in sessions:
            session.close()
        if self.tfvars_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.tfvars_file.unlink()
            self.tfvars_file = None
        for path in self.files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.files = []
        if self._made_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._made_directory = False
