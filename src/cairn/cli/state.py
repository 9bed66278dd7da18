"""``cairn state list|pull|rollback``: a workspace's state history, through the TFE API.
A version is named by its ID (``sv-…``) or its serial; ``pull`` without one takes the current.

    cairn state list acme/app
    cairn state pull acme/app -o app.tfstate            # a progress bar on a terminal
    cairn state pull acme/app --version 3 > old.tfstate
    cairn state rollback acme/app 3                      # a new version with serial 3's content
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click

from cairn.cli.client import (
    CairnClient,
    CliError,
    Download,
    JSONObject,
    connection_options,
    open_client,
)
from cairn.cli.keys import progress, stderr_console
from cairn.cli.tfe import (
    WORKSPACE,
    WorkspaceRef,
    attrs,
    hint,
    json_option,
    list_pages,
    print_json,
    print_table,
    q,
    read_workspace,
    related_id,
    resource,
    when,
)

DEFAULT_LIMIT = 20


@click.group()
def state() -> None:
    """State versions of a workspace: list, pull (download), rollback."""


def _history_path(ws_id: str) -> str:
    return f"/api/v2/workspaces/{q(ws_id)}/state-versions"


def find_version(client: CairnClient, ws: WorkspaceRef, ws_id: str, version: str) -> JSONObject:
    """The state version ``version`` (``sv-…`` or a serial) of the workspace."""
    wanted = version.strip()
    if wanted.startswith("sv-"):
        with hint(404, f"list the versions with `cairn state list {ws}`"):
            doc = client.get(
                f"/api/v2/state-versions/{q(wanted)}",
                doing=f"read state version {wanted}",
                jsonapi=True,
            )
        found = resource(doc, f"read state version {wanted}")
        if related_id(found, "workspace") != ws_id:
            raise CliError(
                f"state version {wanted} is not a version of {ws} (list them with "
                f"`cairn state list {ws}`)"
            )
        return found
    if not wanted.isdigit():
        raise click.BadParameter(
            f"name a state version by its ID (sv-…) or its serial number, not {version!r}",
            param_hint="VERSION",
        )
    serial = int(wanted)
    items, _ = list_pages(client, _history_path(ws_id), doing=f"list the state versions of {ws}")
    for item in items:
        if attrs(item).get("serial") == serial and attrs(item).get("status") == "finalized":
            return item
    raise CliError(
        f"workspace {ws} has no state version with serial {serial} (list them with "
        f"`cairn state list {ws}`)"
    )


def current_version(client: CairnClient, ws: WorkspaceRef, ws_id: str) -> JSONObject:
    with hint(404, "`terraform apply` or `terraform state push` writes the first one"):
        doc = client.get(
            f"/api/v2/workspaces/{q(ws_id)}/current-state-version",
            doing=f"read the current state of {ws}",
            jsonapi=True,
        )
    return resource(doc, f"read the current state of {ws}")


@state.command("list")
@connection_options
@click.argument("ws", metavar="ORG/WORKSPACE", type=WORKSPACE)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=100_000),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Show at most this many versions, newest first.",
)
@json_option
def list_versions(
    url: str, token: str | None, data_dir: str | None, ws: WorkspaceRef, limit: int, as_json: bool
) -> None:
    """List the state versions of a workspace, newest first."""
    with open_client(url, token, data_dir) as client, progress("Reading the state history…"):
        workspace = read_workspace(client, ws, doing=f"read workspace {ws}")
        items, total = list_pages(
            client,
            _history_path(str(workspace["id"])),
            doing=f"list the state versions of {ws}",
            limit=limit,
        )
    if as_json:
        print_json(items)
        return
    current = related_id(workspace, "current-state-version")
    serials = {item.get("id"): attrs(item).get("serial") for item in items}
    rows: list[list[Any]] = []
    for item in items:
        a = attrs(item)
        rolled = related_id(item, "rollback-state-version")
        if rolled in serials:
            rolled = f"serial {serials[rolled]} ({rolled})"
        rows.append(
            [
                a.get("serial"),
                item.get("id"),
                "current" if item.get("id") == current else "",
                when(a.get("created-at")),
                _size(a.get("size")),
                a.get("terraform-version"),
                a.get("status"),
                f"rollback to {rolled}" if rolled else "",
            ]
        )
    shown = (
        f" (newest {len(items)} of {total}; --limit shows more)"
        if total and total > len(items)
        else ""
    )
    print_table(
        ["serial", "id", "", "created", "size", "terraform", "status", "note"],
        rows,
        title=f"state versions of {ws}{shown}",
        empty=f"workspace {ws} has no state yet",
    )


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


@state.command("pull")
@connection_options
@click.argument("ws", metavar="ORG/WORKSPACE", type=WORKSPACE)
@click.option(
    "--version",
    "version",
    metavar="sv-…|SERIAL",
    help="The version to download [default: the current state].",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write the state to this file (created private, 0600) [default: stdout].",
)
def pull(
    url: str,
    token: str | None,
    data_dir: str | None,
    ws: WorkspaceRef,
    version: str | None,
    output: str,
) -> None:
    """Download a state version, byte for byte (checked against its MD5)."""
    with open_client(url, token, data_dir) as client:
        with progress("Finding the state version…"):
            ws_id = str(read_workspace(client, ws, doing=f"read workspace {ws}")["id"])
            sv = (
                find_version(client, ws, ws_id, version)
                if version
                else current_version(client, ws, ws_id)
            )
        a = attrs(sv)
        doing = f"download state version {sv['id']} of {ws}"
        # No bar over a state being printed on the same terminal.
        bar = not (output == "-" and sys.stdout.isatty())
        label = f"serial {a.get('serial')}"
        with _sink(output) as sink, _progress_bar(label, shown=bar) as advance:
            got = client.download(
                f"/api/v2/state-versions/{q(str(sv['id']))}/download",
                sink,
                doing=doing,
                on_progress=advance,
            )
            _check(got, a, doing)
    where = "stdout" if output == "-" else output
    click.echo(
        f"pulled {ws} serial {a.get('serial')} ({sv['id']}, {got.size} bytes) to {where}",
        err=True,
    )


def _check(got: Download, a: JSONObject, doing: str) -> None:
    size, md5 = a.get("size"), a.get("md5")
    if isinstance(size, int) and got.size != size:
        raise CliError(f"cannot {doing}: received {got.size} bytes, the version has {size}")
    if isinstance(md5, str) and md5 and got.md5 != md5.lower():
        raise CliError(
            f"cannot {doing}: the bytes received have MD5 {got.md5}, the version's is {md5}; "
            "try again"
        )


@contextlib.contextmanager
def _sink(output: str) -> Iterator[BinaryIO]:
    """stdout, or a private temporary file beside ``output`` that replaces it only when the
    whole state arrived and checked out."""
    if output == "-":
        try:
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # Whoever read stdout stopped early; say so rather than look like a whole state.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise CliError("stdout was closed before the whole state was written") from None
        return
    target = Path(output)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp creates it 0600: a state holds secrets
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # disk full, target is a directory, …
            raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
        raise


@contextlib.contextmanager
def _progress_bar(label: str, *, shown: bool) -> Iterator[Callable[[int, int | None], None]]:
    """A download bar on stderr when it is a terminal; a no-op callback otherwise."""
    console = stderr_console()
    if not shown or not console.is_terminal:
        yield lambda received, total: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(received: int, total: int | None) -> None:
            bar.update(task, completed=received, total=total)

        yield advance


@state.command("rollback")
@connection_options
@click.argument("ws", metavar="ORG/WORKSPACE", type=WORKSPACE)
@click.argument("version", metavar="VERSION")
@json_option
def rollback(
    url: str, token: str | None, data_dir: str | None, ws: WorkspaceRef, version: str, as_json: bool
) -> None:
    """Make an earlier state version (sv-… or a serial) current again.

    This adds a new version with that version's content and the next serial: the history
    keeps everything, and rolling forward is another rollback. An unlocked workspace is
    locked for the moment it takes; a workspace locked by someone else is refused."""
    with open_client(url, token, data_dir) as client:
        workspace = read_workspace(client, ws, doing=f"read workspace {ws}")
        ws_id = str(workspace["id"])
        target = find_version(client, ws, ws_id, version)
        serial = attrs(target).get("serial")
        if target["id"] == related_id(workspace, "current-state-version"):
            raise CliError(f"state version {target['id']} (serial {serial}) is already current")
        with _held(client, ws, ws_id, attrs(workspace).get("locked"), serial):
            body = {
                "data": {
                    "type": "state-versions",
                    "relationships": {
                        "rollback-state-version": {
                            "data": {"type": "state-versions", "id": target["id"]}
                        }
                    },
                }
            }
            with hint(409, f"unlock it first (`cairn workspace unlock {ws}`) or ask its holder"):
                doc = client.patch(
                    _history_path(ws_id),
                    body,
                    doing=f"roll {ws} back to serial {serial}",
                    jsonapi=True,
                )
    new = resource(doc, f"roll {ws} back")
    if as_json:
        print_json(new)
        return
    click.echo(
        f"rolled {ws} back to serial {serial} ({target['id']}): the current state is now "
        f"serial {attrs(new).get('serial')} ({new['id']})"
    )


@contextlib.contextmanager
def _held(
    client: CairnClient, ws: WorkspaceRef, ws_id: str, locked: Any, serial: Any
) -> Iterator[None]:
    """Hold the workspace's lock for the block if no one holds it (state is only written
    under a lock); a lock already held is left alone."""
    if locked:
        yield
        return
    path = f"/api/v2/workspaces/{q(ws_id)}/actions"
    reason = f"cairn state rollback to serial {serial}"
    client.post(
        f"{path}/lock",
        {"data": {"type": "workspaces", "attributes": {"reason": reason}}},
        doing=f"lock workspace {ws} for the rollback",
        jsonapi=True,
    )

    def release(*, failing: bool) -> None:
        try:
            client.post(f"{path}/unlock", doing=f"unlock workspace {ws}", jsonapi=True)
        except CliError as exc:  # ApiFailure too
            still = f"the workspace is still locked by you: `cairn workspace unlock {ws}`"
            if not failing:
                raise CliError(f"{exc.format_message()}; {still}") from None
            click.secho(f"warning: {exc.format_message()}; {still}", fg="yellow", err=True)

    try:
        yield
    except BaseException:
        release(failing=True)
        raise
    release(failing=False)
