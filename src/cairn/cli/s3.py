"""``cairn s3-credentials``: exchange a cairn API token for short-lived S3 credentials for
cairn's S3-compatible endpoint (``/s3/``), e.g. for Terraform's ``s3`` backend.

    eval "$(cairn s3-credentials --duration 1h)"              # AWS_* variables for a shell
    cairn s3-credentials --format json                        # AccessKeyId, …, Expiration

and, in ``~/.aws/config``, credentials the AWS SDKs (and Terraform) fetch and renew themselves::

    [profile cairn]
    credential_process = cairn s3-credentials --format credential-process --url https://cairn.example.com
"""

from __future__ import annotations

import json
import shlex
from datetime import timedelta

import click

from cairn.cli.client import CliError, connection_options, open_client
from cairn.config import parse_duration
from cairn.errors import ConfigError

_FIELDS = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        ttl = parse_duration(value, "--duration")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    if not timedelta(minutes=15) <= ttl <= timedelta(hours=12):
        raise click.BadParameter("must be from 15m to 12h")
    return ttl


@click.command("s3-credentials")
@connection_options
@click.option(
    "--duration",
    default="1h",
    show_default=True,
    callback=_duration,
    help="How long the credentials last (15m to 12h).",
)
@click.option(
    "--organization",
    "-o",
    default=None,
    help="Only this organization (bucket) [default: every one the token reaches].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["env", "json", "credential-process"]),
    default="env",
    show_default=True,
    help="env: export lines for a shell; json; credential-process: what an AWS profile's "
    "credential_process prints.",
)
def s3_credentials(
    url: str | None,
    token: str | None,
    data_dir: str | None,
    duration: timedelta,
    organization: str | None,
    fmt: str,
) -> None:
    """Short-lived credentials for cairn's S3-compatible endpoint."""
    body: dict[str, object] = {"duration-seconds": int(duration.total_seconds())}
    if organization:
        body["organization"] = organization
    with open_client(url, token, data_dir) as client:
        found = client.post("/api/cairn/v1/s3-credentials", body, doing="get S3 credentials")
    if any(not isinstance(found.get(k), str) for k in _FIELDS):
        raise CliError("the server's answer lacks the credentials; is it a cairn server?")
    if fmt == "env":
        names = {
            "AccessKeyId": "AWS_ACCESS_KEY_ID",
            "SecretAccessKey": "AWS_SECRET_ACCESS_KEY",
            "SessionToken": "AWS_SESSION_TOKEN",
        }
        for field, name in names.items():
            click.echo(f"export {name}={shlex.quote(str(found[field]))}")
        click.echo(f"# expires at {found['Expiration']}")
        return
    out = {k: found[k] for k in _FIELDS}
    if fmt == "credential-process":
        out = {"Version": 1, **out}
    click.echo(json.dumps(out, indent=None if fmt == "credential-process" else 2))
