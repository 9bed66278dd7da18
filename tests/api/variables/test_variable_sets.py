"""Variable sets through the TFE API, in-process on SQLite and PostgreSQL: the sets and their
variables (sensitive values null in every answer, sealed at rest), applying them to workspaces
and projects, HCP Terraform's precedence in ``all-vars`` and in what a run's job gets,
validation as 422s that change nothing, access (managing needs manage-workspaces, reading
variables:read organization-wide) and audit events without values."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cairn.audit.model import AuditEvent
from cairn.errors import SealError
from cairn.variables.sets_model import VariableSetVariable, set_sealing_aad
from tests.api.teams.helpers import add_member, project, team
from tests.support.app import (
    CT,
    InProcessCairn,
    Workspace,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

SECRET = "varset-s3cr3t-never-shown"


def set_body(name: str, **attrs: Any) -> dict[str, Any]:
    rels = attrs.pop("relationships", None)
    data: dict[str, Any] = {"type": "varsets", "attributes": {"name": name, **attrs}}
    if rels is not None:
        data["relationships"] = rels
    return {"data": data}


def var_body(key: str, value: str = "v", category: str = "terraform", **attrs: Any) -> Any:
    return {
        "data": {
            "type": "vars",
            "attributes": {"key": key, "value": value, "category": category, **attrs},
        }
    }


async def make_set(c: httpx.AsyncClient, org: str, name: str, **attrs: Any) -> dict[str, Any]:
    made = await c.post(f"/api/v2/organizations/{org}/varsets", json=set_body(name, **attrs))
    data: dict[str, Any] = document(made, 201)["data"]
    return data


async def add_var(c: httpx.AsyncClient, set_id: str, *a: Any, **kw: Any) -> dict[str, Any]:
    made = await c.post(f"/api/v2/varsets/{set_id}/relationships/vars", json=var_body(*a, **kw))
    data: dict[str, Any] = document(made, 201)["data"]
    return data


async def apply(c: httpx.AsyncClient, set_id: str, kind: str, *ids: str) -> httpx.Response:
    body = {"data": [{"type": kind, "id": i} for i in ids]}
    return await c.post(f"/api/v2/varsets/{set_id}/relationships/{kind}", json=body)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    errors: list[dict[str, Any]] = document(response, status)["errors"]
    assert len(errors) == 1
    return errors[0]


def job_values(app: InProcessCairn, ws_id: str) -> dict[str, str]:
    with app.ctx.db.unit_of_work() as s:
        got = app.ctx.variables.for_job(s, ws_id)
    return {k: v for k, v, _ in got.terraform} | {f"env:{k}": v for k, v in got.env}


async def all_vars(c: httpx.AsyncClient, ws: Workspace) -> dict[str, tuple[str | None, str]]:
    """key → (value, where it comes from: the workspace's ID or the set's)."""
    data = document(await c.get(f"/api/v2/workspaces/{ws.id}/all-vars"), 200)["data"]
    out = {}
    for d in data:
        key = d["attributes"]["key"]
        if d["attributes"]["category"] == "env":
            key = f"env:{key}"
        out[key] = (d["attributes"]["value"], d["relationships"]["configurable"]["data"]["id"])
    return out


async def workspace_in(c: httpx.AsyncClient, org: str, name: str, prj: str) -> Workspace:
    body = {
        "data": {
            "type": "workspaces",
            "attributes": {"name": name},
            "relationships": {"project": {"data": {"type": "projects", "id": prj}}},
        }
    }
    made = await c.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
    return Workspace(org, name, document(made, 201)["data"]["id"])


async def test_sets_and_their_variables(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        org = await create_organization(c)
        ws = await create_workspace(c, org)
        made = await make_set(c, org, "shared", description="for all")
        assert made["id"].startswith("varset-") and made["type"] == "varsets"
        attrs = made["attributes"]
        assert {k: attrs[k] for k in ("name", "description", "global", "priority")} == {
            "name": "shared",
            "description": "for all",
            "global": False,
            "priority": False,
        }
        assert (attrs["var-count"], attrs["workspace-count"], attrs["project-count"]) == (0, 0, 0)
        assert made["relationships"]["organization"]["data"] == {
            "id": org,
            "type": "organizations",
        }
        set_id = made["id"]

        region = await add_var(c, set_id, "region", "eu-west-1", description="where")
        assert region["id"].startswith("var-")
        assert region["attributes"]["value"] == "eu-west-1"
        assert region["relationships"]["varset"]["data"] == {"id": set_id, "type": "varsets"}
        secret = await add_var(c, set_id, "TOKEN", SECRET, "env", sensitive=True)
        assert secret["attributes"]["value"] is None and secret["attributes"]["sensitive"]

        shown = document(await c.get(f"/api/v2/varsets/{set_id}"), 200)["data"]
        assert shown["attributes"]["var-count"] == 2
        assert {d["id"] for d in shown["relationships"]["vars"]["data"]} == {
            region["id"],
            secret["id"],
        }
        listed = document(await c.get(f"/api/v2/varsets/{set_id}/relationships/vars"), 200)
        assert [d["attributes"]["key"] for d in listed["data"]] == ["region", "TOKEN"]
        assert SECRET not in (await c.get(f"/api/v2/varsets/{set_id}/relationships/vars")).text
        one = f"/api/v2/varsets/{set_id}/relationships/vars/{region['id']}"
        assert document(await c.get(one), 200)["data"]["attributes"]["key"] == "region"

        changed = await c.patch(one, json={"data": {"type": "vars", "attributes": {"value": "x"}}})
        assert document(changed, 200)["data"]["attributes"]["value"] == "x"
        assert (
            document(changed, 200)["data"]["attributes"]["version-id"]
            != region["attributes"]["version-id"]
        )
        # A sensitive variable stays sensitive; a taken key is refused; neither changes a thing.
        unsensitive = {"data": {"type": "vars", "attributes": {"sensitive": False}}}
        secret_one = f"/api/v2/varsets/{set_id}/relationships/vars/{secret['id']}"
        refused = await c.patch(secret_one, json=unsensitive)
        assert error(refused, 422)["source"]["pointer"] == "/data/attributes/sensitive"
        dup = await c.post(f"/api/v2/varsets/{set_id}/relationships/vars", json=var_body("region"))
        assert "already been taken" in error(dup, 422)["detail"]
        bad = await c.post(f"/api/v2/varsets/{set_id}/relationships/vars", json=var_body("1x"))
        assert error(bad, 422)["source"]["pointer"] == "/data/attributes/key"

        # The set is listed by the organization, searched by name, renamed, then deleted.
        page = document(await c.get(f"/api/v2/organizations/{org}/varsets"), 200)
        assert [d["id"] for d in page["data"]] == [set_id]
        assert page["meta"]["pagination"]["total-count"] == 1
        none = await c.get(f"/api/v2/organizations/{org}/varsets", params={"q": "nope"})
        assert document(none, 200)["data"] == []
        renamed = await c.patch(f"/api/v2/varsets/{set_id}", json=set_body("renamed"))
        assert document(renamed, 200)["data"]["attributes"]["name"] == "renamed"
        await make_set(c, org, "other")
        taken = await c.patch(f"/api/v2/varsets/{set_id}", json=set_body("other"))
        assert error(taken, 422)["source"]["pointer"] == "/data/attributes/name"
        blank = await c.post(f"/api/v2/organizations/{org}/varsets", json=set_body(" "))
        assert error(blank, 422)["source"]["pointer"] == "/data/attributes/name"

        assert (await c.delete(secret_one)).status_code == 204
        assert (await c.get(secret_one)).status_code == 404
        assert (await c.delete(f"/api/v2/varsets/{set_id}")).status_code == 204
        assert (await c.get(f"/api/v2/varsets/{set_id}")).status_code == 404
        assert (await c.get(one)).status_code == 404
        assert job_values(any_app, ws.id) == {}


async def test_sensitive_values_are_sealed_and_bound_to_their_row(
    any_app: InProcessCairn,
) -> None:
    async with any_app.client(any_app.admin_token) as c:
        org = await create_organization(c)
        set_id = (await make_set(c, org, "s"))["id"]
        a = await add_var(c, set_id, "a", SECRET, sensitive=True)
        b = await add_var(c, set_id, "b", "plain")
    with any_app.ctx.db.unit_of_work(write=True) as s:
        row_a = s.get(VariableSetVariable, a["id"])
        row_b = s.get(VariableSetVariable, b["id"])
        assert row_a is not None and row_b is not None
        assert SECRET.encode() not in row_a.value_sealed
        assert SECRET not in repr(row_a)
        keyring = any_app.ctx.keyring
        aad = set_sealing_aad(set_id, a["id"], sensitive=True)
        assert keyring.open(row_a.value_sealed, aad=aad) == SECRET.encode()
        # A sealed value copied to another row does not open there.
        with pytest.raises(SealError):
            keyring.open(row_a.value_sealed, aad=set_sealing_aad(set_id, b["id"], sensitive=True))


async def test_precedence_as_hcp_terraform_documents_it(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        org = await create_organization(c)
        prj = await project(c, org, "team-a")
        ws = await workspace_in(c, org, "app", prj)
        other = await create_workspace(c, org, "elsewhere")
        document(await c.post(f"/api/v2/workspaces/{ws.id}/vars", json=var_body("VAR1", "h")), 201)
        document(
            await c.post(f"/api/v2/workspaces/{ws.id}/vars", json=var_body("replicas", "1")), 201
        )
        a = (await make_set(c, org, "A_Variable_Set"))["id"]  # workspace-scoped
        b = (await make_set(c, org, "B_Variable_Set"))["id"]  # project-scoped
        g = (await make_set(c, org, "C_Variable_Set", **{"global": True}))["id"]
        p1 = (await make_set(c, org, "1_Variable_Set", **{"global": True, "priority": True}))["id"]
        p2 = (await make_set(c, org, "2_Variable_Set", priority=True))["id"]
        p3 = (await make_set(c, org, "3_Variable_Set", priority=True))["id"]
        assert (await apply(c, a, "workspaces", ws.id)).status_code == 204
        assert (await apply(c, b, "projects", prj)).status_code == 204
        assert (await apply(c, p2, "projects", prj)).status_code == 204
        assert (await apply(c, p3, "workspaces", ws.id)).status_code == 204
        for set_id, key, value in (
            (p1, "REGION", "us-east-1"),
            (p2, "REGION", "us-east-2"),
            (p3, "REGION", "us-west-1"),
            (a, "VAR1", "y"),
            (a, "KEY1", "x"),
            (a, "replicas", "2"),
            (b, "ACCESS_KEY", "g47fh474"),
            (b, "KEY1", "b"),
            (b, "VAR2", "z"),
            (b, "replicas", "3"),
            (g, "VAR2", "a"),
            (g, "KEY2", "c"),
            (g, "replicas", "4"),
        ):
            await add_var(c, set_id, key, value)
        await add_var(c, g, "KEY2", "env-is-another-category", "env")
        # The table of HCP Terraform's precedence example (without the run-specific rows).
        expected = {
            "REGION": ("us-east-1", p1),
            "VAR1": ("h", ws.id),
            "replicas": ("1", ws.id),
            "KEY1": ("x", a),
            "ACCESS_KEY": ("g47fh474", b),
            "VAR2": ("z", b),
            "KEY2": ("c", g),
            "env:KEY2": ("env-is-another-category", g),
        }
        assert await all_vars(c, ws) == expected
        assert job_values(any_app, ws.id) == {k: v for k, (v, _) in expected.items()}
        # Only global sets reach a workspace outside the project.
        assert job_values(any_app, other.id) == {
            "REGION": "us-east-1",
            "VAR2": "a",
            "KEY2": "c",
            "replicas": "4",
            "env:KEY2": "env-is-another-category",
        }

        # Between sets of one level, the name first in code-point order wins, whatever the
        # order of their making or changing.
        late = (await make_set(c, org, "0_first"))["id"]
        await add_var(c, late, "KEY1", "zero")
        assert (await apply(c, late, "workspaces", ws.id)).status_code == 204
        assert (await all_vars(c, ws))["KEY1"] == ("zero", late)
        # Without priority, the priority sets fall back to their levels.
        for set_id in (p1, p2, p3):
            blank = await c.patch(f"/api/v2/varsets/{set_id}", json=set_body("", priority=False))
            assert blank.status_code == 422  # a blank name is refused: nothing changes
            kept = document(await c.get(f"/api/v2/varsets/{set_id}"), 200)["data"]
            assert kept["attributes"]["priority"] is True
            off = {"data": {"type": "varsets", "attributes": {"priority": False}}}
            document(await c.patch(f"/api/v2/varsets/{set_id}", json=off), 200)
        assert (await all_vars(c, ws))["REGION"] == ("us-west-1", p3)
        # A workspace removed from a set no longer gets its variables.
        body = {"data": [{"type": "workspaces", "id": ws.id}]}
        removed = await c.request(
            "DELETE", f"/api/v2/varsets/{p3}/relationships/workspaces", json=body
        )
        assert removed.status_code == 204
        assert (await all_vars(c, ws))["REGION"] == ("us-east-2", p2)
        # The sets of the workspace and of the project.
        listed = document(await c.get(f"/api/v2/workspaces/{ws.id}/varsets"), 200)["data"]
        assert {d["id"] for d in listed} == {a, b, g, p1, p2, late}
        of_project = document(await c.get(f"/api/v2/projects/{prj}/varsets"), 200)["data"]
        assert {d["id"] for d in of_project} == {b, g, p1, p2}


async def test_sensitive_set_values_reach_the_job_and_its_mask(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        org = await create_organization(c)
        ws = await create_workspace(c, org)
        set_id = (await make_set(c, org, "creds", **{"global": True}))["id"]
        await add_var(c, set_id, "AWS_SECRET", SECRET, "env", sensitive=True)
        shown = await all_vars(c, ws)
        assert shown == {"env:AWS_SECRET": (None, set_id)}
    with any_app.ctx.db.unit_of_work() as s:
        job = any_app.ctx.variables.for_job(s, ws.id)
    assert job.env == [("AWS_SECRET", SECRET)] and job.sensitive_values == [SECRET]
    assert SECRET not in repr(job)


async def test_global_sets_and_targets(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        org = await create_organization(c)
        other_org = await create_organization(c)
        ws = await create_workspace(c, org)
        foreign = await create_workspace(c, other_org)
        g1 = (await make_set(c, org, "g1", **{"global": True}))["id"]
        await add_var(c, g1, "region", "a")
        g2 = (await make_set(c, org, "g2", **{"global": True}))["id"]
        # Different global sets may not hold the same category and key.
        clash = await c.post(f"/api/v2/varsets/{g2}/relationships/vars", json=var_body("region"))
        assert "global variable set 'g1'" in error(clash, 422)["detail"]
        await add_var(c, g2, "region", "env is fine", "env")
        plain = (await make_set(c, org, "plain"))["id"]
        await add_var(c, plain, "region", "b")
        to_global = {"data": {"type": "varsets", "attributes": {"global": True}}}
        refused = await c.patch(f"/api/v2/varsets/{plain}", json=to_global)
        assert error(refused, 422)["source"]["pointer"] == "/data/attributes/global"
        assert (
            document(await c.get(f"/api/v2/varsets/{plain}"), 200)["data"]["attributes"]["global"]
            is False
        )
        # A global set is applied to nothing by hand.
        assert (await apply(c, g1, "workspaces", ws.id)).status_code == 422
        # Only the organization's workspaces and projects; nothing is kept of a refused request.
        wrong = await apply(c, plain, "workspaces", ws.id, foreign.id)
        assert "is not a workspace of organization" in error(wrong, 422)["detail"]
        assert error(wrong, 422)["source"]["pointer"] == "/data/1"
        foreign_rel = set_body(
            "foreign",
            relationships={"workspaces": {"data": [{"type": "workspaces", "id": foreign.id}]}},
        )
        refused = await c.post(f"/api/v2/organizations/{org}/varsets", json=foreign_rel)
        assert error(refused, 422)["source"]["pointer"] == "/data/relationships/workspaces/data/0"
        assert (await apply(c, plain, "projects", "prj-doesnotexist0000")).status_code == 422
        shown = document(await c.get(f"/api/v2/varsets/{plain}"), 200)["data"]
        assert shown["attributes"]["workspace-count"] == 0
        assert (await apply(c, plain, "workspaces", ws.id, ws.id)).status_code == 204
        assert (await apply(c, plain, "workspaces", ws.id)).status_code == 204  # again: no-op
        shown = document(await c.get(f"/api/v2/varsets/{plain}"), 200)["data"]
        assert shown["relationships"]["workspaces"]["data"] == [{"id": ws.id, "type": "workspaces"}]
        # PATCH with relationships.workspaces replaces them (pytfe's update_workspaces).
        replace = {
            "data": {
                "type": "varsets",
                "attributes": {"global": False},
                "relationships": {"workspaces": {"data": []}},
            }
        }
        replaced = document(await c.patch(f"/api/v2/varsets/{plain}", json=replace), 200)
        assert replaced["data"]["attributes"]["workspace-count"] == 0
        # A set created with its variables and workspaces at once.
        made = await make_set(
            c,
            org,
            "all-at-once",
            relationships={
                "workspaces": {"data": [{"type": "workspaces", "id": ws.id}]},
                "vars": {
                    "data": [
                        {
                            "type": "vars",
                            "attributes": {"key": "k", "value": "1", "category": "terraform"},
                        }
                    ]
                },
            },
        )
        assert made["attributes"]["var-count"] == 1 and made["attributes"]["workspace-count"] == 1
        assert job_values(any_app, ws.id)["k"] == "1"
        # A bad variable in the body: nothing is created.
        bad = set_body(
            "broken",
            relationships={"vars": {"data": [{"type": "vars", "attributes": {"key": "1x"}}]}},
        )
        refused = await c.post(f"/api/v2/organizations/{org}/varsets", json=bad)
        assert refused.status_code == 422
        names = [
            d["attributes"]["name"]
            for d in document(await c.get(f"/api/v2/organizations/{org}/varsets"), 200)["data"]
        ]
        assert "broken" not in names
        # Project-owned sets are not cairn's: a clear 422.
        parent = set_body(
            "owned", relationships={"parent": {"data": {"type": "projects", "id": "prj-x"}}}
        )
        refused = await c.post(f"/api/v2/organizations/{org}/varsets", json=parent)
        assert error(refused, 422)["source"]["pointer"] == "/data/relationships/parent"
        # include=vars brings the variables (sensitive ones without their value).
        inc = await c.get(f"/api/v2/varsets/{made['id']}", params={"include": "vars,workspaces"})
        included = document(inc, 200)["included"]
        assert {(d["type"], d["id"]) for d in included} >= {("workspaces", ws.id)}
        assert [d["attributes"]["key"] for d in included if d["type"] == "vars"] == ["k"]


async def test_access(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as admin:
        org = await create_organization(admin)
        ws = await create_workspace(admin, org, "app-x")
        set_id = (await make_set(admin, org, "shared"))["id"]
        var = await add_var(admin, set_id, "k", "v")
        manager = await make_user(admin, "manager")
        reader = await make_user(admin, "reader")
        ws_reader = await make_user(admin, "wsreader")
        outsider = await make_user(admin, "outsider")
        managers = await team(admin, org, "managers", {"manage-workspaces": True})
        await add_member(admin, managers["id"], manager.id)
        readers = await team(admin, org, "readers", {"read-workspaces": True})
        await add_member(admin, readers["id"], reader.id)
        grant = {"role": "read", "workspaces": "app-*", "user": ws_reader.username}
        document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)
        one = f"/api/v2/varsets/{set_id}"

    async with any_app.client(manager.token) as c:
        made = await make_set(c, org, "by-manager")
        await add_var(c, made["id"], "x", "1")
        assert (await apply(c, made["id"], "workspaces", ws.id)).status_code == 204
        patched = await c.patch(
            one, json={"data": {"type": "varsets", "attributes": {"priority": True}}}
        )
        assert document(patched, 200)["data"]["attributes"]["priority"] is True
    async with any_app.client(reader.token) as c:
        assert document(await c.get(one), 200)["data"]["id"] == set_id
        assert len(document(await c.get(f"/api/v2/organizations/{org}/varsets"), 200)["data"]) == 2
        listed = document(await c.get(f"{one}/relationships/vars"), 200)["data"]
        assert [d["id"] for d in listed] == [var["id"]]
        for response in (
            await c.post(f"/api/v2/organizations/{org}/varsets", json=set_body("mine")),
            await c.patch(one, json=set_body("new-name")),
            await c.delete(one),
            await c.post(f"{one}/relationships/vars", json=var_body("y")),
            await c.delete(f"{one}/relationships/vars/{var['id']}"),
            await apply(c, set_id, "workspaces", ws.id),
        ):
            assert response.status_code == 403, response.text
            assert "workspace:manage" in response.text
    async with any_app.client(ws_reader.token) as c:
        # variables:read on the workspace: its sets and its variables in effect, not the
        # organization's sets.
        assert len(document(await c.get(f"/api/v2/workspaces/{ws.id}/varsets"), 200)["data"]) == 1
        assert (await all_vars(c, ws))["x"][0] == "1"
        assert (await c.get(one)).status_code == 403
    async with any_app.client(outsider.token) as c:
        for path in (one, f"{one}/relationships/vars", f"/api/v2/organizations/{org}/varsets"):
            assert (await c.get(path)).status_code == 404
        assert (await c.delete(one)).status_code == 404
        assert (await c.get(f"/api/v2/workspaces/{ws.id}/varsets")).status_code == 404
    async with any_app.client(any_app.admin_token) as admin:
        assert document(await admin.get(one), 200)["data"]["attributes"]["name"] == "shared"


async def test_audit_events_carry_no_values(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        org = await create_organization(c)
        ws = await create_workspace(c, org)
        set_id = (await make_set(c, org, "audited"))["id"]
        var = await add_var(c, set_id, "k", SECRET, sensitive=True)
        one = f"/api/v2/varsets/{set_id}/relationships/vars/{var['id']}"
        body = {"data": {"type": "vars", "attributes": {"value": SECRET + "2"}}}
        document(await c.patch(one, json=body), 200)
        assert (await apply(c, set_id, "workspaces", ws.id)).status_code == 204
        assert (await c.delete(one)).status_code == 204
        assert (await c.delete(f"/api/v2/varsets/{set_id}")).status_code == 204
    with any_app.ctx.db.unit_of_work() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action.like("varset.%"))))
    actions = [e.action for e in events]
    for action in (
        "varset.create",
        "varset.variable.create",
        "varset.variable.update",
        "varset.apply-workspaces",
        "varset.variable.delete",
        "varset.delete",
    ):
        assert action in actions
    assert all(SECRET not in e.details and SECRET not in e.subject for e in events)


async def test_limits_and_bad_bodies(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        org = await create_organization(c)
        set_id = (await make_set(c, org, "s"))["id"]
        path = f"/api/v2/varsets/{set_id}/relationships/workspaces"
        too_many = {"data": [{"type": "workspaces", "id": f"ws-{i}"} for i in range(101)]}
        assert (await c.post(path, json=too_many)).status_code == 422
        wrong_type = {"data": [{"type": "projects", "id": "prj-x"}]}
        assert (await c.post(path, json=wrong_type)).status_code == 422
        assert (await c.post(path, json={"data": {}})).status_code == 400
        long_name = await c.post(f"/api/v2/organizations/{org}/varsets", json=set_body("n" * 129))
        assert error(long_name, 422)["source"]["pointer"] == "/data/attributes/name"
        not_bool = await c.post(
            f"/api/v2/organizations/{org}/varsets", json=set_body("b", **{"global": "yes"})
        )
        assert error(not_bool, 422)["source"]["pointer"] == "/data/attributes/global"
        with_vars = {"data": {"type": "varsets", "relationships": {"vars": {"data": []}}}}
        refused = await c.patch(f"/api/v2/varsets/{set_id}", json=with_vars)
        assert error(refused, 422)["source"]["pointer"] == "/data/relationships/vars"
        # Values of a set are bounded (2 MiB); one value by the variables' limit.
        big = "x" * (256 * 1024)
        for i in range(8):
            await add_var(c, set_id, f"v{i}", big)
        over = await c.post(
            f"/api/v2/varsets/{set_id}/relationships/vars", json=var_body("v9", big)
        )
        assert error(over, 422)["source"]["pointer"] == "/data/attributes/value"
        shown = document(await c.get(f"/api/v2/varsets/{set_id}"), 200)["data"]
        assert shown["attributes"]["var-count"] == 8


async def test_deleting_a_workspace_or_project_removes_it_from_the_sets(
    any_app: InProcessCairn,
) -> None:
    async with any_app.client(any_app.admin_token) as c:
        org = await create_organization(c)
        ws = await create_workspace(c, org)
        prj = await project(c, org, "short-lived")
        set_id = (await make_set(c, org, "s"))["id"]
        assert (await apply(c, set_id, "workspaces", ws.id)).status_code == 204
        assert (await apply(c, set_id, "projects", prj)).status_code == 204
        assert (await c.delete(f"/api/v2/workspaces/{ws.id}")).status_code == 204
        assert (await c.delete(f"/api/v2/projects/{prj}")).status_code == 204
        shown = document(await c.get(f"/api/v2/varsets/{set_id}"), 200)["data"]["attributes"]
        assert (shown["workspace-count"], shown["project-count"]) == (0, 0)
        assert (await c.delete(f"/api/v2/organizations/{org}")).status_code == 204
        assert (await c.get(f"/api/v2/varsets/{set_id}")).status_code == 404
