"""The shared CLI fixtures (`tests.support.cli`): `cli_server`, `admin` and `cairn`."""

from tests.support.cli import admin, cairn, cli_server

__all__ = ["admin", "cairn", "cli_server"]
