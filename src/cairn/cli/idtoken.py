"""``cairn id-token``: mint a workload-identity token for a pipeline that runs Terraform itself
(local execution, a CI job), with the same claims as a cairn (or HCP Terraform) run phase.

Only the JWT goes to stdout, so ``export TFC_WORKLOAD_IDENTITY_TOKEN=$(cairn id-token …)``
works; ``--json`` prints the whole answer (token, expires_at, run_id, jti, kid) instead.
"""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote

import click

from cairn.cli.client import ApiFailure, CairnClient, CliError, connection_options, open_client
from cairn.config import parse_duration
from cairn.errors import ConfigError


def _workspace(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, str]:
    org, sep, ws = value.partition("/")
    if not sep or not org or not ws or "/" in ws:
        raise click.BadParameter(f"must be ORGANIZATION/WORKSPACE, not {value!r}")
    return org, ws


def _ttl(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        ttl = parse_duration(value, "--ttl")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    if ttl.total_seconds() < 1:
        raise click.BadParameter("must be at least 1s")
    return ttl


def workspace_id(client: CairnClient, org: str, ws: str) -> str:
    """The ``ws-…`` ID of ORG/WS, through the TFE API."""
    path = f"/api/v2/organizations/{quote(org, safe='')}/workspaces/{quote(ws, safe='')}"
    try:
        doc = client.get(path, doing=f"find workspace {org}/{ws}", jsonapi=True)
    except ApiFailure as exc:
        if exc.status == 404:
            raise CliError(
                f"workspace {org}/{ws} does not exist, or your token may not read it "
                "(check the organization and workspace names)"
            ) from None
        raise
    data = doc.get("data")
    ident = data.get("id") if isinstance(data, dict) else None
    if not isinstance(ident, str) or not ident:
        raise CliError(f"the server's answer for workspace {org}/{ws} has no workspace id")
    return ident


@click.command("id-token")
@connection_options
@click.option(
    "--workspace",
    "-w",
    "workspace",
    required=True,
    metavar="ORG/WS",
    callback=_workspace,
    help="The workspace the token speaks for.",
)
@click.option(
    "--audience",
    "-a",
    "audiences",
    required=True,
    multiple=True,
    metavar="AUD",
    help="The token's aud (repeat for several), e.g. sts.amazonaws.com.",
)
@click.option(
    "--phase",
    required=True,
    type=click.Choice(["plan", "apply"]),
    help="The run phase in the token's sub and terraform_run_phase.",
)
@click.option(
    "--ttl",
    default="15m",
    show_default=True,
    callback=_ttl,
    help="Lifetime: 15m, 1h, 900s… (capped by the server's maximum).",
)
@click.option("--run-id", metavar="run-…", help="The run ID to claim [default: a new one].")
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
def id_token(
    url: str,
    token: str | None,
    data_dir: str | None,
    workspace: tuple[str, str],
    audiences: tuple[str, ...],
    phase: str,
    ttl: timedelta,
    run_id: str | None,
    as_json: bool,
) -> None:
    """Mint a workload-identity JWT for ORG/WS and print it on stdout."""
    org, ws = workspace
    body: dict[str, object] = {
        "audience": audiences[0] if len(audiences) == 1 else list(audiences),
        "run_phase": phase,
        "ttl_seconds": int(ttl.total_seconds()),
    }
    if run_id:
        body["run_id"] = run_id
    with open_client(url, token, data_dir) as client:
        ident = workspace_id(client, org, ws)
        minted = client.post(
            f"/api/cairn/v1/workspaces/{quote(ident, safe='')}/id-tokens",
            body,
            doing=f"mint a {phase}-phase token for {org}/{ws}",
        )
    jwt = minted.get("token")
    if not isinstance(jwt, str) or not jwt:
        raise CliError("the server's answer has no token")
    if as_json:
        click.echo(json.dumps(minted, indent=2))
    else:
        click.echo(jwt)
