"""Terraform for one job: the binary, the files written next to the configuration, the
environment, the command lines, and the resource counts of a plan.

Nothing here runs a process; ``executor.job`` does. Everything is a pure function of its
arguments so that it can be tested against the real Terraform 1.0.3 without a server.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.errors import CairnError

OVERRIDE_FILE = "zzz_cairn_override.tf"
TFVARS_FILE = "zzz_cairn.auto.tfvars"
PLAN_FILE = "tfplan"
# Environment variables a job inherits from the executor's own environment; everything else
# (CAIRN_SECRET_KEY, database URLs, cloud credentials of the host) stays out of user code.
INHERITED_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION = re.compile(r"^[0-9A-Za-z.+-]+$")


class TerraformSetupError(CairnError):
    """The job cannot run Terraform as asked (no binary, a variable Terraform cannot take);
    the message is one line for the run's log."""

    code = "terraform-setup"


# -- the binary -------------------------------------------------------------------------------


def find_terraform(version: str, *, search_dir: Path | None, path: str | None = None) -> Path:
    """The Terraform binary for ``version``.

    With ``search_dir`` (``CAIRN_TERRAFORM_PATH``): ``<dir>/terraform-<version>``, else
    ``<dir>/terraform``. Without it: ``terraform`` on ``path`` (default: ``$PATH``). Raises
    ``TerraformSetupError`` naming every place looked at.
    """
    if search_dir is not None:
        candidates = []
        if version and version != "latest" and _VERSION.match(version):
            candidates.append(search_dir / f"terraform-{version}")
        candidates.append(search_dir / "terraform")
        for candidate in candidates:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        looked = ", ".join(str(c) for c in candidates)
        raise TerraformSetupError(
            f"no Terraform {version or ''} binary: looked for {looked} (CAIRN_TERRAFORM_PATH); "
            "put an executable terraform-<version> or terraform there"
        )
    search = path if path is not None else os.environ.get("PATH", "")
    for directory in search.split(os.pathsep):
        if not directory:
            continue
        candidate = Path(directory) / "terraform"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise TerraformSetupError(
        "no terraform binary on PATH; install Terraform or set CAIRN_TERRAFORM_PATH to a "
        "directory holding terraform-<version> or terraform"
    )


# -- HCL --------------------------------------------------------------------------------------


def hcl_string(value: str) -> str:
    """``value`` as an HCL quoted string: quotes, backslashes and control characters escaped,
    and ``${`` / ``%{`` doubled so that Terraform reads them literally, never as templates."""
    out = ['"']
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        nxt = value[i + 1] if i + 1 < n else ""
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch in ("$", "%") and nxt == "{":
            out.append(ch + ch + "{")
            i += 2
            continue
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
        i += 1
    out.append('"')
    return "".join(out)


@dataclass(frozen=True)
class TerraformVariable:
    key: str
    value: str
    hcl: bool = False

    def __repr__(self) -> str:  # values may be sensitive
        return f"TerraformVariable(key={self.key!r}, hcl={self.hcl!r})"


def render_tfvars(variables: Iterable[TerraformVariable]) -> str:
    """The ``*.auto.tfvars`` text: HCL values verbatim, the others as quoted strings."""
    lines = []
    for var in variables:
        if not _IDENTIFIER.match(var.key):
            raise TerraformSetupError(
                f"variable {var.key!r} is not a valid Terraform variable name "
                "(letters, digits, '_' and '-', not starting with a digit); rename it"
            )
        value = var.value if var.hcl else hcl_string(var.value)
        if var.hcl and not value.strip():
            raise TerraformSetupError(
                f"variable {var.key!r} is marked HCL but has an empty value; give it an HCL "
                'expression such as "" or null'
            )
        lines.append(f"{var.key} = {value}\n")
    return "".join(lines)


def backend_override(hostname: str, organization: str, workspace: str) -> str:
    """The override file pointing the configuration's backend at cairn's workspace."""
    return (
        "terraform {\n"
        '  backend "remote" {\n'
        f"    hostname     = {hcl_string(hostname)}\n"
        f"    organization = {hcl_string(organization)}\n"
        "    workspaces {\n"
        f"      name = {hcl_string(workspace)}\n"
        "    }\n"
        "  }\n"
        "}\n"
    )


def cli_config(base: str | None, hostname: str, token: str) -> str:
    """The job's CLI configuration: the operator's (``CAIRN_RUN_TF_CLI_CONFIG``) plus the job
    token as the credentials for cairn's host (Terraform 1.0.3 reads only these blocks)."""
    parts = []
    if base:
        parts.append(base if base.endswith("\n") else base + "\n")
    parts.append(f"credentials {hcl_string(hostname)} {{\n  token = {hcl_string(token)}\n}}\n")
    return "\n".join(parts)


