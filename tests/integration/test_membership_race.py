"""Only one may win: of many simultaneous invitations of one unknown email to one
organization, on two replicas sharing PostgreSQL (or the threads of one SQLite server),
exactly one makes the pending membership and the others are told it exists (the partial
unique index on (organization, email) of pending rows decides); simultaneous additions of
the same remote-state consumer all succeed and leave one row (HCP Terraform: adding a
consumer that is already there is no error)."""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial

import httpx

from tests.support import api as tfe
from tests.support.concurrency import simultaneously
from tests.support.server import CairnServer

CONTENDERS = 12
CT = {"Content-Type": tfe.JSONAPI}


def test_one_pending_invitation_per_email(replicas: list[CairnServer], admin_token: str) -> None:
    with ExitStack() as stack:
        clients = [
            stack.enter_context(replicas[i % len(replicas)].client(admin_token))
            for i in range(CONTENDERS)
        ]
        api: httpx.Client = clients[0]
        org = tfe.create_organization(api, tfe.unique_name("race"))
        body = {
            "data": {
                "type": "organization-memberships",
                "attributes": {"email": "raced@example.com"},
            }
        }
        url = f"/api/v2/organizations/{org}/organization-memberships"
        responses = simultaneously([partial(c.post, url, json=body, headers=CT) for c in clients])
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] + [422] * (CONTENDERS - 1), [r.text[:200] for r in responses]
        listed = tfe.document(api.get(url, params={"filter[status]": "invited"}), 200)
        assert [m["attributes"]["email"] for m in listed["data"]] == ["raced@example.com"]

        # Inviting one person with an account from everywhere at once: they end up a member
        # once (each request either added them or was told they are a member), never a 500.
        username = tfe.unique_name("racer")
        tfe.expect(
            api.post(
                "/api/cairn/v1/admin/users",
                json={"username": username, "email": f"{username}@example.com"},
            ),
            201,
        )
        team_body = {"data": {"type": "teams", "attributes": {"name": "devs"}}}
        team = tfe.document(api.post(f"/api/v2/organizations/{org}/teams", json=team_body), 201)
        person = {
            "data": {
                "type": "organization-memberships",
                "attributes": {"username": username},
                "relationships": {"teams": {"data": [{"type": "teams", "id": team["data"]["id"]}]}},
            }
        }
        invited = simultaneously([partial(c.post, url, json=person, headers=CT) for c in clients])
        assert {r.status_code for r in invited} <= {201, 422}, [r.text[:200] for r in invited]
        assert 201 in {r.status_code for r in invited}
        members = tfe.document(api.get(url, params={"q": username}), 200)["data"]
        assert len(members) == 1

        source = tfe.create_workspace(api, org, "source")
        consumer = tfe.create_workspace(api, org, "consumer")
        rsc = f"/api/v2/workspaces/{source}/relationships/remote-state-consumers"
        add = {"data": [{"type": "workspaces", "id": consumer}]}
        added = simultaneously([partial(c.post, rsc, json=add, headers=CT) for c in clients])
        assert sorted(r.status_code for r in added) == [204] * CONTENDERS, [
            r.text[:200] for r in added if r.status_code != 204
        ]
        assert [w["id"] for w in tfe.document(api.get(rsc), 200)["data"]] == [consumer]
