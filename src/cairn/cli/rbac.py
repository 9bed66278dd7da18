"""``cairn rbac``: who may do what. Teams and members (the TFE teams API), grants of a role on
workspaces chosen by name pattern, custom roles, and users (site admins).

    cairn rbac users create alice --email alice@example.com
    cairn rbac teams create acme platform --idp-group platform-engineers
    cairn rbac members add acme platform alice
    cairn rbac grant acme --team platform --role write --workspaces 'prod-*'
    cairn rbac grants acme
    cairn rbac revoke grant-…
    cairn rbac roles create acme deployer --permission workspace:read --permission run:apply
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from cairn.authz.subject import USER_TYPE
from cairn.cli.client import CairnClient, CliError, JSONObject, connection_options, open_client
from cairn.cli.keys import progress, stdout_console


def _q(value: str) -> str:
    return quote(value, safe="")


def _team_id(client: CairnClient, org: str, team: str) -> str:
    if team.startswith("team-"):
        return team
    doc = client.get(
        f"/api/v2/organizations/{_q(org)}/teams?page%5Bsize%5D=100",
        doing=f"list the teams of {org}",
        jsonapi=True,
    )
    for item in doc.get("data") or []:
        if isinstance(item, dict) and (item.get("attributes") or {}).get("name") == team:
            return str(item["id"])
    raise CliError(
        f"organization {org} has no team named {team!r} (see `cairn rbac teams list {org}`)"
    )


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    stdout_console().print(table)


@click.group()
def rbac() -> None:
    """Teams, members, grants, roles and users."""


# ---- users -------------------------------------------------------------------------------


@rbac.group()
def users() -> None:
    """Users (site admins only). People from the IdP appear at their first login."""


@users.command("create")
@connection_options
@click.argument("username")
@click.option("--email", default="", help="The user's email address.")
def users_create(
    url: str, token: str | None, data_dir: str | None, username: str, email: str
) -> None:
    """Create a local user (give them a token with the TFE tokens API or `terraform login`)."""
    with open_client(url, token, data_dir) as client, progress("creating user"):
        doc = client.post(
            "/api/cairn/v1/admin/users",
            {"username": username, "email": email},
            doing=f"create user {username}",
        )
    data = doc.get("data") or {}
    click.echo(f"created user {data.get('username')} ({data.get('id')})")


@users.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True)
def users_list(url: str, token: str | None, data_dir: str | None, as_json: bool) -> None:
    """List users."""
    with open_client(url, token, data_dir) as client:
        doc = client.get("/api/cairn/v1/admin/users", doing="list users")
    items = doc.get("data") or []
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _table(
        "users",
        ["id", "username", "email", "site admin", "service", "IdP", "last login", "disabled"],
        [
            [
                u.get("id"),
                u.get("username"),
                u.get("email"),
                u.get("site-admin"),
                u.get("service-account"),
                u.get("idp-issuer"),
                u.get("last-login-at"),
                u.get("disabled-at"),
            ]
            for u in items
            if isinstance(u, dict)
        ],
    )


# ---- teams and members ---------------------------------------------------------------------


@rbac.group()
def teams() -> None:
    """Teams of an organization (the TFE teams API)."""


@teams.command("list")
@connection_options
@click.argument("org")
def teams_list(url: str, token: str | None, data_dir: str | None, org: str) -> None:
    """List the teams of ORG."""
    with open_client(url, token, data_dir) as client:
        doc = client.get(
            f"/api/v2/organizations/{_q(org)}/teams?page%5Bsize%5D=100",
            doing=f"list the teams of {org}",
            jsonapi=True,
        )
    rows = []
    for item in doc.get("data") or []:
        if not isinstance(item, dict):
            continue
        a = item.get("attributes") or {}
        access = ", ".join(k for k, v in (a.get("organization-access") or {}).items() if v)
        rows.append(
            [item.get("id"), a.get("name"), a.get("users-count"), a.get("sso-team-id"), access]
        )
    _table(f"teams of {org}", ["id", "name", "members", "IdP group", "organization access"], rows)


@teams.command("create")
@connection_options
@click.argument("org")
@click.argument("name")
@click.option("--idp-group", help="Members of this IdP group join the team at each login.")
@click.option(
    "--org-access",
    multiple=True,
    help="Organization-wide access flag (read-workspaces, manage-workspaces, …).",
)
def teams_create(
    url: str,
    token: str | None,
    data_dir: str | None,
    org: str,
    name: str,
    idp_group: str | None,
    org_access: tuple[str, ...],
) -> None:
    """Create team NAME in ORG."""
    attrs: dict[str, Any] = {"name": name, "organization-access": {f: True for f in org_access}}
    if idp_group:
        attrs["sso-team-id"] = idp_group
    body: JSONObject = {"data": {"type": "teams", "attributes": attrs}}
    with open_client(url, token, data_dir) as client, progress("creating team"):
        doc = client.post(
            f"/api/v2/organizations/{_q(org)}/teams",
            body,
            doing=f"create team {name}",
            jsonapi=True,
        )
    click.echo(f"created team {name} ({(doc.get('data') or {}).get('id')})")


@teams.command("delete")
@connection_options
@click.argument("org")
@click.argument("team")
def teams_delete(url: str, token: str | None, data_dir: str | None, org: str, team: str) -> None:
    """Delete TEAM (a name or team-…) from ORG."""
    with open_client(url, token, data_dir) as client:
        team_id = _team_id(client, org, team)
        client.delete(f"/api/v2/teams/{_q(team_id)}", doing=f"delete team {team}", jsonapi=True)
    click.echo(f"deleted team {team}")


@rbac.group()
def members() -> None:
    """Team membership."""


def _members(
    url: str,
    token: str | None,
    data_dir: str | None,
    org: str,
    team: str,
    users_: tuple[str, ...],
    add: bool,
) -> None:
    body: JSONObject = {"data": [{"type": USER_TYPE, "id": u} for u in users_]}
    with open_client(url, token, data_dir) as client:
        team_id = _team_id(client, org, team)
        path = f"/api/v2/teams/{_q(team_id)}/relationships/users"
        if add:
            client.post(path, body, doing=f"add members to {team}", jsonapi=True)
        else:
            client.delete(path, body, doing=f"remove members from {team}", jsonapi=True)
    click.echo(
        f"{'added' if add else 'removed'} {', '.join(users_)} {'to' if add else 'from'} {team}"
    )


@members.command("add")
@connection_options
@click.argument("org")
@click.argument("team")
@click.argument("users_", metavar="USER...", nargs=-1, required=True)
def members_add(
    url: str, token: str | None, data_dir: str | None, org: str, team: str, users_: tuple[str, ...]
) -> None:
    """Add USERs (usernames) to TEAM of ORG."""
    _members(url, token, data_dir, org, team, users_, add=True)


@members.command("remove")
@connection_options
@click.argument("org")
@click.argument("team")
@click.argument("users_", metavar="USER...", nargs=-1, required=True)
def members_remove(
    url: str, token: str | None, data_dir: str | None, org: str, team: str, users_: tuple[str, ...]
) -> None:
    """Remove USERs from TEAM of ORG."""
    _members(url, token, data_dir, org, team, users_, add=False)


# ---- grants and roles ----------------------------------------------------------------------


@rbac.command("grant")
@connection_options
@click.argument("org")
@click.option("--team", help="Team name (or team-…).")
@click.option("--user", "user_", help="Username.")
@click.option("--role", required=True, help="read, plan, write, admin, or a custom role.")
@click.option("--workspaces", required=True, help="Workspace name pattern, e.g. 'prod-*'.")
def grant(
    url: str,
    token: str | None,
    data_dir: str | None,
    org: str,
    team: str | None,
    user_: str | None,
    role: str,
    workspaces: str,
) -> None:
    """Grant ROLE on the workspaces of ORG matching a pattern, to a team or a user."""
    if (team is None) == (user_ is None):
        raise click.UsageError("give exactly one of --team or --user")
    body: JSONObject = {"role": role, "workspaces": workspaces}
    if team:
        body["team"] = team
    else:
        body["user"] = user_
    with open_client(url, token, data_dir) as client, progress("granting"):
        doc = client.post(
            f"/api/cairn/v1/organizations/{_q(org)}/grants", body, doing="create the grant"
        )
    data = doc.get("data") or {}
    click.echo(f"granted {role} on {workspaces} to {team or user_} ({data.get('id')})")


@rbac.command("grants")
@connection_options
@click.argument("org")
@click.option("--json", "as_json", is_flag=True)
def grants(url: str, token: str | None, data_dir: str | None, org: str, as_json: bool) -> None:
    """List the grants of ORG (pattern grants and TFE team-workspace access)."""
    with open_client(url, token, data_dir) as client:
        doc = client.get(f"/api/cairn/v1/organizations/{_q(org)}/grants", doing="list grants")
    items = [g for g in doc.get("data") or [] if isinstance(g, dict)]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _table(
        f"grants in {org}",
        ["id", "role", "to", "workspaces", "kind"],
        [
            [
                g.get("id"),
                g.get("role"),
                f"team {g['team']}" if g.get("team") else f"user {g.get('user')}",
                g.get("workspaces") or g.get("workspace"),
                g.get("kind"),
            ]
            for g in items
        ],
    )


@rbac.command("revoke")
@connection_options
@click.argument("grant_id")
def revoke(url: str, token: str | None, data_dir: str | None, grant_id: str) -> None:
    """Delete a grant (grant-… or tws-…)."""
    with open_client(url, token, data_dir) as client:
        client.delete(f"/api/cairn/v1/grants/{_q(grant_id)}", doing=f"revoke {grant_id}")
    click.echo(f"revoked {grant_id}")


@rbac.group()
def roles() -> None:
    """Roles: the built-in read/plan/write/admin, and custom ones."""


@roles.command("list")
@connection_options
@click.argument("org")
def roles_list(url: str, token: str | None, data_dir: str | None, org: str) -> None:
    """List the roles usable in ORG."""
    with open_client(url, token, data_dir) as client:
        doc = client.get(f"/api/cairn/v1/organizations/{_q(org)}/roles", doing="list roles")
    _table(
        f"roles in {org}",
        ["name", "permissions", "built-in"],
        [
            [r.get("name"), ", ".join(r.get("permissions") or []), r.get("built-in")]
            for r in doc.get("data") or []
            if isinstance(r, dict)
        ],
    )


@roles.command("create")
@connection_options
@click.argument("org")
@click.argument("name")
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    required=True,
    help="workspace:read|write|lock|manage, run:plan, run:apply, org:manage",
)
def roles_create(
    url: str,
    token: str | None,
    data_dir: str | None,
    org: str,
    name: str,
    permissions: tuple[str, ...],
) -> None:
    """Create a custom role NAME in ORG."""
    with open_client(url, token, data_dir) as client:
        client.post(
            f"/api/cairn/v1/organizations/{_q(org)}/roles",
            {"name": name, "permissions": list(permissions)},
            doing=f"create role {name}",
        )
    click.echo(f"created role {name}: {', '.join(permissions)}")


@roles.command("delete")
@connection_options
@click.argument("org")
@click.argument("name")
def roles_delete(url: str, token: str | None, data_dir: str | None, org: str, name: str) -> None:
    """Delete custom role NAME (its grants go with it)."""
    with open_client(url, token, data_dir) as client:
        client.delete(
            f"/api/cairn/v1/organizations/{_q(org)}/roles/{_q(name)}", doing=f"delete role {name}"
        )
    click.echo(f"deleted role {name}")
