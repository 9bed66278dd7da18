"""executor.terraform: tfvars escaping and resource counting checked by the real Terraform
1.0.3, the binary lookup, the CLI configuration, the environment and the command lines."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cairn.executor import terraform as tf
from cairn.executor.terraform import Operation, TerraformSetupError, TerraformVariable
from tests.support.terraform import (
    NULL_PROVIDER_ADDRESS,
    build_provider_mirror,
    hcl_string,
    terraform_binary,
)

TRICKY = [
    "plain",
    "",
    'say "hi"',
    "back\\slash and \\n not a newline",
    "${var.not_interpolated}",
    "%{ if true }directive%{ endif }",
    "$${already doubled}",
    "dollar $ alone, percent % alone, ${",
    "multi\nline\r\nwith\ttab",
    "unicode: é ü 日本 \u2028",
    "control \x01\x1f\x7f",
    "trailing backslash \\",
]


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    config = cwd / "empty.tfrc"
    config.touch()
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    full = {
        "PATH": os.defpath,
        "HOME": str(home),
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
        "TF_CLI_CONFIG_FILE": str(config),
        **(env or {}),
    }
    proc = subprocess.run(
        [str(terraform_binary()), *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_tfvars_strings_reach_terraform_verbatim(tmp_path: Path) -> None:
    names = [f"v{i}" for i in range(len(TRICKY))]
    (tmp_path / "main.tf").write_text(
        "".join(f'variable "{n}" {{}}\noutput "{n}" {{ value = var.{n} }}\n' for n in names)
        + 'variable "m" {}\noutput "m" { value = var.m }\n'
        + 'variable "l" {}\noutput "l" { value = var.l }\n'
    )
    variables = [TerraformVariable(n, v) for n, v in zip(names, TRICKY, strict=True)]
    variables += [
        TerraformVariable("m", '{\n  a = 1\n  "b-c" = ["x", true]\n}', hcl=True),
        TerraformVariable("l", "[1, 2, 3]", hcl=True),
    ]
    (tmp_path / tf.TFVARS_FILE).write_text(tf.render_tfvars(variables))
    _run(tmp_path, "init", "-input=false", "-no-color")
    _run(tmp_path, "apply", "-input=false", "-no-color", "-auto-approve")
    outputs = json.loads(_run(tmp_path, "output", "-json"))
    for name, value in zip(names, TRICKY, strict=True):
        assert outputs[name]["value"] == value, name
    # HCL values are expressions, evaluated by Terraform.
    assert outputs["m"]["value"] == {"a": 1, "b-c": ["x", True]}
    assert outputs["l"]["value"] == [1, 2, 3]


def test_hcl_string_escapes() -> None:
    assert tf.hcl_string('a"b') == '"a\\"b"'
    assert tf.hcl_string("${x}") == '"$${x}"'
    assert tf.hcl_string("%{x}") == '"%%{x}"'
    assert tf.hcl_string("a\nb") == '"a\\nb"'
    assert tf.hcl_string("$x %y") == '"$x %y"'


@pytest.mark.parametrize("key", ["1abc", "a b", "a.b", "", "a=b"])
def test_invalid_variable_names_are_refused(key: str) -> None:
    with pytest.raises(TerraformSetupError, match="not a valid Terraform variable name"):
        tf.render_tfvars([TerraformVariable(key, "v")])


def test_an_empty_hcl_value_is_refused() -> None:
    with pytest.raises(TerraformSetupError, match="empty value"):
        tf.render_tfvars([TerraformVariable("a", "  ", hcl=True)])


def test_a_variable_repr_hides_its_value() -> None:
    assert "s3cret" not in repr(TerraformVariable("k", "s3cret"))


# -- counting ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_provider_mirror(tmp_path_factory.mktemp("mirror"))


def _mirror_config(path: Path, mirror: Path) -> Path:
    include = f"[{hcl_string(NULL_PROVIDER_ADDRESS)}]"
    config = path / "mirror.tfrc"
    config.write_text(
        f"provider_installation {{\n  filesystem_mirror {{\n    path = {hcl_string(str(mirror))}\n"
        f"    include = {include}\n  }}\n  direct {{\n    exclude = {include}\n  }}\n}}\n"
    )
    return config


def _plan_json(cwd: Path, env: dict[str, str], *flags: str) -> dict[str, Any]:
    _run(cwd, "plan", "-input=false", "-no-color", "-out=tfplan", *flags, env=env)
    plan: dict[str, Any] = json.loads(_run(cwd, "show", "-json", "tfplan", env=env))
    return plan


def test_counts_from_real_terraform_show_json(tmp_path: Path, mirror: Path) -> None:
    env = {"TF_CLI_CONFIG_FILE": str(_mirror_config(tmp_path, mirror))}
    main = tmp_path / "main.tf"
    main.write_text(
        'resource "null_resource" "keep" {}\n'
        'resource "null_resource" "swap" { triggers = { v = "1" } }\n'
        'resource "null_resource" "gone" {}\n'
        'output "o" { value = "1" }\n'
    )
    _run(tmp_path, "init", "-input=false", "-no-color", env=env)
    assert tf.count_changes(_plan_json(tmp_path, env)) == tf.ChangeCounts(True, 3, 0, 0, 0)
    _run(tmp_path, "apply", "-input=false", "-no-color", "-auto-approve", env=env)

    # Nothing changed: no-op everywhere.
    assert tf.count_changes(_plan_json(tmp_path, env)) == tf.ChangeCounts(False, 0, 0, 0, 0)

    # Replace one (new trigger), destroy one, add one.
    main.write_text(
        'resource "null_resource" "keep" {}\n'
        'resource "null_resource" "swap" { triggers = { v = "2" } }\n'
        'resource "null_resource" "new" {}\n'
        'output "o" { value = "1" }\n'
    )
    plan = _plan_json(tmp_path, env)
    actions = {rc["address"]: rc["change"]["actions"] for rc in plan["resource_changes"]}
    assert actions["null_resource.swap"] in (["delete", "create"], ["create", "delete"])
    assert tf.count_changes(plan) == tf.ChangeCounts(True, 2, 0, 2, 0)

    # Only an output changes: has changes, no resource counts.
    main.write_text(
        'resource "null_resource" "keep" {}\n'
        'resource "null_resource" "swap" { triggers = { v = "1" } }\n'
        'resource "null_resource" "gone" {}\n'
        'output "o" { value = "2" }\n'
    )
    assert tf.count_changes(_plan_json(tmp_path, env)) == tf.ChangeCounts(True, 0, 0, 0, 0)

    # A destroy plan.
    counts = tf.count_changes(_plan_json(tmp_path, env, "-destroy"))
    assert (counts.additions, counts.destructions) == (0, 3)


def test_counts_of_updates_reads_and_imports() -> None:
    plan = {
        "resource_changes": [
            {"change": {"actions": ["update"]}},
            {"change": {"actions": ["read"]}},
            {"change": {"actions": ["no-op"], "importing": {"id": "x"}}},
        ],
        "output_changes": {"o": {"actions": ["no-op"]}},
    }
    assert tf.count_changes(plan) == tf.ChangeCounts(True, 0, 1, 0, 1)
    assert tf.count_changes({"resource_changes": [{"change": {"actions": ["read"]}}]}) == (
        tf.ChangeCounts(False, 0, 0, 0, 0)
    )


def test_plan_json_that_is_not_json_is_an_error() -> None:
    with pytest.raises(TerraformSetupError, match="no JSON plan"):
        tf.parse_plan_json(b"oops")


# -- binary lookup ----------------------------------------------------------------------------


def _exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_terraform_prefers_the_versioned_binary(tmp_path: Path) -> None:
    versioned = _exe(tmp_path / "terraform-1.0.3")
    plain = _exe(tmp_path / "terraform")
    assert tf.find_terraform("1.0.3", search_dir=tmp_path) == versioned
    assert tf.find_terraform("1.5.0", search_dir=tmp_path) == plain
    assert tf.find_terraform("latest", search_dir=tmp_path) == plain


def test_find_terraform_names_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "terraform").write_text("not executable")
    with pytest.raises(TerraformSetupError) as err:
        tf.find_terraform("1.0.3", search_dir=tmp_path)
    assert f"{tmp_path}/terraform-1.0.3" in str(err.value)
    assert f"{tmp_path}/terraform," in str(err.value) or f"{tmp_path}/terraform " in str(err.value)
    assert "CAIRN_TERRAFORM_PATH" in str(err.value)


def test_find_terraform_on_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    found = _exe(tmp_path / "b" / "terraform")
    path = f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"
    assert tf.find_terraform("1.0.3", search_dir=None, path=path) == found
    with pytest.raises(TerraformSetupError, match="no terraform binary on PATH"):
        tf.find_terraform("1.0.3", search_dir=None, path=str(tmp_path / "a"))


# -- files, environment, commands -------------------------------------------------------------


def test_cli_config_appends_the_job_token() -> None:
    text = tf.cli_config('plugin_cache_dir = "/x"', "cairn.example:8443", 'tok"en')
    assert text.startswith('plugin_cache_dir = "/x"\n')
    assert 'credentials "cairn.example:8443" {\n  token = "tok\\"en"\n}\n' in text
    assert tf.cli_config(None, "h", "t") == 'credentials "h" {\n  token = "t"\n}\n'


def test_backend_override() -> None:
    text = tf.backend_override("cairn.test", "acme", "app")
    assert 'backend "remote"' in text
    assert 'hostname     = "cairn.test"' in text
    assert 'name = "app"' in text


def test_environment_keeps_host_secrets_out(tmp_path: Path) -> None:
    inherited = {
        "PATH": "/usr/bin",
        "CAIRN_SECRET_KEY": "k" * 40,
        "CAIRN_DATABASE_URL": "postgresql://u:p@h/db",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "TF_LOG": "trace",
        "SSL_CERT_FILE": "/etc/ssl/cert.pem",
        "SSL_CERT_DIR": "/etc/ssl/certs",
    }
    env = tf.environment(
        inherited,
        home=tmp_path,
        cli_config_file=tmp_path / "cli.tfrc",
        run_id="run-1",
        variables=[("AWS_REGION", "eu-west-1"), ("TF_FORCE_LOCAL_BACKEND", "0")],
    )
    assert env["PATH"] == "/usr/bin"
    assert "CAIRN_SECRET_KEY" not in env and "CAIRN_DATABASE_URL" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env and "TF_LOG" not in env
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["TF_FORCE_LOCAL_BACKEND"] == "1"  # a workspace variable cannot undo it
    assert env["TFE_RUN_ID"] == "run-1"
    assert env["TF_CLI_CONFIG_FILE"] == str(tmp_path / "cli.tfrc")
    assert env["TF_INPUT"] == "0" and env["TF_IN_AUTOMATION"] == "1"
    assert env["CHECKPOINT_DISABLE"] == "1" and env["HOME"] == str(tmp_path)
    assert env["SSL_CERT_FILE"] == "/etc/ssl/cert.pem"
    with_ca = tf.environment(
        inherited,
        home=tmp_path,
        cli_config_file=tmp_path / "c",
        run_id="r",
        ca_file=tmp_path / "ca.pem",
    )
    assert with_ca["SSL_CERT_FILE"] == str(tmp_path / "ca.pem") and "SSL_CERT_DIR" not in with_ca
    with pytest.raises(TerraformSetupError, match="not a valid name"):
        tf.environment(
            {}, home=tmp_path, cli_config_file=tmp_path, run_id="r", variables=[("A-B", "x")]
        )


def test_plan_command_flags() -> None:
    binary = Path("/bin/terraform")
    base = ["/bin/terraform", "plan", "-input=false", "-no-color", "-lock=false", "-out=tfplan"]
    assert tf.plan_command(binary, Operation()) == base
    op = Operation(
        is_destroy=True,
        refresh=False,
        refresh_only=True,
        target_addrs=("null_resource.a", 'module.m["k"]'),
        replace_addrs=("null_resource.b",),
    )
    assert tf.plan_command(binary, op) == [
        *base,
        "-destroy",
        "-refresh=false",
        "-refresh-only",
        "-target=null_resource.a",
        '-target=module.m["k"]',
        "-replace=null_resource.b",
    ]
    assert tf.apply_command(binary)[-2:] == ["-lock=false", "tfplan"]
    assert tf.init_command(binary)[1:] == ["init", "-input=false", "-no-color"]
    assert Operation.from_json({"refresh": False, "target_addrs": ["a"]}) == Operation(
        refresh=False, target_addrs=("a",)
    )
