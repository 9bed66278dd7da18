"""``cairn audit [--action A] [--actor U] [--subject S] [--outcome O] [--since 1h|ISO]
[--until …] [--limit N] [--json]``: the newest audit events, through
``/api/cairn/v1/audit-events``. Site admins only.

``--action`` selects one action (``token.create``) or, ending in ``.`` or ``*``, a family
(``oidc.``). ``--json`` prints the events as a JSON list, for ``jq``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import click

from cairn.cli.client import ApiFailure, CliError, JSONObject, connection_options, open_client
from cairn.cli.keys import progress, stdout_console
from cairn.cli.tokens import parse_when

if TYPE_CHECKING:
    from rich.table import Table

PATH = "/api/cairn/v1/audit-events"
PAGE_SIZE = 100  # the server's maximum
_OUTCOME_STYLE = {"success": "green", "failure": "red", "denied": "red"}


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    return parse_when(value, f"--{param.name}", future=False)


def _details(details: Any) -> str:
    if not isinstance(details, dict):
        return ""
    shown = {k: v for k, v in details.items() if v not in (None, "", [], {})}
    return " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
        for k, v in shown.items()
    )


def event_table(items: list[JSONObject]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(caption="newest first; times in UTC", caption_justify="left")
    table.add_column("time", no_wrap=True)
    table.add_column("actor")
    table.add_column("action", no_wrap=True)
    table.add_column("subject", overflow="fold")
    table.add_column("outcome")
    table.add_column("from")
    table.add_column("details", overflow="fold")
    for item in items:
        a = item.get("attributes") or {}
        at = a.get("at")
        when = (
            datetime.fromisoformat(str(at)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            if at
            else ""
        )
        outcome = str(a.get("outcome") or "")
        table.add_row(
            when,
            str(a.get("actor-name") or ""),
            str(a.get("action") or ""),
            str(a.get("subject") or ""),
            Text(outcome, style=_OUTCOME_STYLE.get(outcome, "yellow")),
            str(a.get("source-address") or ""),
            _details(a.get("details")),
        )
    return table


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@click.command("audit")
@connection_options
@click.option("--action", help="An action (token.create), or a family ending in . or * (oidc.).")
@click.option("--actor", help="A user name or user id.")
@click.option("--subject", help="Events whose subject contains this text.")
@click.option("--outcome", help="success, failure, denied…")
@click.option("--since", callback=_since, metavar="1h|ISO", help="Since a time ago, or a time.")
@click.option("--until", callback=_since, metavar="1h|ISO", help="Before a time ago, or a time.")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="At most this many events.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the events as a JSON list.")
def audit(
    url: str,
    token: str | None,
    data_dir: str | None,
    action: str | None,
    actor: str | None,
    subject: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show the audit log, newest first (site admins)."""
    params: dict[str, str] = {}
    for name, value in (
        ("action", action),
        ("actor", actor),
        ("subject", subject),
        ("outcome", outcome),
    ):
        if value:
            params[f"filter[{name}]"] = value
    if since is not None:
        params["filter[since]"] = _iso(since)
    if until is not None:
        params["filter[until]"] = _iso(until)
    items: list[JSONObject] = []
    size = min(limit, PAGE_SIZE)
    with open_client(url, token, data_dir) as client, progress("Reading the audit log…"):
        number = 1
        while len(items) < limit:
            query = urlencode({**params, "page[number]": number, "page[size]": size})
            try:
                doc = client.get(f"{PATH}?{query}", doing="read the audit log", jsonapi=True)
            except ApiFailure as exc:
                if exc.status == 404:
                    raise CliError(
                        f"{exc.format_message()} (only a site admin's token may read the audit log)"
                    ) from None
                raise
            data = doc.get("data")
            if not isinstance(data, list):
                raise CliError("cannot read the audit log: the answer has no list of events")
            items.extend(d for d in data if isinstance(d, dict))
            pagination = (doc.get("meta") or {}).get("pagination") or {}
            if not data or not pagination.get("next-page"):
                break
            number += 1
    items = items[:limit]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    console = stdout_console()
    if not items:
        console.print("no audit events match")
        return
    console.print(event_table(items))
