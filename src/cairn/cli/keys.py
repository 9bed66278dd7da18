"""``cairn keys list | rotate [--emergency] [--force] | trim``: the issuer's signing keys,
through the admin API (``/api/cairn/v1/admin/oidc/keys``). Site admins only.

Tables go to stdout; progress spinners to stderr, so ``cairn keys list --json | jq`` works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from cairn.cli.client import (
    ApiFailure,
    CairnClient,
    CliError,
    JSONObject,
    connection_options,
    open_client,
)

if TYPE_CHECKING:  # rich is imported when used: `cairn serve` starts faster
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

KEYS_PATH = "/api/cairn/v1/admin/oidc/keys"

# Piped output is not wrapped at 80 columns: a kid (43 characters) must stay whole for grep.
PIPED_WIDTH = 240

_STATE_STYLE = {"active": "bold green", "next": "cyan", "retired": "yellow", "revoked": "red"}
_TIMES = (
    ("published", "published-at"),
    ("activated", "activated-at"),
    ("retired", "retired-at"),
    ("retire until", "retire-until"),
    ("revoked", "revoked-at"),
)


@dataclass(frozen=True)
class KeyRow:
    """One signing key's metadata as the admin API lists it (never key material)."""

    version: int
    kid: str
    alg: str
    state: str
    times: dict[str, datetime | None]

    @classmethod
    def parse(cls, raw: object) -> KeyRow:
        if not isinstance(raw, dict):
            raise CliError("the server's key list is malformed (an entry is not an object)")
        try:
            return cls(
                version=int(raw["version"]),
                kid=str(raw["kid"]),
                alg=str(raw["alg"]),
                state=str(raw["state"]),
                times={attr: _parse_time(raw.get(attr)) for _, attr in _TIMES},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CliError(f"the server's key list is malformed ({exc!r})") from None


def _parse_time(value: object) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def parse_keys(raw: object) -> list[KeyRow]:
    if not isinstance(raw, list):
        raise CliError("the server's key list is malformed (not a list)")
    return sorted((KeyRow.parse(item) for item in raw), key=lambda k: k.version)


def stdout_console() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=PIPED_WIDTH)
    return console


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner on stderr while a call runs (nothing at all when stderr is not a terminal)."""
    console = stderr_console()
    if not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


def key_table(keys: list[KeyRow]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(caption="times in UTC", caption_justify="left")
    table.add_column("version", justify="right")
    table.add_column("kid", overflow="fold")
    table.add_column("alg")
    table.add_column("state")
    for title, _ in _TIMES:
        table.add_column(title)
    for key in keys:
        cells: list[Text | str] = [
            str(key.version),
            key.kid,
            key.alg,
            Text(key.state, style=_STATE_STYLE.get(key.state, "")),
        ]
        for _, attr in _TIMES:
            at = key.times[attr]
            cells.append(at.strftime("%Y-%m-%d %H:%M:%S") if at else Text("—", style="dim"))
        table.add_row(*cells)
    return table


def _keys_of(doc: JSONObject) -> list[KeyRow]:
    data = doc.get("data")
    if isinstance(data, dict):
        data = data.get("keys")
    return parse_keys(data)


def _print_changes(console: Console, what: str, report: Any) -> None:
    if not isinstance(report, dict):
        raise CliError("the server's answer is malformed (no change report)")
    changes = report.get("changes") or []
    forced = " (forced)" if report.get("forced") else ""
    if changes:
        console.print(f"{what}{forced}:")
        for line in changes:
            console.print(f"  {line}", markup=False)
    else:
        console.print(f"{what}: nothing to change.")
    if report.get("note"):
        console.print(str(report["note"]), markup=False)


@click.group()
def keys() -> None:
    """The workload-identity issuer's signing keys (site admins)."""


@keys.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def list_keys(url: str, token: str | None, data_dir: str | None, as_json: bool) -> None:
    """List signing keys: version, kid, algorithm, state and lifecycle times."""
    with open_client(url, token, data_dir) as client, progress("Reading signing keys…"):
        try:
            doc = client.get(KEYS_PATH, doing="list the signing keys")
        except ApiFailure as exc:
            if exc.status == 404:  # the admin API hides itself from other users
                raise CliError(
                    f"{exc.format_message()} (only a site admin's token may list signing keys)"
                ) from None
            raise
    rows = parse_keys(doc.get("data"))
    if as_json:
        click.echo(json.dumps(doc.get("data"), indent=2))
        return
    stdout_console().print(key_table(rows))


@keys.command("rotate")
@connection_options
@click.option(
    "--emergency",
    is_flag=True,
    help="Revoke the active and next keys now (they leave the JWKS) and sign with a new key.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Promote the next key even if it was published for less than the pre-publication "
    "window (verifiers with an older JWKS may reject new tokens until they refetch).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (--emergency).")
def rotate(
    url: str, token: str | None, data_dir: str | None, emergency: bool, force: bool, yes: bool
) -> None:
    """Rotate the signing keys: graceful (next becomes active), or --emergency."""
    mode = "emergency" if emergency else "graceful"
    with open_client(url, token, data_dir) as client:
        if emergency and not yes:
            click.confirm(
                f"An emergency rotation on {client.url} revokes the active and next signing keys "
                "at once: every token they signed stops verifying as soon as verifiers refetch "
                "the JWKS. Continue?",
                abort=True,
                err=True,
            )
        doc = _post(client, "/rotate", {"mode": mode, "force": force}, f"{mode} rotation")
    data = doc.get("data")
    console = stdout_console()
    _print_changes(
        console,
        f"{mode.capitalize()} rotation",
        data.get("rotation") if isinstance(data, dict) else None,
    )
    console.print(key_table(_keys_of(doc)))


@keys.command("trim")
@connection_options
def trim(url: str, token: str | None, data_dir: str | None) -> None:
    """Delete retired keys whose retention has passed (never active or next ones)."""
    with open_client(url, token, data_dir) as client:
        doc = _post(client, "/trim", {}, "trim")
    data = doc.get("data")
    console = stdout_console()
    _print_changes(console, "Trim", data.get("trim") if isinstance(data, dict) else None)
    console.print(key_table(_keys_of(doc)))


def _post(client: CairnClient, suffix: str, body: JSONObject, what: str) -> JSONObject:
    with progress(f"Running the {what}…"):
        return client.post(KEYS_PATH + suffix, body, doing=f"run the {what} of the signing keys")
