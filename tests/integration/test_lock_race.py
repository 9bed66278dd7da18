"""The workspace lock is one conditional write: of many simultaneous callers on several
replicas, exactly one wins (DESIGN.md, "Locks are one conditional write in the database").

Two `cairn serve` processes share one PostgreSQL database (the replica setup), or one server
runs on SQLite (a second one on its data directory is refused; WAL + BEGIN IMMEDIATE order its
threads). Twenty threads, released together by a barrier, each POST `actions/lock` to one of
the servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any

import httpx

from tests.support import api as tfe
from tests.support.concurrency import simultaneously
from tests.support.server import CairnServer

CONTENDERS = 20
ROUNDS = 3


@contextmanager
def contenders(servers: list[CairnServer], token: str) -> Iterator[list[httpx.Client]]:
    """CONTENDERS clients spread over `servers`, each with its connection already open."""
    with ExitStack() as stack:
        clients = [
            stack.enter_context(servers[i % len(servers)].client(token)) for i in range(CONTENDERS)
        ]
        for client in clients:
            tfe.expect(client.get("/api/v2/account/details"), 200)
        yield clients


def contend(clients: list[httpx.Client], workspace_id: str) -> list[httpx.Response]:
    """One lock request per client, all sent at the same instant."""
    body = {"data": {"type": "", "attributes": {"reason": "Locked by Terraform"}}}
    url = f"/api/v2/workspaces/{workspace_id}/actions/lock"
    return simultaneously(
        [
            partial(client.post, url, json=body, headers={"Content-Type": tfe.JSONAPI})
            for client in clients
        ]
    )


def workspace_doc(api: httpx.Client, workspace_id: str) -> dict[str, Any]:
    doc = tfe.document(api.get(f"/api/v2/workspaces/{workspace_id}"), 200)
    data: dict[str, Any] = doc["data"]
    return data


def run_rounds(servers: list[CairnServer], token: str) -> None:
    with contenders(servers, token) as clients:
        # clients[i] talks to servers[i % 2]: clients[0] and clients[1] cover both replicas.
        replicas = clients[: len(servers)]
        admin_id = tfe.document(replicas[0].get("/api/v2/account/details"), 200)["data"]["id"]
        org = tfe.create_organization(replicas[0], tfe.unique_name("race"))
        workspace_id = tfe.create_workspace(replicas[0], org, "contended")

        for round_no in range(ROUNDS):
            responses = contend(clients, workspace_id)
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200] + [409] * (CONTENDERS - 1), (
                f"round {round_no}: {statuses}",
                [r.text[:300] for r in responses if r.status_code not in (200, 409)],
            )
            winner = next(r for r in responses if r.status_code == 200)
            assert winner.json()["data"]["attributes"]["locked"] is True
            for loser in (r for r in responses if r.status_code == 409):
                error = loser.json()["errors"][0]
                assert error["status"] == "409"
                assert "is already locked by User 'admin'" in error["detail"], error

            # Every replica sees the same holder: the admin.
            for api in replicas:
                ws = workspace_doc(api, workspace_id)
                assert ws["attributes"]["locked"] is True
                assert ws["relationships"]["locked-by"]["data"] == {
                    "id": admin_id,
                    "type": "users",
                }

            # Release through one replica (alternating); every replica sees it free.
            tfe.workspace_action(replicas[round_no % len(replicas)], workspace_id, "unlock")
            for api in replicas:
                ws = workspace_doc(api, workspace_id)
                assert ws["attributes"]["locked"] is False
                assert ws["relationships"]["locked-by"]["data"] is None


def test_one_lock_winner_across_two_servers(replicas: list[CairnServer], admin_token: str) -> None:
    run_rounds(replicas, admin_token)
