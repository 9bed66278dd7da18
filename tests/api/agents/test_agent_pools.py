"""Agent pools, their tokens and agents through the TFE API, and the agent protocol's
registration, in-process on SQLite and PostgreSQL: create/list/show/update/delete pools
(filters, sorts, allow-lists), tokens shown once and served at /authentication-tokens/:id
beside API tokens, registration with a pool token and with the built-in secret, the status
sweep, agent deletion (412 while alive), the workspace rule for execution-mode agent, and who
may do what (manage-agent-pools)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from cairn.agents import sessions
from cairn.agents.sessions import AgentUnknown
from tests.api.teams.helpers import add_member, team
from tests.support.app import (
    CT,
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

AGENT = "/api/agent/v1"


def _pool_body(name: Any = None, **attrs: Any) -> dict[str, Any]:
    rels = attrs.pop("relationships", None)
    data: dict[str, Any] = {"type": "agent-pools", "attributes": dict(attrs)}
    if name is not None:
        data["attributes"]["name"] = name
    if rels is not None:
        data["relationships"] = rels
    return {"data": data}


def _allowed(*ws_ids: str) -> dict[str, Any]:
    return {"allowed-workspaces": {"data": [{"type": "workspaces", "id": i} for i in ws_ids]}}


async def _pool(client: httpx.AsyncClient, org: str, name: str, **attrs: Any) -> dict[str, Any]:
    made = await client.post(
        f"/api/v2/organizations/{org}/agent-pools", json=_pool_body(name, **attrs), headers=CT
    )
    data: dict[str, Any] = document(made, 201)["data"]
    return data


async def _token(client: httpx.AsyncClient, pool_id: str, description: str = "ci") -> str:
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": description}}}
    made = await client.post(
        f"/api/v2/agent-pools/{pool_id}/authentication-tokens", json=body, headers=CT
    )
    value: str = document(made, 201)["data"]["attributes"]["token"]
    return value


async def _register(app: InProcessCairn, token: str, name: str = "a1") -> httpx.Response:
    async with app.client() as client:
        return await client.post(
            f"{AGENT}/register",
            json={"name": name, "version": "0.1", "accept": ["plan", "apply"]},
            headers={"Authorization": f"Bearer {token}"},
        )


async def test_pool_lifecycle_filters_and_sorts(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        ws = await create_workspace(admin, org, "app")
        scoped = await _pool(admin, org, "builders")
        assert scoped["id"].startswith("apool-")
        assert scoped["attributes"] == {
            "name": "builders",
            "created-at": "2026-01-01T12:00:00.000Z",
            "organization-scoped": True,
            "agent-count": 0,
        }
        assert scoped["relationships"]["organization"]["data"]["id"] == org
        any_app.advance(timedelta(seconds=1))
        narrow = await _pool(
            admin,
            org,
            "narrow",
            **{"organization-scoped": False},
            relationships=_allowed(ws.id),
        )
        assert narrow["relationships"]["allowed-workspaces"]["data"] == [
            {"type": "workspaces", "id": ws.id}
        ]
        base = f"/api/v2/organizations/{org}/agent-pools"

        async def names(**params: str) -> list[str]:
            doc = document(await admin.get(base, params=params), 200)
            return [p["attributes"]["name"] for p in doc["data"]]

        assert await names() == ["builders", "narrow"]
        assert await names(sort="-name") == ["narrow", "builders"]
        assert await names(sort="-created-at") == ["narrow", "builders"]
        assert await names(q="narr") == ["narrow"]
        assert await names(**{"filter[allowed_workspaces][name]": "app"}) == [
            "builders",
            "narrow",
        ]
        other = await create_workspace(admin, org, "other")
        assert await names(**{"filter[allowed_workspaces][name]": "other"}) == ["builders"]
        assert await names(**{"filter[allowed_workspaces][name]": "nope"}) == []
        assert (await admin.get(base, params={"sort": "size"})).status_code == 400

        # The same name twice in one organization: 422; another organization may use it.
        again = await admin.post(base, json=_pool_body("builders"), headers=CT)
        assert again.status_code == 422, again.text
        await _pool(admin, await create_organization(admin), "builders")
        bad = await admin.post(base, json=_pool_body("no spaces"), headers=CT)
        assert bad.status_code == 422 and "name" in bad.json()["errors"][0]["source"]["pointer"]

        # PATCH: rename, replace the allow-list; a workspace of another organization is a 422.
        one = f"/api/v2/agent-pools/{narrow['id']}"
        patched = await admin.patch(
            one,
            json=_pool_body("narrower", relationships=_allowed(ws.id, other.id)),
            headers=CT,
        )
        data = document(patched, 200)["data"]
        assert data["attributes"]["name"] == "narrower"
        assert {w["id"] for w in data["relationships"]["allowed-workspaces"]["data"]} == {
            ws.id,
            other.id,
        }
        stranger = await create_workspace(admin, await create_organization(admin))
        refused = await admin.patch(
            one, json=_pool_body(relationships=_allowed(stranger.id)), headers=CT
        )
        assert refused.status_code == 422, refused.text
        excluded = await admin.patch(
            one,
            json=_pool_body(
                relationships={
                    "excluded-workspaces": {"data": [{"type": "workspaces", "id": ws.id}]}
                }
            ),
            headers=CT,
        )
        assert excluded.status_code == 422, excluded.text
        shown = document(await admin.get(one), 200)["data"]
        assert len(shown["relationships"]["allowed-workspaces"]["data"]) == 2

        # Delete: 204, then 404.
        assert (await admin.delete(one)).status_code == 204
        assert (await admin.get(one)).status_code == 404
        assert (await admin.get("/api/v2/agent-pools/apool-0000000000000000")).status_code == 404


async def test_workspace_execution_mode_agent_needs_an_allowing_pool(
    any_app: InProcessCairn,
) -> None:
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        ws = await create_workspace(admin, org, "app")
        narrow = await _pool(admin, org, "narrow", **{"organization-scoped": False})
        scoped = await _pool(admin, org, "wide")
        foreign = await _pool(admin, await create_organization(admin), "foreign")
        url = f"/api/v2/workspaces/{ws.id}"

        async def patch(**attrs: Any) -> httpx.Response:
            body = {"data": {"type": "workspaces", "attributes": attrs}}
            return await admin.patch(url, json=body, headers=CT)

        for attrs in (
            {"execution-mode": "agent"},  # no pool
            {"execution-mode": "agent", "agent-pool-id": narrow["id"]},  # not allowed
            {"execution-mode": "agent", "agent-pool-id": foreign["id"]},  # other organization
            {"execution-mode": "agent", "agent-pool-id": "apool-0000000000000000"},
            {"execution-mode": "remote", "agent-pool-id": scoped["id"]},  # wrong mode
            {"agent-pool-id": scoped["id"]},  # the workspace is local
        ):
            refused = await patch(**attrs)
            assert refused.status_code == 422, (attrs, refused.text)
            assert refused.json()["errors"][0]["source"]["pointer"] == (
                "/data/attributes/agent-pool-id"
            )
        unchanged = document(await admin.get(url), 200)["data"]
        assert unchanged["attributes"]["execution-mode"] == "local"
        assert unchanged["relationships"]["agent-pool"]["data"] is None

        data = document(
            await patch(**{"execution-mode": "agent", "agent-pool-id": scoped["id"]}), 200
        )["data"]
        assert data["attributes"]["execution-mode"] == "agent"
        assert data["relationships"]["agent-pool"]["data"] == {
            "id": scoped["id"],
            "type": "agent-pools",
        }
        pool = document(await admin.get(f"/api/v2/agent-pools/{scoped['id']}"), 200)["data"]
        assert pool["relationships"]["workspaces"]["data"] == [{"id": ws.id, "type": "workspaces"}]
        included = document(
            await admin.get(
                f"/api/v2/agent-pools/{scoped['id']}", params={"include": "workspaces"}
            ),
            200,
        )
        assert [i["id"] for i in included["included"]] == [ws.id]

        # A pool in use is not deleted, nor narrowed so that it leaves its workspace out.
        in_use = await admin.delete(f"/api/v2/agent-pools/{scoped['id']}")
        assert in_use.status_code == 422 and "app" in in_use.text
        narrowed = await admin.patch(
            f"/api/v2/agent-pools/{scoped['id']}",
            json=_pool_body(**{"organization-scoped": False}),
            headers=CT,
        )
        assert narrowed.status_code == 422, narrowed.text

        # Leaving agent mode leaves the pool; then the pool can go. operations=true is remote.
        data = document(await patch(operations=True), 200)["data"]
        assert data["attributes"]["execution-mode"] == "remote"
        assert data["relationships"]["agent-pool"]["data"] is None
        assert (await admin.delete(f"/api/v2/agent-pools/{scoped['id']}")).status_code == 204

        # Create with agent mode at once: in a pool that allows no workspace, refused; in an
        # organization-scoped one, accepted.
        body: dict[str, Any] = {
            "data": {
                "type": "workspaces",
                "attributes": {
                    "name": "agented",
                    "execution-mode": "agent",
                    "agent-pool-id": narrow["id"],
                },
            }
        }
        made = await admin.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
        assert made.status_code == 422, made.text
        wide = await _pool(admin, org, "wide2")
        body["data"]["attributes"]["agent-pool-id"] = wide["id"]
        made = await admin.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
        assert (
            document(made, 201)["data"]["relationships"]["agent-pool"]["data"]["id"] == wide["id"]
        )

        # Deleting the organization takes its pools and the workspaces that use them.
        assert (await admin.delete(f"/api/v2/organizations/{org}")).status_code == 204
        assert (await admin.get(f"/api/v2/agent-pools/{wide['id']}")).status_code == 404


async def test_tokens_registration_and_agents(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        pool = await _pool(admin, org, "builders")
        tokens = f"/api/v2/agent-pools/{pool['id']}/authentication-tokens"
        value = await _token(admin, pool["id"], "first")
        assert value.startswith("cairn_apool_") and len(value) == len("cairn_apool_") + 43
        listed = document(await admin.get(tokens), 200)["data"]
        assert len(listed) == 1 and "token" not in listed[0]["attributes"]
        token_id = listed[0]["id"]
        assert token_id.startswith("at-")
        assert listed[0]["attributes"]["description"] == "first"
        assert listed[0]["attributes"]["last-used-at"] is None
        shown = document(await admin.get(f"/api/v2/authentication-tokens/{token_id}"), 200)
        assert shown["data"]["id"] == token_id and "token" not in shown["data"]["attributes"]
        blank = {"data": {"type": "authentication-tokens", "attributes": {"description": " "}}}
        assert (await admin.post(tokens, json=blank, headers=CT)).status_code == 422

        # Register with the pool token: an idle agent of the pool, a session token.
        registered = await _register(any_app, value, "runner-1")
        answer = registered.json()
        assert registered.status_code == 201, registered.text
        assert answer["agent_id"].startswith("agent-")
        assert answer["session_token"].startswith("cairn_agt_")
        assert (answer["heartbeat_s"], answer["claim_wait_s"], answer["lease_s"]) == (10, 25, 60)
        agents = document(await admin.get(f"/api/v2/agent-pools/{pool['id']}/agents"), 200)
        assert [a["attributes"]["name"] for a in agents["data"]] == ["runner-1"]
        agent = agents["data"][0]
        assert agent["attributes"]["status"] == "idle"
        assert agent["attributes"]["last-ping-at"] == "2026-01-01T12:00:00.000Z"
        used = document(await admin.get(f"/api/v2/authentication-tokens/{token_id}"), 200)
        assert used["data"]["attributes"]["last-used-at"] == "2026-01-01T12:00:00.000Z"
        pool_doc = document(await admin.get(f"/api/v2/agent-pools/{pool['id']}"), 200)
        assert pool_doc["data"]["attributes"]["agent-count"] == 1

        # A live agent is not deleted (412); filters on the list.
        one = f"/api/v2/agents/{agent['id']}"
        assert document(await admin.get(one), 200)["data"]["id"] == agent["id"]
        assert (await admin.delete(one)).status_code == 412
        since = {"filter[last-ping-since]": "2026-01-01T12:00:01Z"}
        later = document(
            await admin.get(f"/api/v2/agent-pools/{pool['id']}/agents", params=since), 200
        )
        assert later["data"] == []
        by_status = f"/api/v2/agent-pools/{pool['id']}/agents"
        idle = document(await admin.get(by_status, params={"filter[status]": "idle"}), 200)
        assert [a["id"] for a in idle["data"]] == [agent["id"]]
        busy = document(await admin.get(by_status, params={"filter[status]": "busy"}), 200)
        assert busy["data"] == []
        assert (await admin.get(by_status, params={"filter[status]": "x"})).status_code == 400
        bad = await admin.get(
            f"/api/v2/agent-pools/{pool['id']}/agents", params={"filter[last-ping-since]": "x"}
        )
        assert bad.status_code == 400

        # Silent for 30 s: unknown (deletable); a bad token does not register.
        any_app.advance(timedelta(seconds=31))
        with any_app.ctx.db.unit_of_work(write=True) as s:
            assert any_app.ctx.agents.sweep(s, any_app.clock.now()) == []
            s.commit()
        status = document(await admin.get(one), 200)["data"]["attributes"]["status"]
        assert status == "unknown"
        assert (
            await _register(any_app, value[:-1] + ("y" if value.endswith("x") else "x"))
        ).status_code == 401
        assert (await admin.delete(one)).status_code == 204
        assert (await admin.get(one)).status_code == 404

        # Deleting the token: its agents exit, and it registers no more.
        second = (await _register(any_app, value, "runner-2")).json()
        assert (await admin.delete(f"/api/v2/authentication-tokens/{token_id}")).status_code == 204
        assert (await admin.get(f"/api/v2/authentication-tokens/{token_id}")).status_code == 404
        refused = await _register(any_app, value)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        with any_app.ctx.db.unit_of_work() as s, pytest.raises(AgentUnknown):
            any_app.ctx.agents.authenticate_session(s, second["session_token"])


async def test_register_deregister_sessions_and_sweep(any_app: InProcessCairn) -> None:
    agents = any_app.ctx.agents
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        pool = await _pool(admin, org, "builders")
        value = await _token(admin, pool["id"])

    # The built-in secret registers an agent of no pool; it is in no pool's list.
    builtin = (await _register(any_app, agents.builtin_secret, "worker-0")).json()
    pooled = (await _register(any_app, value, "remote-1")).json()
    db = any_app.ctx.db
    with db.unit_of_work() as s:
        session = agents.authenticate_session(s, builtin["session_token"])
        assert (session.agent_id, session.pool_id, session.organization_id) == (
            builtin["agent_id"],
            None,
            None,
        )
        session = agents.authenticate_session(s, pooled["session_token"])
        assert session.pool_id == pool["id"] and session.organization_id is not None

    # Heartbeats keep an agent alive through sweeps; a silent one goes unknown → errored.
    for _ in range(3):
        any_app.advance(timedelta(seconds=20))
        with db.unit_of_work(write=True) as s:
            agents.touch(s, pooled["agent_id"], busy=True, now=any_app.clock.now())
            assert agents.sweep(s, any_app.clock.now()) == []
            s.commit()
    any_app.advance(timedelta(minutes=5, seconds=30))
    with db.unit_of_work(write=True) as s:
        errored = agents.sweep(s, any_app.clock.now())
        s.commit()
    assert sorted(errored) == sorted([builtin["agent_id"], pooled["agent_id"]])
    with db.unit_of_work() as s, pytest.raises(AgentUnknown):
        agents.authenticate_session(s, builtin["session_token"])
    with db.unit_of_work(write=True) as s, pytest.raises(AgentUnknown):
        agents.touch(s, pooled["agent_id"], busy=False, now=any_app.clock.now())

    # A fresh agent deregisters: exited; its session is refused with agent_unknown (409).
    fresh = (await _register(any_app, value, "remote-2")).json()
    async with any_app.client() as client:
        auth = {"Authorization": f"Bearer {fresh['session_token']}"}
        assert (await client.post(f"{AGENT}/deregister", headers=auth)).status_code == 204
        again = await client.post(f"{AGENT}/deregister", headers=auth)
        assert again.status_code == 409 and again.json()["error"] == "agent_unknown"
        none = await client.post(f"{AGENT}/deregister")
        assert none.status_code == 401 and none.json()["error"] == "unauthorized"

    # An hour after errored/exited, agents are deleted: their sessions are still agent_unknown.
    any_app.advance(timedelta(hours=1))
    with db.unit_of_work(write=True) as s:
        assert agents.sweep(s, any_app.clock.now()) == []
        s.commit()
    async with any_app.client(any_app.admin_token) as admin:
        listed = document(await admin.get(f"/api/v2/agent-pools/{pool['id']}/agents"), 200)
        assert listed["data"] == []
    with db.unit_of_work() as s, pytest.raises(AgentUnknown):
        agents.authenticate_session(s, fresh["session_token"])


async def test_registration_refuses_bad_input(any_app: InProcessCairn) -> None:
    agents = any_app.ctx.agents
    async with any_app.client() as client:
        url = f"{AGENT}/register"
        none = await client.post(url, json={"name": "x"})
        assert none.status_code == 401 and none.json()["error"] == "unauthorized"
        auth = {"Authorization": f"Bearer {agents.builtin_secret}"}
        for body, status in (
            (b"[1]", 400),
            (b"{", 400),
            (b'{"name": 5}', 400),
            (b'{"accept": ["plan", "destroy"]}', 400),
            (b'{"name": "' + b"n" * 300 + b'"}', 400),
        ):
            refused = await client.post(url, content=body, headers=auth)
            assert refused.status_code == status, (body, refused.text)
            assert set(refused.json()) == {"error", "detail"}
        huge = await client.post(url, content=b" " * (17 * 1024), headers=auth)
        assert huge.status_code == 413 and huge.json()["error"] == "too_large"
        # An API token is not an agent token.
        api = await client.post(url, headers={"Authorization": f"Bearer {any_app.admin_token}"})
        assert api.status_code == 401
        with any_app.ctx.db.unit_of_work() as s:
            count = s.execute(text("SELECT count(*) FROM agents")).scalar()
        assert count == 0


async def test_who_may_manage_agent_pools(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        pool = await _pool(admin, org, "builders")
        value = await _token(admin, pool["id"])
        tokens = document(
            await admin.get(f"/api/v2/agent-pools/{pool['id']}/authentication-tokens"), 200
        )
        token_id = tokens["data"][0]["id"]
        member = await make_user(admin, "member")
        plain = await team(admin, org, "plain", {"read-workspaces": True})
        await add_member(admin, plain["id"], member.id)
        manager = await make_user(admin, "manager")
        managers = await team(admin, org, "pools", {"manage-agent-pools": True})
        await add_member(admin, managers["id"], manager.id)
        outsider = await make_user(admin, "outsider")
    base = f"/api/v2/organizations/{org}/agent-pools"
    one = f"/api/v2/agent-pools/{pool['id']}"
    async with any_app.client(member.token) as client:
        # Reads are open to the organization's members; changes and tokens are not.
        assert document(await client.get(base), 200)["data"][0]["id"] == pool["id"]
        document(await client.get(one), 200)
        document(await client.get(f"{one}/agents"), 200)
        assert (await client.post(base, json=_pool_body("x"), headers=CT)).status_code == 403
        assert (await client.patch(one, json=_pool_body("y"), headers=CT)).status_code == 403
        assert (await client.delete(one)).status_code == 403
        assert (await client.get(f"{one}/authentication-tokens")).status_code == 403
        assert (await client.get(f"/api/v2/authentication-tokens/{token_id}")).status_code == 404
        assert (await client.delete(f"/api/v2/authentication-tokens/{token_id}")).status_code == 404
    async with any_app.client(outsider.token) as client:
        assert (await client.get(base)).status_code == 404
        assert (await client.get(one)).status_code == 404
        assert (await client.delete(one)).status_code == 404
    async with any_app.client(manager.token) as client:
        made = await _pool(client, org, "theirs")
        document(await client.get(f"/api/v2/authentication-tokens/{token_id}"), 200)
        await _token(client, made["id"])
        assert (await client.delete(f"/api/v2/agent-pools/{made['id']}")).status_code == 204
    # The pool token is still good (nobody deleted it).
    assert (await _register(any_app, value)).status_code == 201


async def test_a_pool_has_a_bounded_number_of_agents(
    any_app: InProcessCairn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "MAX_AGENTS_PER_POOL", 2)
    async with any_app.client(any_app.admin_token) as admin:
        pool = await _pool(admin, await create_organization(admin), "small")
        value = await _token(admin, pool["id"])
    first = (await _register(any_app, value, "one")).json()
    assert (await _register(any_app, value, "two")).status_code == 201
    full = await _register(any_app, value, "three")
    assert full.status_code == 409 and full.json()["error"] == "too_many_agents"
    # An agent that exits frees its place.
    async with any_app.client() as client:
        auth = {"Authorization": f"Bearer {first['session_token']}"}
        assert (await client.post(f"{AGENT}/deregister", headers=auth)).status_code == 204
    assert (await _register(any_app, value, "three")).status_code == 201