def environment(
    inherited: Mapping[str, str],
    *,
    home: Path,
    cli_config_file: Path,
    run_id: str,
    variables: Sequence[tuple[str, str]] = (),
    ca_file: Path | None = None,
    organization: str = "",
    workspace: str = "",
) -> dict[str, str]:
    """Terraform's environment: a few harmless inherited variables, the job's own, then the
    workspace's environment variables (which may not override what makes the job work).

    As in HCP Terraform, a run also sees ``TFC_RUN_ID``, ``TFC_WORKSPACE_NAME`` and
    ``TFC_WORKSPACE_SLUG`` (``<organization>/<workspace>``)."""
    env = {k: inherited[k] for k in INHERITED_ENV if k in inherited}
    env.setdefault("PATH", os.defpath)
    for key, value in variables:
        if not _ENV_NAME.match(key):
            raise TerraformSetupError(
                f"environment variable {key!r} is not a valid name (letters, digits and '_', "
                "not starting with a digit); rename it"
            )
        env[key] = value
    env.update(
        HOME=str(home),
        TF_FORCE_LOCAL_BACKEND="1",
        TFE_RUN_ID=run_id,
        TFC_RUN_ID=run_id,
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
        TF_INPUT="0",
        TF_CLI_CONFIG_FILE=str(cli_config_file),
    )
    if workspace:
        env["TFC_WORKSPACE_NAME"] = workspace
        env["TFC_WORKSPACE_SLUG"] = f"{organization}/{workspace}"
    if ca_file is not None:
        env["SSL_CERT_FILE"] = str(ca_file)
        env.pop("SSL_CERT_DIR", None)
    return env


# -- command lines ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """What the run asks of Terraform (the claim's ``operation``)."""

    is_destroy: bool = False
    refresh: bool = True
    refresh_only: bool = False
    plan_only: bool = False
    speculative: bool = False
    target_addrs: tuple[str, ...] = ()
    replace_addrs: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Operation:
        return cls(
            is_destroy=bool(data.get("is_destroy", False)),
            refresh=bool(data.get("refresh", True)),
            refresh_only=bool(data.get("refresh_only", False)),
            plan_only=bool(data.get("plan_only", False)),
            speculative=bool(data.get("speculative", False)),
            target_addrs=tuple(str(a) for a in data.get("target_addrs") or ()),
            replace_addrs=tuple(str(a) for a in data.get("replace_addrs") or ()),
        )


def init_command(binary: Path) -> list[str]:
    return [str(binary), "init", "-input=false", "-no-color"]


def plan_command(binary: Path, op: Operation) -> list[str]:
    argv = [str(binary), "plan", "-input=false", "-no-color", "-lock=false", f"-out={PLAN_FILE}"]
    if op.is_destroy:
        argv.append("-destroy")
    if not op.refresh:
        argv.append("-refresh=false")
    if op.refresh_only:
        argv.append("-refresh-only")
    argv += [f"-target={addr}" for addr in op.target_addrs]
    argv += [f"-replace={addr}" for addr in op.replace_addrs]
    return argv


def show_command(binary: Path) -> list[str]:
    return [str(binary), "show", "-json", "-no-color", PLAN_FILE]


def apply_command(binary: Path) -> list[str]:
    return [str(binary), "apply", "-input=false", "-no-color", "-lock=false", PLAN_FILE]


# -- counting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeCounts:
    has_changes: bool = False
    additions: int = 0
    changes: int = 0
    destructions: int = 0
    imports: int = 0


def count_changes(plan: Mapping[str, Any]) -> ChangeCounts:
    """Resource counts of a ``terraform show -json`` plan, as HCP counts them: a replacement
    is one addition and one destruction; no-op and read are not changes. ``has_changes`` is
    also true when only outputs change."""
    additions = changes = destructions = imports = 0
    for rc in plan.get("resource_changes") or ():
        change = rc.get("change") or {}
        actions = list(change.get("actions") or ())
        if change.get("importing"):
            imports += 1
        if "create" in actions:
            additions += 1
        if "delete" in actions:
            destructions += 1
        if actions == ["update"]:
            changes += 1
    outputs = any(
        [a for a in (oc.get("actions") or ()) if a not in ("no-op", "read")]
        for oc in (plan.get("output_changes") or {}).values()
    )
    has = bool(additions or changes or destructions or imports or outputs)
    return ChangeCounts(has, additions, changes, destructions, imports)


def parse_plan_json(data: bytes) -> dict[str, Any]:
    try:
        plan = json.loads(data)
    except ValueError as exc:
        raise TerraformSetupError(f"terraform show -json printed no JSON plan: {exc}") from None
    if not isinstance(plan, dict):
        raise TerraformSetupError("terraform show -json printed no JSON plan object")
    return plan
