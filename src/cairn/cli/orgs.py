"""``cairn org create NAME | list | delete NAME``: organizations, through the TFE API
(``/api/v2/organizations``).

    cairn org create acme --email ops@acme.test
    cairn org list --json | jq -r '.[].id'
    cairn org delete acme        # asks first; --yes to skip
"""

from __future__ import annotations

from typing import Any

import click

from cairn.cli.client import CairnClient, connection_options, open_client
from cairn.cli.keys import progress
from cairn.cli.tfe import (
    attrs,
    confirm,
    hint,
    json_option,
    print_json,
    print_table,
    q,
    resource,
    when,
    yes_option,
)
from cairn.cli.tokens import list_all

LIST_HINT = "list the organizations you can see with `cairn org list`"


@click.group()
def org() -> None:
    """Organizations: create, list, delete."""


@org.command("create")
@connection_options
@click.argument("name")
@click.option("--email", default="", help="The organization's contact email address.")
@json_option
def create(
    url: str, token: str | None, data_dir: str | None, name: str, email: str, as_json: bool
) -> None:
    """Create organization NAME (site admins). It gets a default project and an owners team."""
    body = {"data": {"type": "organizations", "attributes": {"name": name, "email": email}}}
    with open_client(url, token, data_dir) as client, progress("Creating the organization…"):
        doc = client.post(
            "/api/v2/organizations", body, doing=f"create organization {name}", jsonapi=True
        )
    data = resource(doc, f"create organization {name}")
    if as_json:
        print_json(data)
        return
    click.echo(f"created organization {data['id']}")
    click.echo(f"next: cairn workspace create {data['id']}/WORKSPACE", err=True)


@org.command("list")
@connection_options
@json_option
def list_orgs(url: str, token: str | None, data_dir: str | None, as_json: bool) -> None:
    """List the organizations you can see."""
    with open_client(url, token, data_dir) as client, progress("Reading organizations…"):
        items = list_all(client, "/api/v2/organizations", doing="list organizations")
    if as_json:
        print_json(items)
        return
    rows: list[list[Any]] = []
    for item in items:
        a = attrs(item)
        rows.append(
            [
                item.get("id"),
                a.get("email"),
                a.get("default-execution-mode"),
                when(a.get("created-at")),
            ]
        )
    print_table(
        ["name", "email", "execution mode", "created"],
        rows,
        empty="no organizations yet: create one with `cairn org create NAME`",
    )


def _workspace_count(client: CairnClient, name: str) -> int | None:
    doc = client.get(
        f"/api/v2/organizations/{q(name)}/workspaces?page%5Bsize%5D=1",
        doing=f"count the workspaces of {name}",
        jsonapi=True,
    )
    total = ((doc.get("meta") or {}).get("pagination") or {}).get("total-count")
    return total if isinstance(total, int) else None


@org.command("delete")
@connection_options
@click.argument("name")
@yes_option
def delete(url: str, token: str | None, data_dir: str | None, name: str, yes: bool) -> None:
    """Delete organization NAME with all its workspaces, their state, teams and tokens."""
    with open_client(url, token, data_dir) as client:
        with hint(404, LIST_HINT):
            client.get(
                f"/api/v2/organizations/{q(name)}", doing=f"read organization {name}", jsonapi=True
            )
            count = _workspace_count(client, name)
        holding = f" and its {count} workspace(s) with all their state" if count else ""
        confirm(
            f"Delete organization {name}{holding} on {client.url}? This cannot be undone.",
            yes,
            f"organization {name}",
        )
        with hint(404, LIST_HINT), progress("Deleting the organization…"):
            client.delete(
                f"/api/v2/organizations/{q(name)}",
                doing=f"delete organization {name}",
                jsonapi=True,
            )
    click.echo(f"deleted organization {name}")
