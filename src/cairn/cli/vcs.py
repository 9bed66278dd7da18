"""``cairn vcs connect CONNECTION | list ORG``: VCS connections (TFE's OAuth clients).

    cairn vcs list acme                       # connections, their tokens and status
    cairn vcs connect oc-…                    # a one-time browser link to authorise cairn
    cairn vcs connect oc-… --reauthorise ot-… # a token in needs-reauth gets a new grant

Connections are created through the TFE API (``POST /api/v2/organizations/:org/oauth-clients``,
e.g. pytfe's ``oauth_clients.create``); see the README's "Connecting GitLab and GitHub".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cairn.cli.client import connection_options, open_client
from cairn.cli.tfe import attrs, json_option, list_pages, print_json, print_table, when


@click.group()
def vcs() -> None:
    """VCS connections: list them, authorise an OAuth application connection."""


@vcs.command("connect")
@connection_options
@click.argument("connection", metavar="CONNECTION_ID")
@click.option(
    "--reauthorise",
    "token_id",
    default=None,
    metavar="TOKEN_ID",
    help="Give this token (status needs-reauth) a new grant instead of making a new token.",
)
def connect(
    url: str, token: str | None, data_dir: str | None, connection: str, token_id: str | None
) -> None:
    """Print a one-time link (10 minutes) that authorises cairn at the forge in a browser."""
    body: dict[str, Any] | None = (
        {"data": {"attributes": {"oauth-token-id": token_id}}} if token_id else None
    )
    with open_client(url, token, data_dir) as client:
        doc = client.post(
            f"/api/cairn/v1/oauth-clients/{quote(connection, safe='')}/connect",
            body,
            doing=f"start connecting {connection}",
        )
    link = attrs(doc.get("data") or {}).get("url")
    if not isinstance(link, str):
        raise click.ClickException("the server's answer has no link")
    click.echo(link)
    click.echo(
        "Open this link in your browser (once, within 10 minutes) and approve cairn's access; "
        "then check the token with `cairn vcs list ORG`.",
        err=True,
    )


@vcs.command("list")
@connection_options
@click.argument("org")
@json_option
def list_connections(
    url: str, token: str | None, data_dir: str | None, org: str, as_json: bool
) -> None:
    """List the organization's VCS connections and their tokens (needs manage-vcs-settings)."""
    org_path = quote(org, safe="")
    with open_client(url, token, data_dir) as client:
        clients, _ = list_pages(
            client, f"/api/v2/organizations/{org_path}/oauth-clients", doing="list connections"
        )
        tokens, _ = list_pages(
            client, f"/api/v2/organizations/{org_path}/oauth-tokens", doing="list tokens"
        )
    if as_json:
        print_json({"oauth-clients": clients, "oauth-tokens": tokens})
        return
    by_client: dict[str, list[dict[str, Any]]] = {}
    for t in tokens:
        rel = ((t.get("relationships") or {}).get("oauth-client") or {}).get("data") or {}
        by_client.setdefault(str(rel.get("id")), []).append(t)
    rows: list[list[Any]] = []
    for c in clients:
        a = attrs(c)
        mine = by_client.get(str(c.get("id")), [])
        base = [c.get("id"), a.get("name"), a.get("connection-type"), a.get("service-provider")]
        if not mine:
            hint = "run `cairn vcs connect`" if a.get("connection-type") == "oauth-app" else ""
            rows.append([*base, None, None, hint or None, None])
        for t in mine:
            ta = attrs(t)
            status = ta.get("status")
            if status == "needs-reauth":
                status = f"needs-reauth: {ta.get('status-reason') or ''}".strip()
            rows.append(
                [
                    *base,
                    t.get("id"),
                    ta.get("service-provider-user"),
                    status,
                    when(ta.get("expires-at")),
                ]
            )
    print_table(
        ["connection", "name", "type", "provider", "token", "user", "status", "expires"],
        rows,
        empty=f"no VCS connections in {org}",
    )
