"""``cairn workspace create|list|show|lock|unlock|delete``: workspaces, through the TFE API.
A workspace is named ``ORG/NAME`` (or by its ID, ``ws-…``).

    cairn workspace create acme/app --tag prod
    cairn workspace list acme --search app
    cairn workspace show acme/app --json
    cairn workspace lock acme/app --reason "migrating"
    cairn workspace unlock acme/app          # --force: release someone else's lock (admins)
    cairn workspace delete acme/app          # asks first; refuses while it manages resources
"""

from __future__ import annotations

from typing import Any

import click

from cairn.cli.client import (
    ApiFailure,
    CairnClient,
    CliError,
    JSONObject,
    connection_options,
    open_client,
)
from cairn.cli.keys import progress
from cairn.cli.tfe import (
    WORKSPACE,
    WorkspaceRef,
    attrs,
    confirm,
    hint,
    json_option,
    list_pages,
    print_fields,
    print_json,
    print_table,
    q,
    read_workspace,
    related_id,
    resource,
    when,
    yes_option,
)


def org_hint(org: str) -> str:
    return f"is the organization {org!r} right? list them with `cairn org list`"


@click.group()
def workspace() -> None:
    """Workspaces: create, list, show, lock, unlock, delete."""


@workspace.command("create")
@connection_options
@click.argument("ws", metavar="ORG/WORKSPACE", type=WORKSPACE)
@click.option("--description", help="What the workspace is for.")
@click.option(
    "--execution-mode",
    metavar="local|remote|agent",
    help="Where runs execute [default: the organization's].",
)
@click.option("--terraform-version", help="The Terraform version runs use (e.g. 1.0.3).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for several).")
@click.option("--project", help="The project's ID (prj-…) [default: the default project].")
@json_option
def create(
    url: str,
    token: str | None,
    data_dir: str | None,
    ws: WorkspaceRef,
    description: str | None,
    execution_mode: str | None,
    terraform_version: str | None,
    tags: tuple[str, ...],
    project: str | None,
    as_json: bool,
) -> None:
    """Create a workspace. `terraform init` also creates one on first use."""
    if ws.org is None:
        raise click.BadParameter(
            "name the new workspace as ORG/WORKSPACE", param_hint="ORG/WORKSPACE"
        )
    attributes: dict[str, Any] = {"name": ws.name}
    for key, value in (
        ("description", description),
        ("execution-mode", execution_mode),
        ("terraform-version", terraform_version),
    ):
        if value is not None:
            attributes[key] = value
    if tags:
        attributes["tag-names"] = list(tags)
    data: JSONObject = {"type": "workspaces", "attributes": attributes}
    if project:
        data["relationships"] = {"project": {"data": {"type": "projects", "id": project}}}
    doing = f"create workspace {ws}"
    with (
        open_client(url, token, data_dir) as client,
        progress("Creating the workspace…"),
        hint(404, org_hint(ws.org)),
    ):
        doc = client.post(
            f"/api/v2/organizations/{q(ws.org)}/workspaces",
            {"data": data},
            doing=doing,
            jsonapi=True,
        )
    created = resource(doc, doing)
    if as_json:
        print_json(created)
        return
    click.echo(f"created workspace {ws} ({created['id']})")


