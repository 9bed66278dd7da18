"""``render_tfvars`` read back by the real Terraform 1.0.3: every string comes out exactly as
stored (quotes, backslashes, template introducers, newlines, control characters, non-ASCII),
HCL values are evaluated as HCL, and a template in a plain string is never evaluated.

The executor writes the file (``cairn.executor.terraform``); ``cairn.variables`` keeps no
renderer of its own."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cairn.executor import terraform as executor
from tests.support.terraform import terraform_binary

TRICKY_STRINGS = [
    "",
    "plain",
    'say "hi"',
    "back\\slash",
    "ends with a backslash\\",
    "\\n is not a newline",
    "${var.other}",
    "${",
    "%{ if true }yes%{ endif }",
    "%{",
    "$${already escaped}",
    "%%{already escaped}",
    "$$${three}",
    "$",
    "%",
    "$$",
    "trailing $",
    "trailing %",
    "$ {not a template}",
    "{}${}%{}",
    "line one\nline two\n",
    "windows\r\nline",
    "tab\there",
    "bell\x07 escape\x1b del\x7f nul-free",
    "ünïcødé ✓ 🙂 中文",
    "<<EOT\nnot a heredoc\nEOT",
    "# not a comment",
    "/* not a comment */",
    '"${"}"',
]


Renderer = Callable[[list[tuple[str, str, bool]]], str]


def executor_render(variables: list[tuple[str, str, bool]]) -> str:
    return executor.render_tfvars(executor.TerraformVariable(k, v, h) for k, v, h in variables)


RENDERERS = pytest.mark.parametrize("render", [executor_render], ids=["executor"])


def read_back(
    tmp: Path, render: Renderer, variables: list[tuple[str, str, bool]], types: dict[str, str]
) -> Any:
    """Terraform's values of ``variables`` when they come from a rendered ``.auto.tfvars``."""
    config = "".join(
        f'variable "{k}" {{\n  type = {types.get(k, "string")}\n}}\n'
        f'output "{k}" {{\n  value = var.{k}\n}}\n'
        for k, _, _ in variables
    )
    (tmp / "main.tf").write_text(config)
    (tmp / "zzz_cairn.auto.tfvars").write_text(render(variables), encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
        "TF_DATA_DIR": str(tmp / ".terraform"),
    }
    binary = str(terraform_binary())
    for args in (
        ["init", "-input=false", "-no-color"],
        ["apply", "-input=false", "-no-color", "-auto-approve"],
    ):
        done = subprocess.run(
            [binary, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    out = subprocess.run(
        [binary, "output", "-json"], cwd=tmp, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return {k: v["value"] for k, v in json.loads(out.stdout).items()}


@RENDERERS
def test_strings_come_back_exactly(tmp_path: Path, render: Renderer) -> None:
    rng = random.Random(9)
    alphabet = list('$%{}\\"\n\r\t #/*<>EOT a\x01\x1f\x7fé🙂')
    fuzzed = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(60)]
    values = TRICKY_STRINGS + fuzzed
    variables = [(f"v{i}", value, False) for i, value in enumerate(values)]
    got = read_back(tmp_path, render, variables, {})
    for key, value, _ in variables:
        assert got[key] == value, f"{key}: wrote {value!r}, Terraform read {got[key]!r}"


@RENDERERS
def test_hcl_values_are_evaluated_verbatim(tmp_path: Path, render: Renderer) -> None:
    variables = [
        ("number", "42", True),
        ("flag", "true", True),
        ("list", '["a", "b"]', True),
        ("map", '{\n  region = "eu"\n  zones  = [1, 2]\n}', True),
        ("heredoc", "<<EOT\nfirst\nsecond\nEOT", True),
        ("trailing_comment", "7 # seven", True),
        ("dashed-name", '"x"', True),
        ("_plain", "[1, 2]", False),  # not HCL: the text itself
    ]
    types = {
        "number": "number",
        "flag": "bool",
        "list": "list(string)",
        "map": "any",
        "heredoc": "string",
        "trailing_comment": "number",
    }
    got = read_back(tmp_path, render, variables, types)
    assert got == {
        "number": 42,
        "flag": True,
        "list": ["a", "b"],
        "map": {"region": "eu", "zones": [1, 2]},
        "heredoc": "first\nsecond\n",
        "trailing_comment": 7,
        "dashed-name": "x",
        "_plain": "[1, 2]",
    }


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("a", '"a"'),
        ('"', '"\\""'),
        ("\\", '"\\\\"'),
        ("${x}", '"$${x}"'),
        ("%{x}", '"%%{x}"'),
        ("$${x}", '"$$${x}"'),
        ("a\nb", '"a\\nb"'),
        ("\x00", '"\\u0000"'),
    ],
)
def test_hcl_string_literals(value: str, literal: str) -> None:
    assert executor.hcl_string(value) == literal


def test_render_is_one_attribute_a_line_in_order() -> None:
    text = executor_render([("b", "1", True), ("a", "x", False)])
    assert text == 'b = 1\na = "x"\n'
