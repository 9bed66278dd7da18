"""Entry point: ``cairn serve``, ``cairn db upgrade``, ``cairn version``, and the client
commands that talk to a running cairn: ``cairn org …``, ``cairn workspace …``,
``cairn state …``, ``cairn keys …``, ``cairn id-token``, ``cairn tokens …``, ``cairn audit``,
``cairn rbac …``, ``cairn user disable|enable``, ``cairn vcs …``."""

from __future__ import annotations

import sys

import click

from cairn import __version__
from cairn.cli.lazy import LazyGroup
from cairn.errors import ConfigError

# Each command's module is imported only when the command runs (``cairn serve`` starts without
# the client commands' imports): name → "module:attribute".
COMMANDS = {
    "serve": "cairn.cli.serve:serve",
    "org": "cairn.cli.orgs:org",
    "workspace": "cairn.cli.workspaces:workspace",
    "state": "cairn.cli.state:state",
    "s3-credentials": "cairn.cli.s3:s3_credentials",
    "keys": "cairn.cli.keys:keys",
    "id-token": "cairn.cli.idtoken:id_token",
    "tokens": "cairn.cli.tokens:tokens",
    "audit": "cairn.cli.audit:audit",
    "rbac": "cairn.cli.rbac:rbac",
    "user": "cairn.cli.users:user",
    "agent": "cairn.cli.agent:agent",
    "vcs": "cairn.cli.vcs:vcs",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cairn")
def cli() -> None:
    """cairn — a self-hosted, Terraform-Cloud-compatible platform."""


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.option("--database-url", envvar="CAIRN_DATABASE_URL", help="Database to migrate.")
@click.option("--data-dir", envvar="CAIRN_DATA_DIR", type=click.Path(file_okay=False))
def db_upgrade(database_url: str | None, data_dir: str | None) -> None:
    """Apply all migrations (cairn serve also does this at start)."""
    from cairn.config import from_environment
    from cairn.db.engine import make_engine
    from cairn.migrations.migrate import current_revision, upgrade

    settings = from_environment(database_url=database_url, data_dir=data_dir)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    click.echo(f"database is at revision {current_revision(engine)}")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
