"""State-version rules hold when requests for one workspace reach two servers at once.

The lock holder (the admin) sends several uploads of the same serial at the same instant,
spread over two `cairn serve` processes on one database: exactly one version wins, the
others get a JSON:API 409 (or, for identical retries, the winner's version), never a 500,
and the current version is complete on both servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

import httpx

from tests.support import api as tfe
from tests.support.concurrency import simultaneously
from tests.support.server import CairnServer
from tests.support.statefile import (
    md5_hex,
    new_lineage,
    null_resource,
    state_file,
    upload_inline,
    version_body,
)

UPLOADERS = 4
ROUNDS = 3


@contextmanager
def clients_for(servers: list[CairnServer], token: str) -> Iterator[list[httpx.Client]]:
    """UPLOADERS clients spread over `servers`, each with its connection already open."""
    with ExitStack() as stack:
        clients = [
            stack.enter_context(servers[i % len(servers)].client(token)) for i in range(UPLOADERS)
        ]
        for client in clients:
            tfe.expect(client.get("/api/v2/account/details"), 200)
        yield clients


def locked_workspace(api: httpx.Client) -> str:
    org = tfe.create_organization(api, tfe.unique_name("replicated"))
    workspace_id = tfe.create_workspace(api, org, "shared")
    tfe.workspace_action(api, workspace_id, "lock")
    return workspace_id


def upload_all(
    clients: list[httpx.Client], workspace_id: str, states: list[bytes]
) -> list[httpx.Response]:
    url = f"/api/v2/workspaces/{workspace_id}/state-versions"
    headers = {"Content-Type": tfe.JSONAPI}
    return simultaneously(
        [
            partial(client.post, url, json=version_body(raw), headers=headers)
            for client, raw in zip(clients, states, strict=True)
        ]
    )


def assert_current_everywhere(clients: list[httpx.Client], workspace_id: str, raw: bytes) -> None:
    for api in clients[:2]:  # clients 0 and 1 talk to different servers
        current = tfe.current_state_version(api, workspace_id)
        assert current["attributes"]["md5"] == md5_hex(raw)
        assert tfe.download_state(api, current) == raw


def test_same_serial_different_content_at_once(
    replicas: list[CairnServer], admin_token: str
) -> None:
    with clients_for(replicas, admin_token) as clients:
        workspace_id = locked_workspace(clients[0])
        lineage = new_lineage()
        upload_inline(clients[0], workspace_id, state_file(1, lineage))
        for serial in range(2, 2 + ROUNDS):
            states = [
                state_file(serial, lineage, resources=[null_resource(f"writer-{i}")])
                for i in range(UPLOADERS)
            ]
            responses = upload_all(clients, workspace_id, states)
            statuses = [r.status_code for r in responses]
            assert sorted(statuses) == [201] + [409] * (UPLOADERS - 1), (
                f"serial {serial}: {statuses}",
                [r.text[:300] for r in responses if r.status_code not in (201, 409)],
            )
            for r in responses:
                if r.status_code == 409:
                    assert "MD5" in r.json()["errors"][0]["detail"], r.text
            winner = statuses.index(201)
            assert_current_everywhere(clients, workspace_id, states[winner])


def test_identical_retries_at_once_name_one_version(
    replicas: list[CairnServer], admin_token: str
) -> None:
    with clients_for(replicas, admin_token) as clients:
        workspace_id = locked_workspace(clients[0])
        lineage = new_lineage()
        for serial in range(1, 1 + ROUNDS):
            raw = state_file(serial, lineage, resources=[null_resource("same")])
            responses = upload_all(clients, workspace_id, [raw] * UPLOADERS)
            assert [r.status_code for r in responses] == [201] * UPLOADERS, [
                r.text[:300] for r in responses
            ]
            assert len({r.json()["data"]["id"] for r in responses}) == 1
            assert_current_everywhere(clients, workspace_id, raw)
        listing = tfe.document(
            clients[1].get(f"/api/v2/workspaces/{workspace_id}/state-versions"), 200
        )
        assert [v["attributes"]["serial"] for v in listing["data"]] == [3, 2, 1]


def test_serial_beyond_32_bits_is_stored_or_refused_cleanly(
    replicas: list[CairnServer], admin_token: str
) -> None:
    """Terraform's serial is a uint64; PostgreSQL's INTEGER stops at 2**31 - 1."""
    with replicas[0].client(admin_token) as api:
        workspace_id = locked_workspace(api)
        lineage = new_lineage()
        raw = state_file(2**31, lineage)
        response = api.post(
            f"/api/v2/workspaces/{workspace_id}/state-versions",
            json=version_body(raw),
            headers={"Content-Type": tfe.JSONAPI},
        )
        assert response.status_code in (201, 422), response.text
        if response.status_code == 201:
            current = tfe.current_state_version(api, workspace_id)
            assert current["attributes"]["serial"] == 2**31
            assert tfe.download_state(api, current) == raw
        else:
            assert "serial" in response.json()["errors"][0]["detail"]
