"""``cairn user``: disable and enable a person's account (site admins only).

    cairn user disable alice      revoke every token alice holds, drop her IdP team
                                  memberships, refuse her next login
    cairn user enable alice       let alice log in again (her old tokens stay revoked)

NAME is a username or a user ID (``cairn rbac users list`` shows both).
"""

from __future__ import annotations

from urllib.parse import quote

import click

from cairn.cli.client import JSONObject, connection_options, open_client
from cairn.cli.keys import progress


def _action(
    url: str, token: str | None, data_dir: str | None, name: str, action: str
) -> JSONObject:
    path = f"/api/cairn/v1/admin/users/{quote(name, safe='')}/actions/{action}"
    with open_client(url, token, data_dir) as client, progress(f"{action[:-1]}ing {name}"):
        return client.post(path, None, doing=f"{action} user {name}")


@click.group()
def user() -> None:
    """Disable or enable a person's account (site admins)."""


@user.command("disable")
@connection_options
@click.argument("name")
def disable(url: str, token: str | None, data_dir: str | None, name: str) -> None:
    """Disable NAME: revoke every token they hold, remove their IdP-sourced team memberships
    and refuse their next login (token form and IdP). Manually granted memberships and grants
    are kept for when the account is enabled again."""
    doc = _action(url, token, data_dir, name, "disable")
    data, meta = doc.get("data") or {}, doc.get("meta") or {}
    tokens = meta.get("revoked-tokens") or []
    teams = meta.get("removed-idp-teams") or []
    state = "disabled" if meta.get("changed") else "was already disabled;"
    click.echo(
        f"{data.get('username')} ({data.get('id')}) {state} "
        f"{len(tokens)} token(s) revoked, {len(teams)} IdP team membership(s) removed"
    )


@user.command("enable")
@connection_options
@click.argument("name")
def enable(url: str, token: str | None, data_dir: str | None, name: str) -> None:
    """Enable NAME again. Tokens revoked when they were disabled stay revoked: they log in
    again (terraform login) or are given new tokens."""
    doc = _action(url, token, data_dir, name, "enable")
    data, meta = doc.get("data") or {}, doc.get("meta") or {}
    state = "enabled" if meta.get("changed") else "was not disabled"
    click.echo(f"{data.get('username')} ({data.get('id')}) {state}")
