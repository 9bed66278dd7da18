"""Team-workspace access: each level allows exactly what HCP Terraform documents, for the
features cairn has (reading the workspace, its state versions and outputs, writing state,
locking, settings, plan and apply id-tokens), and `custom` access with its per-permission
attributes is stored, shown, changed by PATCH and enforced.

HCP Terraform's levels, as its permissions page documents them:
- read: read runs, variables and state versions (whole states);
- plan: read, and queue plans;
- write: plan, and apply, lock and unlock, edit variables, write state versions, Sentinel mocks;
- admin: write, and the workspace's settings, team access and deletion, run tasks;
- custom: runs read|plan|apply, variables none|read|write, state-versions
  none|read-outputs|read|write, sentinel-mocks none|read, workspace-locking, run-tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.teams.helpers import (
    add_member,
    lock,
    seed_state,
    team,
    team_workspace,
    unlock,
    write_state,
)
from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Allowed:
    """What a level allows on a workspace."""

    state: bool  # list state versions, show the current one, download it
    outputs: bool  # the outputs of the current state
    write: bool  # lock, then write a state version (and unlock)
    lock: bool  # lock and unlock
    settings: bool  # change the workspace's settings
    plan: bool  # mint a plan id-token
    apply: bool  # mint an apply id-token


MATRIX: list[tuple[str, dict[str, Any], Allowed]] = [
    ("read", {}, Allowed(True, True, False, False, False, False, False)),
    ("plan", {}, Allowed(True, True, False, False, False, True, False)),
    ("write", {}, Allowed(True, True, True, True, False, True, True)),
    ("admin", {}, Allowed(True, True, True, True, True, True, True)),
    ("custom", {}, Allowed(False, False, False, False, False, False, False)),
    (
        "custom",
        {"state-versions": "read-outputs"},
        Allowed(False, True, False, False, False, False, False),
    ),
    ("custom", {"state-versions": "read"}, Allowed(True, True, False, False, False, False, False)),
    (
        "custom",
        {"state-versions": "write", "workspace-locking": True},
        Allowed(True, True, True, True, False, False, False),
    ),
    (
        "custom",
        {"workspace-locking": True},
        Allowed(False, False, False, True, False, False, False),
    ),
    ("custom", {"runs": "plan"}, Allowed(False, False, False, False, False, True, False)),
    (
        "custom",
        {"runs": "apply", "variables": "write", "sentinel-mocks": "read", "run-tasks": True},
        Allowed(False, False, False, False, False, True, True),
    ),
]


def _id(case: tuple[str, dict[str, Any], Allowed]) -> str:
    level, attrs, _ = case
    return "-".join([level, *(f"{k}={v}" for k, v in attrs.items())])


async def _status(response: httpx.Response, allowed: bool, *, ok: int = 200) -> bool:
    """Whether ``response`` is the allowed answer (``ok``) or a refusal (403/404); anything else
    fails the test."""
    assert response.status_code in (ok, 403, 404), response.text
    return response.status_code == ok


@pytest.mark.parametrize("case", MATRIX, ids=[_id(c) for c in MATRIX])
async def test_each_level_allows_exactly_what_hcp_documents(
    app: InProcessCairn, admin: httpx.AsyncClient, case: tuple[str, dict[str, Any], Allowed]
) -> None:
    level, attrs, want = case
    ws = await create_workspace(admin, await create_organization(admin), "app")
    lineage = await seed_state(admin, ws.id)
    person = await make_user(admin, "dev")
    devs = await team(admin, ws.org, "devs")
    await add_member(admin, devs["id"], person.id)
    document(await team_workspace(admin, devs["id"], ws.id, level, **attrs), 201)

    async with app.client(person.token) as client:
        # Every level reads the workspace (runs: read at least).
        shown = document(await client.get(f"/api/v2/workspaces/{ws.id}"), 200)["data"]
        got: dict[str, bool] = {}
        got["state"] = await _status(
            await client.get(f"/api/v2/workspaces/{ws.id}/current-state-version"), want.state
        )
        listed = await client.get(f"/api/v2/workspaces/{ws.id}/state-versions")
        assert (listed.status_code == 200) == got["state"], listed.text
        got["outputs"] = await _status(
            await client.get(f"/api/v2/workspaces/{ws.id}/current-state-version-outputs"),
            want.outputs,
        )
        got["lock"] = await _status(await lock(client, ws.id), want.lock)
        if got["lock"]:
            written = await write_state(client, ws.id, 2, lineage)
            got["write"] = await _status(written, want.write, ok=201)
            assert (await unlock(client, ws.id)).status_code == 200
        else:
            # Without the lock no one may write; with the admin's lock, not this person either.
            assert (await lock(admin, ws.id)).status_code == 200
            refused = await write_state(client, ws.id, 2, lineage)
            assert refused.status_code in (403, 404, 409), refused.text
            got["write"] = False
            assert (await unlock(admin, ws.id)).status_code == 200
        settings = {"data": {"type": "workspaces", "attributes": {"description": "changed"}}}
        got["settings"] = await _status(
            await client.patch(f"/api/v2/workspaces/{ws.id}", json=settings, headers=CT),
            want.settings,
        )
        for phase in ("plan", "apply"):
            minted = await client.post(
                f"/api/cairn/v1/workspaces/{ws.id}/id-tokens",
                json={"audience": "sts.amazonaws.com", "run_phase": phase},
            )
            got[phase] = await _status(minted, getattr(want, phase), ok=201)
    assert got == {k: getattr(want, k) for k in got}, (level, attrs)
    # The workspace's permissions say the same.
    perms = shown["attributes"]["permissions"]
    assert perms["can-lock"] is want.lock
    assert perms["can-update"] is want.settings
    assert perms["can-queue-run"] is want.plan
    assert perms["can-queue-apply"] is want.apply
    assert perms["can-read-state-versions"] is want.state
    assert perms["can-read-run-state-outputs"] is want.outputs
    assert perms["can-create-state-versions"] is want.write


FIXED = {
    "read": {
        "runs": "read",
        "variables": "read",
        "state-versions": "read",
        "sentinel-mocks": "none",
        "workspace-locking": False,
        "run-tasks": False,
    },
    "plan": {
        "runs": "plan",
        "variables": "read",
        "state-versions": "read",
        "sentinel-mocks": "none",
        "workspace-locking": False,
        "run-tasks": False,
    },
    "write": {
        "runs": "apply",
        "variables": "write",
        "state-versions": "write",
        "sentinel-mocks": "read",
        "workspace-locking": True,
        "run-tasks": False,
    },
    "admin": {
        "runs": "apply",
        "variables": "write",
        "state-versions": "write",
        "sentinel-mocks": "read",
        "workspace-locking": True,
        "run-tasks": True,
    },
}


async def test_fixed_levels_show_the_attributes_hcp_returns(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    for level, attributes in FIXED.items():
        ws = await create_workspace(admin, org, f"ws-{level}")
        devs = await team(admin, org, f"devs-{level}")
        created = document(await team_workspace(admin, devs["id"], ws.id, level), 201)["data"]
        assert created["attributes"] == {"access": level, **attributes}
        # Sending a fixed level's own values back is fine; other values are not.
        more = await team(admin, org, f"more-{level}")
        again = await team_workspace(admin, more["id"], ws.id, level, **attributes)
        assert again.status_code == 201, again.text
        other = "none" if attributes["variables"] != "none" else "read"
        third = await team(admin, org, f"third-{level}")
        refused = await team_workspace(admin, third["id"], ws.id, level, variables=other)
        assert refused.status_code == 422, refused.text
        assert "custom" in refused.json()["errors"][0]["detail"]
        # One access per team and workspace.
        taken = await team_workspace(admin, devs["id"], ws.id, "read")
        assert taken.status_code == 422, taken.text
        assert "already been taken" in taken.json()["errors"][0]["detail"]


async def test_custom_access_is_stored_changed_by_patch_and_enforced(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await create_workspace(admin, await create_organization(admin), "app")
    await seed_state(admin, ws.id)
    person = await make_user(admin, "dev")
    devs = await team(admin, ws.org, "devs")
    await add_member(admin, devs["id"], person.id)
    made = await team_workspace(admin, devs["id"], ws.id, "custom", **{"state-versions": "none"})
    tws = document(made, 201)["data"]
    assert tws["attributes"] == {
        "access": "custom",
        "runs": "read",
        "variables": "none",
        "state-versions": "none",
        "sentinel-mocks": "none",
        "workspace-locking": False,
        "run-tasks": False,
    }
    outputs = f"/api/v2/workspaces/{ws.id}/current-state-version-outputs"
    async with app.client(person.token) as client:
        assert (await client.get(outputs)).status_code == 404

        # PATCH without access changes the custom attributes, keeping the others.
        body = {
            "data": {"type": "team-workspaces", "attributes": {"state-versions": "read-outputs"}}
        }
        changed = await admin.patch(f"/api/v2/team-workspaces/{tws['id']}", json=body, headers=CT)
        assert document(changed, 200)["data"]["attributes"]["state-versions"] == "read-outputs"
        outs = document(await client.get(outputs), 200)["data"]
        assert [o["attributes"]["name"] for o in outs] == ["region"]
        current = await client.get(f"/api/v2/workspaces/{ws.id}/current-state-version")
        assert current.status_code == 404
        assert "state:read" in current.json()["errors"][0]["detail"]

        # The stored values come back on a fresh read, and from the list.
        shown = document(await admin.get(f"/api/v2/team-workspaces/{tws['id']}"), 200)["data"]
        assert shown["attributes"]["state-versions"] == "read-outputs"
        assert shown["attributes"]["access"] == "custom"
        listed = document(
            await admin.get(f"/api/v2/team-workspaces?filter%5Bworkspace%5D%5Bid%5D={ws.id}"),
            200,
        )["data"]
        assert [t["attributes"]["state-versions"] for t in listed] == ["read-outputs"]

        # Back to a fixed level: its values, whatever custom held.
        body = {"data": {"type": "team-workspaces", "attributes": {"access": "write"}}}
        changed = await admin.patch(f"/api/v2/team-workspaces/{tws['id']}", json=body, headers=CT)
        assert document(changed, 200)["data"]["attributes"] == {"access": "write", **FIXED["write"]}
        assert (await lock(client, ws.id)).status_code == 200
        assert (await unlock(client, ws.id)).status_code == 200

        # And to custom again: from the level it had.
        body = {
            "data": {"type": "team-workspaces", "attributes": {"access": "custom", "runs": "plan"}}
        }
        changed = await admin.patch(f"/api/v2/team-workspaces/{tws['id']}", json=body, headers=CT)
        attrs = document(changed, 200)["data"]["attributes"]
        assert attrs == {**FIXED["write"], "access": "custom", "runs": "plan"}


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"runs": "destroy"}, "/data/attributes/runs"),
        ({"variables": "all"}, "/data/attributes/variables"),
        ({"state-versions": "outputs"}, "/data/attributes/state-versions"),
        ({"sentinel-mocks": "write"}, "/data/attributes/sentinel-mocks"),
        ({"workspace-locking": "yes"}, "/data/attributes/workspace-locking"),
        ({"run-tasks": 1}, "/data/attributes/run-tasks"),
    ],
)
async def test_bad_custom_values_are_422_and_change_nothing(
    app: InProcessCairn, admin: httpx.AsyncClient, attributes: dict[str, Any], pointer: str
) -> None:
    ws = await create_workspace(admin, await create_organization(admin), "app")
    devs = await team(admin, ws.org, "devs")
    refused = await team_workspace(admin, devs["id"], ws.id, "custom", **attributes)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["source"]["pointer"] == pointer
    listed = await admin.get(f"/api/v2/team-workspaces?filter%5Bworkspace%5D%5Bid%5D={ws.id}")
    assert document(listed, 200)["data"] == []

    tws = document(await team_workspace(admin, devs["id"], ws.id, "custom"), 201)["data"]
    body = {"data": {"type": "team-workspaces", "attributes": attributes}}
    patched = await admin.patch(f"/api/v2/team-workspaces/{tws['id']}", json=body, headers=CT)
    assert patched.status_code == 422, patched.text
    shown = document(await admin.get(f"/api/v2/team-workspaces/{tws['id']}"), 200)["data"]
    assert shown["attributes"] == tws["attributes"]
