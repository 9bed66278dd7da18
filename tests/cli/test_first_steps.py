"""First steps without curl: `cairn org …`, `cairn workspace …` and `cairn state …` as a
newcomer runs them (the installed console script against a real HTTPS server on SQLite), and
the start banner telling them what to type.

Every refusal is one `error: …` line on stderr saying what happened and what to do, exit 1;
usage mistakes exit 2; the token never appears in any output.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import api as tfe
from tests.support import statefile
from tests.support.cli import CliRunner, failed, ok
from tests.support.server import CairnServer, cairn_executable

pytestmark = pytest.mark.e2e


def _json(result: Any) -> Any:
    return json.loads(ok(result).stdout)


def _org_token(api: httpx.Client, org: str) -> str:
    response = api.post(
        f"/api/v2/organizations/{org}/authentication-token",
        json={"data": {"type": "authentication-token"}},
        headers={"Content-Type": tfe.JSONAPI},
    )
    value: str = tfe.document(response, 201)["data"]["attributes"]["token"]
    return value


def _workspace(api: httpx.Client, org: str, name: str) -> dict[str, Any]:
    return tfe.read_workspace(api, org, name)


# -- organizations --------------------------------------------------------------------------------


def test_org_create_list_delete(cairn: CliRunner, admin: httpx.Client, admin_token: str) -> None:
    name = tfe.unique_name("first")
    created = ok(cairn("org", "create", name, "--email", "ops@example.test"))
    assert created.stdout == f"created organization {name}\n"
    assert f"cairn workspace create {name}/" in created.stderr, "says what to type next"
    assert (
        tfe.document(admin.get(f"/api/v2/organizations/{name}"), 200)["data"]["attributes"]["email"]
        == "ops@example.test"
    )

    other = tfe.unique_name("first-json")
    doc = _json(cairn("org", "create", other, "--json"))
    assert (doc["type"], doc["id"], doc["attributes"]["name"]) == ("organizations", other, other)

    table = ok(cairn("org", "list")).stdout
    assert name in table and other in table and "ops@example.test" in table
    listed = _json(cairn("org", "list", "--json"))
    assert {name, other} <= {o["id"] for o in listed}
    assert all(o["type"] == "organizations" for o in listed)

    # Creating it again: the API's refusal, readable.
    again = cairn("org", "create", name)
    failed(again, f"cannot create organization {name}", name)

    # Delete asks first: "no", or no answer at all, keeps it.
    for answer in ("n\n", ""):
        kept = cairn("org", "delete", name, stdin=answer)
        failed(kept, f"organization {name} was not deleted", "--yes")
        assert f"Delete organization {name}" in kept.stderr
        tfe.expect(admin.get(f"/api/v2/organizations/{name}"), 200)
    tfe.create_workspace(admin, name, "app")
    asked = ok(cairn("org", "delete", name, stdin="y\n"))
    assert "its 1 workspace(s)" in asked.stderr
    assert asked.stdout == f"deleted organization {name}\n"
    tfe.expect(admin.get(f"/api/v2/organizations/{name}"), 404)
    assert name not in {o["id"] for o in _json(cairn("org", "list", "--json"))}
    ok(cairn("org", "delete", other, "--yes"))

    gone = cairn("org", "delete", name, "--yes")
    failed(gone, "Not Found (404)", name, "cairn org list")
    for result in (again, gone):
        assert admin_token not in result.stdout + result.stderr


def test_org_list_when_there_is_nothing_to_see(
    cairn: CliRunner, admin: httpx.Client, cli_server: CairnServer
) -> None:
    org = tfe.create_organization(admin, tfe.unique_name("empty"))
    # An organization token sees its organization only; a new one has no workspaces.
    token = _org_token(admin, org)
    assert [o["id"] for o in _json(cairn("org", "list", "--json", token=token))] == [org]
    empty = ok(cairn("workspace", "list", org, token=token))
    assert empty.stdout == ""
    assert f"no workspaces in {org}" in empty.stderr
    assert f"cairn workspace create {org}/NAME" in empty.stderr
    assert _json(cairn("workspace", "list", org, "--json", token=token)) == []


# -- workspaces -----------------------------------------------------------------------------------


def test_workspace_create_list_show(cairn: CliRunner, admin: httpx.Client) -> None:
    org = tfe.create_organization(admin, tfe.unique_name("ws-cli"))
    created = ok(
        cairn(
            "workspace",
            "create",
            f"{org}/app",
            "--description",
            "the app",
            "--tag",
            "prod",
            "--tag",
            "web",
            "--terraform-version",
            "1.0.3",
        )
    )
    ws = _workspace(admin, org, "app")
    assert created.stdout == f"created workspace {org}/app ({ws['id']})\n"
    assert ws["attributes"]["description"] == "the app"
    assert sorted(ws["attributes"]["tag-names"]) == ["prod", "web"]
    assert ws["attributes"]["terraform-version"] == "1.0.3"
    doc = _json(cairn("workspace", "create", f"{org}/db", "--json"))
    assert doc["type"] == "workspaces" and doc["attributes"]["name"] == "db"
    assert doc["relationships"]["organization"]["data"]["id"] == org

    table = ok(cairn("workspace", "list", org)).stdout
    assert "app" in table and "db" in table and ws["id"] in table and "prod, web" in table
    listed = _json(cairn("workspace", "list", org, "--json"))
    assert [w["attributes"]["name"] for w in listed] == ["app", "db"]
    assert [
        w["attributes"]["name"]
        for w in _json(cairn("workspace", "list", org, "--tag", "web", "--json"))
    ] == ["app"]
    assert [
        w["attributes"]["name"]
        for w in _json(cairn("workspace", "list", org, "--search", "d", "--json"))
    ] == ["db"]

    shown = ok(cairn("workspace", "show", f"{org}/app")).stdout
    for text in (ws["id"], "the app", "1.0.3", "prod, web", org):
        assert text in shown, shown
    assert _json(cairn("workspace", "show", f"{org}/app", "--json"))["id"] == ws["id"]
    # By ID too.
    assert _json(cairn("workspace", "show", ws["id"], "--json"))["attributes"]["name"] == "app"

    # A workspace name taken, an unknown organization, an unknown workspace: what to do.
    failed(cairn("workspace", "create", f"{org}/app"), f"cannot create workspace {org}/app")
    failed(
        cairn("workspace", "list", "no-such-org"),
        "Not Found (404)",
        "no-such-org",
        "cairn org list",
    )
    failed(cairn("workspace", "create", "no-such-org/app"), "no-such-org", "cairn org list")
    failed(
        cairn("workspace", "show", f"{org}/nope"),
        "Not Found (404)",
        f"cairn workspace list {org}",
    )
    failed(
        cairn("workspace", "create", f"{org}/x", "--execution-mode", "cloudy"),
        "execution mode must be one of",
    )
    usage = cairn("workspace", "show", org)
    assert usage.returncode == 2 and "ORGANIZATION/WORKSPACE" in usage.stderr, str(usage)


def test_lock_and_unlock(cairn: CliRunner, admin: httpx.Client, cli_server: CairnServer) -> None:
    org = tfe.create_organization(admin, tfe.unique_name("lock-cli"))
    ws_id = tfe.create_workspace(admin, org, "app")
    ref = f"{org}/app"

    assert ok(cairn("workspace", "lock", ref, "--reason", "migrating")).stdout == f"locked {ref}\n"
    attrs = _workspace(admin, org, "app")["attributes"]
    assert (attrs["locked"], attrs["locked-reason"]) == (True, "migrating")
    assert "migrating" in ok(cairn("workspace", "show", ref)).stdout
    failed(cairn("workspace", "lock", ref), "Conflict (409)", "already locked by User")
    assert "locked" in ok(cairn("workspace", "list", org)).stdout
    assert ok(cairn("workspace", "unlock", ref)).stdout == f"unlocked {ref}\n"
    assert _workspace(admin, org, "app")["attributes"]["locked"] is False
    failed(cairn("workspace", "unlock", ref), "Conflict (409)", "already unlocked")

    # Someone else's lock: a plain unlock is refused and says how to force it.
    other = _org_token(admin, org)
    ok(cairn("workspace", "lock", ref, token=other))
    refused = cairn("workspace", "unlock", ref)
    failed(refused, "Conflict (409)", "only the holder", f"cairn workspace unlock --force {ref}")
    assert _workspace(admin, org, "app")["attributes"]["locked"] is True
    failed(cairn("workspace", "lock", ref), "already locked", "--force")
    ok(cairn("workspace", "unlock", "--force", ref))
    assert _workspace(admin, org, "app")["attributes"]["locked"] is False
    # Locked by ID, too.
    ok(cairn("workspace", "lock", ws_id))
    ok(cairn("workspace", "unlock", ws_id))


def _push(api: httpx.Client, ws_id: str, *states: bytes) -> list[dict[str, Any]]:
    tfe.workspace_action(api, ws_id, "lock")
    try:
        return [statefile.upload_inline(api, ws_id, raw) for raw in states]
    finally:
        tfe.workspace_action(api, ws_id, "unlock")


def test_workspace_delete_asks_and_keeps_managed_resources(
    cairn: CliRunner, admin: httpx.Client
) -> None:
    org = tfe.create_organization(admin, tfe.unique_name("del-cli"))
    ws_id = tfe.create_workspace(admin, org, "app")
    lineage = statefile.new_lineage()
    _push(
        admin,
        ws_id,
        statefile.state_file(1, lineage, resources=[statefile.null_resource("a", 2)]),
    )
    ref = f"{org}/app"
    refused = cairn("workspace", "delete", ref, "--yes")
    failed(refused, "still manages 2 resource(s)", "terraform destroy", "--force")
    tfe.expect(admin.get(f"/api/v2/workspaces/{ws_id}"), 200)

    declined = cairn("workspace", "delete", ref, "--force", stdin="no\n")
    failed(declined, f"workspace {ref} was not deleted", "--yes")
    assert "1 state version(s)" in declined.stderr
    tfe.expect(admin.get(f"/api/v2/workspaces/{ws_id}"), 200)

    assert ok(cairn("workspace", "delete", ref, "--force", "--yes")).stdout == (
        f"deleted workspace {ref}\n"
    )
    tfe.expect(admin.get(f"/api/v2/workspaces/{ws_id}"), 404)

    # Without resources the safe delete goes through after a "y".
    tfe.create_workspace(admin, org, "empty")
    ok(cairn("workspace", "delete", f"{org}/empty", stdin="y\n"))
    tfe.expect(admin.get(f"/api/v2/organizations/{org}/workspaces/empty"), 404)
    failed(cairn("workspace", "delete", f"{org}/empty", "--yes"), "Not Found (404)")


# -- state ----------------------------------------------------------------------------------------


@pytest.fixture
def history(admin: httpx.Client) -> tuple[str, str, list[bytes], list[dict[str, Any]]]:
    """A workspace with three state versions (the last one ~3 MB); (org, ws id, files, docs)."""
    org = tfe.create_organization(admin, tfe.unique_name("state-cli"))
    ws_id = tfe.create_workspace(admin, org, "app")
    lineage = statefile.new_lineage()
    files = [
        statefile.state_file(
            1,
            lineage,
            resources=[statefile.null_resource("a")],
            outputs={"n": {"value": 1, "type": "number"}},
        ),
        statefile.state_file(2, lineage, resources=[statefile.null_resource("a", 2)]),
        statefile.state_file(
            3, lineage, resources=[statefile.null_resource("a", 3)], pad_to=3_000_000
        ),
    ]
    return org, ws_id, files, _push(admin, ws_id, *files)


def test_state_list(
    cairn: CliRunner, history: tuple[str, str, list[bytes], list[dict[str, Any]]]
) -> None:
    org, _, _, docs = history
    ref = f"{org}/app"
    table = ok(cairn("state", "list", ref)).stdout
    lines = [line for line in table.splitlines() if "sv-" in line]
    assert [d["id"] for d in reversed(docs)] == [
        next(w for w in line.split() if w.startswith("sv-")) for line in lines
    ], table
    assert "current" in lines[0] and "current" not in "".join(lines[1:])
    assert "2.9 MiB" in lines[0]

    listed = _json(cairn("state", "list", ref, "--json"))
    assert [(v["id"], v["attributes"]["serial"]) for v in listed] == [
        (d["id"], d["attributes"]["serial"]) for d in reversed(docs)
    ]
    assert all(v["type"] == "state-versions" for v in listed)
    limited = ok(cairn("state", "list", ref, "--limit", "2"))
    assert "newest 2 of 3" in limited.stdout
    assert len(_json(cairn("state", "list", ref, "--limit", "1", "--json"))) == 1

    failed(cairn("state", "list", f"{org}/nope"), "Not Found (404)", f"cairn workspace list {org}")


def test_state_pull_is_byte_exact(
    cairn: CliRunner,
    admin: httpx.Client,
    history: tuple[str, str, list[bytes], list[dict[str, Any]]],
) -> None:
    org, _, files, docs = history
    ref = f"{org}/app"

    # stdout: the bytes and nothing else (subprocess output is text; these states are ASCII).
    pulled = ok(cairn("state", "pull", ref))
    assert pulled.stdout.encode() == files[2]
    assert f"serial 3 ({docs[2]['id']}, {len(files[2])} bytes) to stdout" in pulled.stderr
    assert ok(cairn("state", "pull", ref, "--version", "1")).stdout.encode() == files[0]
    assert ok(cairn("state", "pull", ref, "--version", docs[1]["id"])).stdout.encode() == files[1]

    # A file: exact bytes, private, replacing what was there, no temporary left behind.
    target = cairn.workdir / "out" / "app.tfstate"
    target.parent.mkdir()
    target.write_bytes(b"old")
    ok(cairn("state", "pull", ref, "-o", str(target)))
    assert target.read_bytes() == files[2]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["app.tfstate"]

    failed(
        cairn("state", "pull", ref, "--version", "9"),
        "no state version with serial 9",
        f"cairn state list {ref}",
    )
    failed(cairn("state", "pull", ref, "--version", "sv-nope"), "Not Found (404)")
    usage = cairn("state", "pull", ref, "--version", "latest")
    assert usage.returncode == 2 and "serial" in usage.stderr, str(usage)

    # Another workspace's version is not this workspace's.
    other = tfe.create_workspace(admin, org, "other")
    failed(
        cairn("state", "pull", f"{org}/other", "--version", docs[0]["id"]),
        f"not a version of {org}/other",
    )
    empty = cairn("state", "pull", f"{org}/other", "-o", str(cairn.workdir / "none.tfstate"))
    failed(empty, "no state", "terraform apply")
    assert not (cairn.workdir / "none.tfstate").exists()
    assert other


def test_state_pull_shows_progress_on_a_terminal(
    cairn: CliRunner, history: tuple[str, str, list[bytes], list[dict[str, Any]]]
) -> None:
    """stderr on a pseudo-terminal: a download bar (its last frame is drawn when it ends)."""
    org, _, files, _ = history
    target = cairn.workdir / "big.tfstate"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CAIRN_", "SSL_CERT_", "NO_COLOR")) and k != "COLUMNS"
    }
    env.update(
        XDG_DATA_HOME=str(cairn.home),
        CAIRN_URL=cairn.server.url,
        CAIRN_TOKEN=cairn.token,
        CAIRN_DATA_DIR=str(cairn.server.data_dir),
        TERM="xterm-256color",
        COLUMNS="120",
    )
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [str(cairn_executable()), "state", "pull", f"{org}/app", "-o", str(target)],
        env=env,
        cwd=cairn.workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
    )
    os.close(secondary)
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
        assert proc.wait(timeout=120) == 0, shown
    assert target.read_bytes() == files[2]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    assert "serial 3" in text and "3.0/3.0 MB" in text, text
    assert "pulled" in text


def test_state_rollback(
    cairn: CliRunner,
    admin: httpx.Client,
    history: tuple[str, str, list[bytes], list[dict[str, Any]]],
) -> None:
    org, ws_id, files, docs = history
    ref = f"{org}/app"

    rolled = ok(cairn("state", "rollback", ref, "1"))
    current = tfe.current_state_version(admin, ws_id)
    assert current["attributes"]["serial"] == 4
    assert rolled.stdout == (
        f"rolled {ref} back to serial 1 ({docs[0]['id']}): the current state is now serial 4 "
        f"({current['id']})\n"
    )
    # The content of serial 1 under the next serial; the workspace is unlocked again.
    expected = json.loads(files[0])
    expected["serial"] = 4
    assert json.loads(ok(cairn("state", "pull", ref)).stdout) == expected
    assert _workspace(admin, org, "app")["attributes"]["locked"] is False
    assert f"rollback to serial 1 ({docs[0]['id']})" in ok(cairn("state", "list", ref)).stdout

    failed(cairn("state", "rollback", ref, "4"), "already current")
    failed(cairn("state", "rollback", ref, "7"), "no state version with serial 7")

    # Locked by someone else: refused, nothing changed, the lock left alone.
    tfe.workspace_action(admin, ws_id, "lock")
    other = _org_token(admin, org)
    refused = cairn("state", "rollback", ref, "2", token=other)
    failed(refused, "Conflict (409)", f"cairn workspace unlock {ref}")
    assert tfe.current_state_version(admin, ws_id)["id"] == current["id"]
    assert _workspace(admin, org, "app")["attributes"]["locked"] is True

    # Locked by the caller: the rollback happens under that lock, which stays.
    doc = _json(cairn("state", "rollback", ref, docs[1]["id"], "--json"))
    assert doc["type"] == "state-versions" and doc["attributes"]["serial"] == 5
    assert doc["relationships"]["rollback-state-version"]["data"]["id"] == docs[1]["id"]
    assert _workspace(admin, org, "app")["attributes"]["locked"] is True
    tfe.workspace_action(admin, ws_id, "unlock")


# -- where the token comes from -------------------------------------------------------------------


def test_the_token_terraform_login_stored_is_used(
    cairn: CliRunner, cli_server: CairnServer, admin_token: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".terraform.d").mkdir(parents=True)
    creds = home / ".terraform.d" / "credentials.tfrc.json"
    host = cli_server.url.split("://", 1)[1]
    creds.write_text(json.dumps({"credentials": {host: {"token": admin_token}}}))
    env = {"CAIRN_TOKEN": None, "HOME": str(home)}
    ok(cairn("org", "list", env=env))

    creds.write_text(json.dumps({"credentials": {"elsewhere:1": {"token": admin_token}}}))
    failed(cairn("org", "list", env=env), "CAIRN_TOKEN", "terraform login")
    creds.write_text("{not json")
    failed(cairn("org", "list", env=env), str(creds), "not valid JSON")
    # CAIRN_TOKEN wins over the file.
    bad = cairn("org", "list", env={"HOME": str(home), "CAIRN_TOKEN": "cairn-wrong-1f2e"})
    failed(bad, "Unauthorized (401)")


# -- the start banner -----------------------------------------------------------------------------


def test_the_banner_says_what_to_type_next(cli_server: CairnServer) -> None:
    banner = cli_server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Next steps, in another shell:" in banner
    assert f"export SSL_CERT_FILE={cli_server.ca_bundle}" in banner
    assert f"export CAIRN_URL={cli_server.url}" in banner
    assert "export CAIRN_TOKEN=" in banner
    assert "org create my-org" in banner
    assert "workspace create my-org/my-workspace" in banner
    host = cli_server.url.split("://", 1)[1]
    assert f"terraform login {host}" in banner
