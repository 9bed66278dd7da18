"""Command groups whose subcommands are imported only when they run.

``cairn serve`` must be ready quickly (issue 8: < 1 s), and every client command module pulls
in what it needs (HTTP client, tables, authorization vocabulary): the top-level group names
each command's module and attribute, and imports that module only when the command is invoked
(or when ``--help`` lists the commands, which needs their one-line help)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click


class LazyGroup(click.Group):
    """A ``click.Group`` whose ``lazy`` commands (name → ``"module:attribute"``) are imported
    on first use."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self._load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> click.Command:
        module, _, attribute = self.lazy[name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[name]} is not a click command (for {name!r})")
        return command
