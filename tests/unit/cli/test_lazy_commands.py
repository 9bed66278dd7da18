"""The top-level ``cairn`` group imports a command's module only when that command runs
(``cairn serve`` starts without the client commands' imports), and still knows every command:
each name resolves to the click command of that name, and ``cairn --help`` lists them all."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cairn.cli.lazy import LazyGroup
from cairn.cli.main import COMMANDS, cli


def test_every_lazy_command_resolves_to_the_command_of_its_name() -> None:
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command), name
        assert command.name == name
    assert cli.get_command(ctx, "no-such-command") is None


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in [*COMMANDS, "db"]:
        assert f"  {name} " in result.output, name


def test_importing_the_entry_point_imports_no_command_module() -> None:
    code = (
        "import sys, cairn.cli.main; "
        "print(sorted(m for m in sys.modules if m.startswith(('cairn.cli.', 'cairn.app'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['cairn.cli.lazy', 'cairn.cli.main']"


def test_a_lazy_entry_that_is_not_a_command_is_refused() -> None:
    group = LazyGroup(name="g", lazy={"x": "cairn.cli.lazy:LazyGroup"})
    with pytest.raises(TypeError, match="is not a click command"):
        group.get_command(click.Context(group), "x")
