"""``cairn tokens list | create [--description D] [--expires 30d] | revoke TOKEN_ID``: the
calling user's API tokens, through the TFE endpoints (``/api/v2/users/{id}/authentication-tokens``
and ``/api/v2/authentication-tokens/{id}``).

``create`` prints the new token, and only the token, on stdout (``export TOKEN=$(cairn tokens
create)``): it is shown this once and cannot be read back. Tables go to stdout, notes to stderr.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import click

from cairn.cli.client import (
    ApiFailure,
    CairnClient,
    CliError,
    JSONObject,
    connection_options,
    open_client,
)
from cairn.cli.keys import progress, stdout_console
from cairn.config import parse_duration
from cairn.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

MAX_PAGES = 1000  # 100,000 tokens: a server that keeps offering pages is broken


def parse_when(value: str, option: str, *, future: bool) -> datetime:
    """A duration from now (``30d``, ``12h``; into the future or the past) or an ISO 8601
    date/time (UTC unless it says otherwise)."""
    now = datetime.now(UTC)
    try:
        delta = parse_duration(value, option)
    except ConfigError:
        try:
            at = datetime.fromisoformat(value.strip())
        except ValueError:
            raise click.BadParameter(
                f"must be a duration like 30d, 12h or 15m, or an ISO 8601 time like "
                f"2030-01-31T12:00:00Z, not {value!r}"
            ) from None
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return now + delta if future else now - delta


def whoami(client: CairnClient) -> tuple[str, str]:
    """The calling user's id and name."""
    doc = client.get("/api/v2/account/details", doing="read your account", jsonapi=True)
    data = doc.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise CliError("the server's account details have no user id")
    attrs = data.get("attributes") or {}
    return data["id"], str(attrs.get("username", ""))


def list_all(client: CairnClient, path: str, *, doing: str) -> list[JSONObject]:
    """Every item of a paginated JSON:API list."""
    items: list[JSONObject] = []
    for number in range(1, MAX_PAGES + 1):
        query = urlencode({"page[number]": number, "page[size]": 100})
        doc = client.get(f"{path}?{query}", doing=doing, jsonapi=True)
        data = doc.get("data")
        if not isinstance(data, list):
            raise CliError(f"cannot {doing}: the server's answer has no list of data")
        items.extend(d for d in data if isinstance(d, dict))
        pagination = (doc.get("meta") or {}).get("pagination") or {}
        if not data or not pagination.get("next-page"):
            break
    return items


def _time(value: Any) -> str:
    if not value:
        return "—"
    at = datetime.fromisoformat(str(value)).astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S")


def token_table(items: list[JSONObject]) -> Table:
    from rich.table import Table
    from rich.text import Text

    now = datetime.now(UTC)
    table = Table(caption="times in UTC", caption_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("description")
    table.add_column("created")
    table.add_column("last used")
    table.add_column("expires")
    for item in items:
        attrs = item.get("attributes") or {}
        expires = attrs.get("expired-at")
        expired = bool(expires) and datetime.fromisoformat(str(expires)) <= now
        table.add_row(
            str(item.get("id", "")),
            str(attrs.get("description") or ""),
            _time(attrs.get("created-at")),
            _time(attrs.get("last-used-at")) if attrs.get("last-used-at") else Text("never", "dim"),
            Text(_time(expires) + (" (expired)" if expired else ""), "red" if expired else "")
            if expires
            else Text("never", "dim"),
        )
    return table


@click.group()
def tokens() -> None:
    """Your API tokens: list, create (shown once), revoke."""


@tokens.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def list_tokens(url: str, token: str | None, data_dir: str | None, as_json: bool) -> None:
    """List your API tokens (never their values): id, description, times."""
    with open_client(url, token, data_dir) as client, progress("Reading your tokens…"):
        user_id, _ = whoami(client)
        items = list_all(
            client,
            f"/api/v2/users/{quote(user_id, safe='')}/authentication-tokens",
            doing="list your API tokens",
        )
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    stdout_console().print(token_table(items))


def _expires(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    at = parse_when(value, "--expires", future=True)
    if at <= datetime.now(UTC):
        raise click.BadParameter("must be in the future")
    return at


@tokens.command("create")
@connection_options
@click.option("--description", "-d", default="", help="What the token is for (shown in lists).")
@click.option(
    "--expires",
    callback=_expires,
    metavar="30d|ISO",
    help="Expire after a duration (30d, 12h…) or at an ISO 8601 time [default: never].",
)
def create_token(
    url: str,
    token: str | None,
    data_dir: str | None,
    description: str,
    expires: datetime | None,
) -> None:
    """Create an API token for yourself and print it on stdout, once."""
    attrs: dict[str, Any] = {"description": description}
    if expires is not None:
        attrs["expired-at"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    with open_client(url, token, data_dir) as client:
        user_id, username = whoami(client)
        doc = client.post(
            f"/api/v2/users/{quote(user_id, safe='')}/authentication-tokens",
            {"data": {"type": "authentication-tokens", "attributes": attrs}},
            doing="create an API token",
            jsonapi=True,
        )
    data = doc.get("data") or {}
    value = (data.get("attributes") or {}).get("token") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise CliError("the server's answer has no token")
    click.echo(value)
    click.echo(
        f"Created token {data.get('id')} for {username}. It is shown only this once: store it "
        f"now (revoke it with `cairn tokens revoke {data.get('id')}`).",
        err=True,
    )


@tokens.command("revoke")
@connection_options
@click.argument("token_id", metavar="TOKEN_ID")
def revoke_token(url: str, token: str | None, data_dir: str | None, token_id: str) -> None:
    """Revoke one of your tokens by its id (at-…); it stops working at once."""
    with open_client(url, token, data_dir) as client:
        try:
            client.delete(
                f"/api/v2/authentication-tokens/{quote(token_id, safe='')}",
                doing=f"revoke token {token_id}",
                jsonapi=True,
            )
        except ApiFailure as exc:
            if exc.status == 404:
                raise CliError(
                    f"there is no token {token_id} that you may revoke (list yours with "
                    "`cairn tokens list`)"
                ) from None
            raise
    click.echo(f"revoked {token_id}")
