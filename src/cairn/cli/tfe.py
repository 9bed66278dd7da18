"""What the TFE-API commands (``cairn org``, ``cairn workspace``, ``cairn state``) share: naming
a workspace, reading it, turning an API refusal into an error that says what to do, asking
before destroying, and printing (a rich table on stdout, or ``--json`` for machines).

Exit status: 0 on success, 1 when cairn refused or could not be reached (one ``error: …`` line
on stderr), 2 for a usage mistake (click's own).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import click

from cairn.cli.client import ApiFailure, CairnClient, CliError, JSONObject
from cairn.cli.keys import stdout_console

if TYPE_CHECKING:
    from rich.text import Text

F = TypeVar("F", bound=Callable[..., Any])

_WORKSPACE_ID = re.compile(r"ws-[A-Za-z0-9]+")


def q(value: str) -> str:
    """``value`` as one path segment."""
    return quote(value, safe="")


@dataclass(frozen=True)
class WorkspaceRef:
    """A workspace as the user named it: ``ORG/NAME``, or its ID ``ws-…``."""

    org: str | None
    name: str | None
    id: str | None = None

    def __str__(self) -> str:
        return self.id or f"{self.org}/{self.name}"

    @property
    def path(self) -> str:
        """The API path of the workspace."""
        if self.id:
            return f"/api/v2/workspaces/{q(self.id)}"
        return f"/api/v2/organizations/{q(self.org or '')}/workspaces/{q(self.name or '')}"

    def list_hint(self) -> str:
        if self.org:
            return f"list them with `cairn workspace list {self.org}`"
        return "list them with `cairn workspace list ORG`"


if TYPE_CHECKING:
    _ParamType = click.ParamType[WorkspaceRef]
else:  # click < 8.2's ParamType is not generic
    _ParamType = click.ParamType


class WorkspaceArg(_ParamType):
    name = "ORG/WORKSPACE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, WorkspaceRef):
            return value
        text = str(value).strip()
        if _WORKSPACE_ID.fullmatch(text):  # as go-tfe and pytfe recognise one
            return WorkspaceRef(None, None, text)
        org, sep, name = text.partition("/")
        if not sep or not org or not name or "/" in name:
            self.fail(f"name a workspace as ORGANIZATION/WORKSPACE (or ws-…), not {text!r}")
        return WorkspaceRef(org, name)


WORKSPACE = WorkspaceArg()


@contextmanager
def hint(status: int, advice: str | None) -> Iterator[None]:
    """Add ``advice`` (if any) to an API refusal with ``status`` raised inside the block."""
    try:
        yield
    except ApiFailure as exc:
        if exc.status != status or not advice:
            raise
        raise ApiFailure(f"{exc.format_message()} ({advice})", exc.status) from None


def read_workspace(client: CairnClient, ws: WorkspaceRef, *, doing: str) -> JSONObject:
    """The workspace's JSON:API resource object."""
    with hint(404, ws.list_hint()):
        doc = client.get(ws.path, doing=doing, jsonapi=True)
    return resource(doc, doing)


def resource(doc: JSONObject, doing: str) -> JSONObject:
    """``doc["data"]`` when it is a resource object."""
    data = doc.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise CliError(f"cannot {doing}: the server's answer has no resource object")
    return data


def attrs(item: JSONObject) -> JSONObject:
    value = item.get("attributes")
    return value if isinstance(value, dict) else {}


def related_id(item: JSONObject, name: str) -> str | None:
    rel = (item.get("relationships") or {}).get(name)
    data = rel.get("data") if isinstance(rel, dict) else None
    return str(data["id"]) if isinstance(data, dict) and data.get("id") else None


def confirm(question: str, yes: bool, what: str) -> None:
    """Ask ``question`` on stderr unless ``yes``; anything but yes (or no terminal) stops with
    an error saying how to skip the question."""
    if yes:
        return
    try:
        agreed = click.confirm(question, default=False, err=True)
        if not sys.stdin.isatty():  # the answer was not echoed: end the prompt's line
            click.echo(err=True)
    except click.Abort:  # end of input or ^C
        click.echo(err=True)
        agreed = False
    if not agreed:
        raise CliError(f"{what} was not deleted (answer y, or pass --yes to skip the question)")


def yes_option(f: F) -> F:
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(f)


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON:API objects instead."
    )(f)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def when(value: Any) -> Text | str:
    """An API timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC), or a dim dash."""
    from rich.text import Text

    if not value:
        return Text("—", style="dim")
    try:
        at = datetime.fromisoformat(str(value)).astimezone(UTC)
    except ValueError:
        return str(value)
    return at.strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any) -> Text:
    """A table cell. Values are shown literally: a ``[bold]`` in a description or lock reason
    is text, never rich markup."""
    from rich.text import Text

    if isinstance(value, Text):
        return value
    if value is None or value == "" or value == []:
        return Text("—", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list):
        return Text(", ".join(map(str, value)))
    return Text(str(value))


def print_table(
    columns: list[str], rows: list[list[Any]], *, title: str | None = None, empty: str = ""
) -> None:
    """A rich table on stdout (times in UTC); ``empty`` on stderr when there are no rows."""
    from rich.table import Table

    if not rows and empty:
        click.echo(empty, err=True)
        return
    from rich.text import Text

    table = Table(
        title=Text(title) if title else None, caption="times in UTC", caption_justify="left"
    )
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*[cell(v) for v in r])
    stdout_console().print(table)


def print_fields(title: str, fields: list[tuple[str, Any]]) -> None:
    """``name  value`` lines under a title, for one object."""
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=Text(title, style="bold"),
        show_header=False,
        box=None,
        title_justify="left",
        pad_edge=False,
    )
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in fields:
        table.add_row(name, cell(value))
    stdout_console().print(table)


MAX_PAGES = 1000  # 100,000 items: a server that keeps offering pages is broken


def list_pages(
    client: CairnClient,
    path: str,
    *,
    doing: str,
    params: dict[str, str] | None = None,
    limit: int | None = None,
) -> tuple[list[JSONObject], int | None]:
    """The items of a paginated JSON:API list (at most ``limit``), and the total count the
    server reported."""
    from urllib.parse import urlencode

    items: list[JSONObject] = []
    total: int | None = None
    size = 100 if limit is None else max(1, min(100, limit))
    for number in range(1, MAX_PAGES + 1):
        query = urlencode({**(params or {}), "page[number]": number, "page[size]": size})
        doc = client.get(f"{path}?{query}", doing=doing, jsonapi=True)
        data = doc.get("data")
        if not isinstance(data, list):
            raise CliError(f"cannot {doing}: the server's answer has no list of data")
        items.extend(d for d in data if isinstance(d, dict))
        pagination = (doc.get("meta") or {}).get("pagination") or {}
        if isinstance(pagination.get("total-count"), int):
            total = pagination["total-count"]
        if limit is not None and len(items) >= limit:
            return items[:limit], total
        if not data or not pagination.get("next-page"):
            break
    return items, total