@workspace.command("list")
@connection_options
@click.argument("org")
@click.option("--search", help="Only workspaces whose name contains this.")
@click.option("--tag", "tags", multiple=True, help="Only workspaces with this tag (repeatable).")
@json_option
def list_workspaces(
    url: str,
    token: str | None,
    data_dir: str | None,
    org: str,
    search: str | None,
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """List the workspaces of ORG that you can see."""
    params: dict[str, str] = {}
    if search:
        params["search[name]"] = search
    if tags:
        params["search[tags]"] = ",".join(tags)
    with (
        open_client(url, token, data_dir) as client,
        progress("Reading workspaces…"),
        hint(404, org_hint(org)),
    ):
        items, _ = list_pages(
            client,
            f"/api/v2/organizations/{q(org)}/workspaces",
            params=params,
            doing=f"list the workspaces of {org}",
        )
    if as_json:
        print_json(items)
        return
    rows: list[list[Any]] = []
    for item in items:
        a = attrs(item)
        rows.append(
            [
                a.get("name"),
                item.get("id"),
                _lock_cell(a),
                a.get("resource-count"),
                a.get("execution-mode"),
                a.get("terraform-version"),
                a.get("tag-names"),
                when(a.get("updated-at")),
            ]
        )
    print_table(
        ["name", "id", "locked", "resources", "execution", "terraform", "tags", "updated"],
        rows,
        title=f"workspaces of {org}",
        empty=f"no workspaces in {org}"
        + (" match" if params else f": create one with `cairn workspace create {org}/NAME`"),
    )


def _lock_cell(a: JSONObject) -> Any:
    from rich.text import Text

    return Text("locked", style="yellow") if a.get("locked") else "no"


@workspace.command("show")
@connection_options
@click.argument("ws", metavar="ORG/WORKSPACE", type=WORKSPACE)
@json_option
def show(
    url: str, token: str | None, data_dir: str | None, ws: WorkspaceRef, as_json: bool
) -> None:
    """Show a workspace: settings, lock, current state."""
    with open_client(url, token, data_dir) as client, progress("Reading the workspace…"):
        data = read_workspace(client, ws, doing=f"show workspace {ws}")
        holder = _holder(client, data) if attrs(data).get("locked") else None
    if as_json:
        print_json(data)
        return
    a = attrs(data)
    org = related_id(data, "organization") or ws.org
    locked = a.get("locked")
    print_fields(
        f"workspace {org}/{a.get('name')}",
        [
            ("id", data.get("id")),
            ("organization", org),
            ("project", related_id(data, "project")),
            ("description", a.get("description")),
            ("execution mode", a.get("execution-mode")),
            ("terraform version", a.get("terraform-version")),
            ("working directory", a.get("working-directory")),
            ("auto-apply", a.get("auto-apply")),
            ("tags", a.get("tag-names")),
            (
                "locked",
                f"yes, by {holder}"
                + (f"; reason: {a['locked-reason']}" if a.get("locked-reason") else "")
                if locked
                else False,
            ),
            ("resources", a.get("resource-count")),
            ("current state", related_id(data, "current-state-version")),
            ("created", when(a.get("created-at"))),
            ("updated", when(a.get("updated-at"))),
        ],
    )


def _holder(client: CairnClient, data: JSONObject) -> str | None:
    """Who holds the workspace's lock: a username when the lock holder is a user you may
    see, else its ID."""
    rel = ((data.get("relationships") or {}).get("locked-by") or {}).get("data")
    if not isinstance(rel, dict) or not rel.get("id"):
        return None
    holder = str(rel["id"])
    if rel.get("type") != "users":
        return holder
    try:
        doc = client.get(f"/api/v2/users/{q(holder)}", doing="read the lock holder", jsonapi=True)
    except ApiFailure:
        return holder
    name = attrs(resource(doc, "read the lock holder")).get("username")
    return f"{name} ({holder})" if name else holder


@workspace.command("lock")
@connection_options
@click.argument("ws", metavar="ORG/WORKSPACE", type=WORKSPACE)
@click.option("--reason", default="", help="Why (shown to whoever finds it locked).")
def lock(url: str, token: str | None, data_dir: str | None, ws: WorkspaceRef, reason: str) -> None:
    """Lock a workspace: no one else can write its state until you unlock it."""
    with open_client(url, token, data_dir) as client:
        ws_id = read_workspace(client, ws, doing=f"lock workspace {ws}")["id"]
        body = {"data": {"type": "workspaces", "attributes": {"reason": reason}}}
        with hint(
            409, f"wait for its holder to unlock it, or `cairn workspace unlock --force {ws}`"
        ):
            client.post(
                f"/api/v2/workspaces/{q(ws_id)}/actions/lock",
                body,
                doing=f"lock workspace {ws}",
                jsonapi=True,
            )
    click.echo(f"locked {ws}")


@workspace.command("unlock")
@connection_options
@click.argument("ws", metavar="ORG/WORKSPACE", type=WORKSPACE)
@click.option(
    "--force",
    is_flag=True,
    help="Release a lock someone else holds (needs the right to manage the workspace).",
)
def unlock(
    url: str, token: str | None, data_dir: str | None, ws: WorkspaceRef, force: bool
) -> None:
    """Unlock a workspace you locked (--force: whoever locked it)."""
    action = "force-unlock" if force else "unlock"
    with open_client(url, token, data_dir) as client:
        data = read_workspace(client, ws, doing=f"{action} workspace {ws}")
        ws_id = data["id"]
        held = attrs(data).get("locked") and not force
        advice = f"`cairn workspace unlock --force {ws}` releases it anyway" if held else None
        with hint(409, advice):
            client.post(
                f"/api/v2/workspaces/{q(ws_id)}/actions/{action}",
                doing=f"{action} workspace {ws}",
                jsonapi=True,
            )
    click.echo(f"unlocked {ws}")


@workspace.command("delete")
@connection_options
@click.argument("ws", metavar="ORG/WORKSPACE", type=WORKSPACE)
@click.option(
    "--force",
    is_flag=True,
    help="Delete it even while its state still manages resources (they are not destroyed, "
    "only forgotten).",
)
@yes_option
def delete(
    url: str, token: str | None, data_dir: str | None, ws: WorkspaceRef, force: bool, yes: bool
) -> None:
    """Delete a workspace and its state history. Refused while its current state manages
    resources unless --force (destroy them first with `terraform destroy`)."""
    with open_client(url, token, data_dir) as client:
        data = read_workspace(client, ws, doing=f"delete workspace {ws}")
        ws_id = str(data["id"])
        _, versions = list_pages(
            client,
            f"/api/v2/workspaces/{q(ws_id)}/state-versions",
            doing=f"count the state versions of {ws}",
            limit=1,
        )
        resources = attrs(data).get("resource-count") or 0
        if resources and not force:
            raise CliError(
                f"workspace {ws} still manages {resources} resource(s): destroy them first "
                f"(`terraform destroy`), or pass --force to delete the workspace anyway (the "
                "resources stay, unmanaged)"
            )
        confirm(
            f"Delete workspace {ws} and its {versions or 0} state version(s) on {client.url}? "
            "This cannot be undone.",
            yes,
            f"workspace {ws}",
        )
        path = f"/api/v2/workspaces/{q(ws_id)}"
        with progress("Deleting the workspace…"):
            if force:
                client.delete(path, doing=f"delete workspace {ws}", jsonapi=True)
            else:
                # Safe delete: the server refuses if resources appeared meanwhile.
                client.post(
                    f"{path}/actions/safe-delete", doing=f"delete workspace {ws}", jsonapi=True
                )
    click.echo(f"deleted workspace {ws}")
