"""Workspace variables through the TFE API, in-process on SQLite and PostgreSQL: the
``/workspaces/:id/vars`` endpoints and the deprecated ``/vars`` ones, sensitive values null
in every answer, validation as 422s pointing at the attribute (changing nothing), and access
(``variables:read`` to see them, ``variables:write`` to change them; a workspace one may not
read is a 404)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cairn.audit.model import AuditEvent
from cairn.variables import service as variables_service
from cairn.variables.model import MAX_VALUE_BYTES
from tests.support.app import (
    CT,
    InProcessCairn,
    Workspace,
    create_organization,
    create_workspace,
    document,
    make_user,
    organization_and_workspace,
)

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-value-never-shown"


def var_body(key: str, value: str = "v", category: str = "terraform", **attrs: Any) -> Any:
    return {
        "data": {
            "type": "vars",
            "attributes": {"key": key, "value": value, "category": category, **attrs},
        }
    }


async def create(c: httpx.AsyncClient, ws: Workspace, *a: Any, **kw: Any) -> dict[str, Any]:
    response = await c.post(f"/api/v2/workspaces/{ws.id}/vars", json=var_body(*a, **kw))
    data: dict[str, Any] = document(response, 201)["data"]
    return data


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    errors: list[dict[str, Any]] = document(response, status)["errors"]
    assert len(errors) == 1
    return errors[0]


def job_values(app: InProcessCairn, ws_id: str) -> dict[str, str]:
    with app.ctx.db.unit_of_work() as s:
        got = app.ctx.variables.for_job(s, ws_id)
    return {k: v for k, v, _ in got.terraform} | {f"env:{k}": v for k, v in got.env}


async def test_create_list_show_update_delete(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        ws = await organization_and_workspace(c)
        made = await create(c, ws, "region", "eu-west-1", description="where")
        assert made["id"].startswith("var-")
        assert made["type"] == "vars"
        attrs = made["attributes"]
        assert {k: attrs[k] for k in ("key", "value", "description", "category")} == {
            "key": "region",
            "value": "eu-west-1",
            "description": "where",
            "category": "terraform",
        }
        assert attrs["hcl"] is False and attrs["sensitive"] is False
        assert len(attrs["version-id"]) == 36
        assert made["relationships"]["configurable"] == {
            "data": {"id": ws.id, "type": "workspaces"},
            "links": {"related": f"/api/v2/organizations/{ws.org}/workspaces/{ws.name}"},
        }
        one = f"/api/v2/workspaces/{ws.id}/vars/{made['id']}"
        assert made["links"] == {"self": one}
        await create(c, ws, "TF_LOG", "INFO", "env")

        listed = document(await c.get(f"/api/v2/workspaces/{ws.id}/vars"), 200)["data"]
        assert [(v["attributes"]["key"], v["attributes"]["category"]) for v in listed] == [
            ("region", "terraform"),
            ("TF_LOG", "env"),
        ]
        all_vars = document(await c.get(f"/api/v2/workspaces/{ws.id}/all-vars"), 200)["data"]
        assert all_vars == listed
        assert document(await c.get(one), 200)["data"] == made

        patch = {"data": {"type": "vars", "id": made["id"], "attributes": {"value": "us-east-2"}}}
        changed = document(await c.patch(one, json=patch, headers=CT), 200)["data"]
        assert changed["attributes"]["value"] == "us-east-2"
        assert changed["attributes"]["description"] == "where"  # left as it was
        assert changed["attributes"]["version-id"] != attrs["version-id"]

        assert (await c.delete(one)).status_code == 204
        assert error(await c.get(one), 404)["detail"].startswith("variable")
        assert (await c.delete(one)).status_code == 404
        assert job_values(any_app, ws.id) == {"env:TF_LOG": "INFO"}


async def test_sensitive_values_are_null_in_every_answer(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        ws = await organization_and_workspace(c)
        made = await create(c, ws, "password", SECRET, sensitive=True)
        assert made["attributes"]["value"] is None and made["attributes"]["sensitive"] is True
        one = f"/api/v2/workspaces/{ws.id}/vars/{made['id']}"
        answers = [
            await c.get(one),
            await c.get(f"/api/v2/workspaces/{ws.id}/vars"),
            await c.get(f"/api/v2/vars/{made['id']}"),
            await c.get("/api/v2/vars", params=filters(ws)),
            await c.patch(one, json={"data": {"attributes": {"description": "d"}}}, headers=CT),
            await c.patch(one, json={"data": {"attributes": {"value": SECRET + "2"}}}, headers=CT),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert SECRET not in answer.text
            data = answer.json()["data"]
            for item in data if isinstance(data, list) else [data]:
                assert item["attributes"]["value"] is None
        refused = await c.patch(
            one, json={"data": {"attributes": {"sensitive": False}}}, headers=CT
        )
        err = error(refused, 422)
        assert err["source"] == {"pointer": "/data/attributes/sensitive"}
        assert SECRET not in refused.text
        assert job_values(any_app, ws.id) == {"password": SECRET + "2"}
        # The audit events name the variable, never its value.
        with any_app.ctx.db.unit_of_work() as s:
            events = list(s.scalars(select(AuditEvent).where(AuditEvent.action.like("variable.%"))))
        assert sorted(e.action for e in events) == ["variable.create"] + ["variable.update"] * 2
        assert all(SECRET not in e.details + e.subject for e in events)


def filters(ws: Workspace) -> dict[str, str]:
    return {"filter[organization][name]": ws.org, "filter[workspace][name]": ws.name}


async def test_the_deprecated_vars_endpoints(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        ws = await organization_and_workspace(c)
        by_relationship = var_body("a", "1")
        by_relationship["data"]["relationships"] = {
            "workspace": {"data": {"type": "workspaces", "id": ws.id}}
        }
        a = document(await c.post("/api/v2/vars", json=by_relationship, headers=CT), 201)["data"]
        assert a["links"] == {"self": f"/api/v2/vars/{a['id']}"}
        by_filter = var_body("b", "2") | {
            "filter": {"organization": {"name": ws.org}, "workspace": {"name": ws.name}}
        }
        b = document(await c.post("/api/v2/vars", json=by_filter, headers=CT), 201)["data"]
        assert b["relationships"]["configurable"]["data"]["id"] == ws.id

        listed = document(await c.get("/api/v2/vars", params=filters(ws)), 200)["data"]
        assert [v["id"] for v in listed] == [a["id"], b["id"]]
        assert listed[0]["links"]["self"] == f"/api/v2/vars/{a['id']}"
        for params in ({}, {"filter[organization][name]": ws.org}):
            err = error(await c.get("/api/v2/vars", params=params), 400)
            assert "both required" in err["detail"]
        nowhere = error(await c.post("/api/v2/vars", json=var_body("c"), headers=CT), 422)
        assert nowhere["source"] == {"pointer": "/data/relationships/workspace"}

        patch = {"data": {"type": "vars", "attributes": {"key": "a2", "hcl": True}}}
        changed = document(await c.patch(f"/api/v2/vars/{a['id']}", json=patch, headers=CT), 200)
        assert changed["data"]["attributes"]["key"] == "a2"
        assert changed["data"]["attributes"]["hcl"] is True
        assert document(await c.get(f"/api/v2/vars/{a['id']}"), 200)["data"]["id"] == a["id"]
        assert (await c.delete(f"/api/v2/vars/{a['id']}")).status_code == 204
        assert (await c.get(f"/api/v2/vars/{a['id']}")).status_code == 404
        assert job_values(any_app, ws.id) == {"b": "2"}


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"key": "1abc", "category": "terraform"}, "/data/attributes/key"),
        ({"key": "has space", "category": "terraform"}, "/data/attributes/key"),
        ({"key": "A-B", "category": "env"}, "/data/attributes/key"),
        ({"key": "", "category": "env"}, "/data/attributes/key"),
        ({"category": "env"}, "/data/attributes/key"),
        ({"key": "x"}, "/data/attributes/category"),
        ({"key": "x", "category": "policy-set"}, "/data/attributes/category"),
        ({"key": "x", "category": "terraform", "value": 5}, "/data/attributes/value"),
        ({"key": "x", "category": "terraform", "hcl": "yes"}, "/data/attributes/hcl"),
        ({"key": "x", "category": "terraform", "sensitive": 1}, "/data/attributes/sensitive"),
        (
            {"key": "x", "category": "terraform", "value": "v" * (MAX_VALUE_BYTES + 1)},
            "/data/attributes/value",
        ),
        (
            {"key": "x", "category": "terraform", "value": "é" * (MAX_VALUE_BYTES // 2 + 1)},
            "/data/attributes/value",
        ),
        ({"key": "x", "category": "terraform", "description": "d" * 513}, None),
    ],
)
async def test_invalid_variables_are_refused_and_change_nothing(
    any_app: InProcessCairn, attributes: dict[str, Any], pointer: str | None
) -> None:
    async with any_app.client(any_app.admin_token) as c:
        ws = await organization_and_workspace(c)
        body = {"data": {"type": "vars", "attributes": attributes}}
        err = error(await c.post(f"/api/v2/workspaces/{ws.id}/vars", json=body), 422)
        assert err["source"]["pointer"] == (pointer or "/data/attributes/description")
        assert document(await c.get(f"/api/v2/workspaces/{ws.id}/vars"), 200)["data"] == []


async def test_keys_are_unique_per_category_and_limits_hold(
    any_app: InProcessCairn, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with any_app.client(any_app.admin_token) as c:
        ws = await organization_and_workspace(c)
        await create(c, ws, "zone", "a")
        taken = error(await c.post(f"/api/v2/workspaces/{ws.id}/vars", json=var_body("zone")), 422)
        assert "already been taken" in taken["detail"]
        await create(c, ws, "zone", "b", "env")  # the other category: its own name
        monkeypatch.setattr(variables_service, "MAX_PER_WORKSPACE", 2)
        full = error(await c.post(f"/api/v2/workspaces/{ws.id}/vars", json=var_body("z2")), 422)
        assert "already has 2 variables" in full["detail"]
        listed = document(await c.get(f"/api/v2/workspaces/{ws.id}/vars"), 200)["data"]
        assert len(listed) == 2
        wrong_id = {"data": {"type": "vars", "id": "var-other", "attributes": {"value": "x"}}}
        one = f"/api/v2/workspaces/{ws.id}/vars/{listed[0]['id']}"
        assert error(await c.patch(one, json=wrong_id), 422)["source"] == {"pointer": "/data/id"}
        wrong_type = {"data": {"type": "workspaces", "attributes": {"value": "x"}}}
        assert error(await c.patch(one, json=wrong_type), 422)["source"] == {
            "pointer": "/data/type"
        }
        assert job_values(any_app, ws.id) == {"zone": "a", "env:zone": "b"}


async def test_a_variable_is_reached_only_through_its_own_workspace(
    any_app: InProcessCairn,
) -> None:
    async with any_app.client(any_app.admin_token) as c:
        ws = await organization_and_workspace(c)
        other = await create_workspace(c, ws.org)
        made = await create(c, ws, "x", "1")
        elsewhere = f"/api/v2/workspaces/{other.id}/vars/{made['id']}"
        assert (await c.get(elsewhere)).status_code == 404
        assert (await c.patch(elsewhere, json=var_body("y"))).status_code == 404
        assert (await c.delete(elsewhere)).status_code == 404
        assert (await c.get("/api/v2/workspaces/ws-nothere/vars")).status_code == 404
        # Deleting the workspace deletes its variables.
        assert (await c.delete(f"/api/v2/workspaces/{ws.id}")).status_code == 204
        assert (await c.get(f"/api/v2/vars/{made['id']}")).status_code == 404


async def test_access_read_write_and_hidden(app: InProcessCairn, admin: httpx.AsyncClient) -> None:
    org = await create_organization(admin)
    shared = await create_workspace(admin, org, "app-web")
    hidden = await create_workspace(admin, org, "secret")
    no_vars = await create_workspace(admin, org, "ops-a")
    made = await create(admin, shared, "x", "1")
    hidden_var = await create(admin, hidden, "y", "2")
    reader = await make_user(admin, "reader")
    writer = await make_user(admin, "writer")
    role = {"name": "runs-only", "permissions": ["workspace:read", "run:plan"]}
    document(await admin.post(f"/api/cairn/v1/organizations/{org}/roles", json=role), 201)
    for grant in (
        {"role": "read", "workspaces": "app-*", "user": reader.username},
        {"role": "runs-only", "workspaces": "ops-*", "user": reader.username},
        {"role": "write", "workspaces": "app-*", "user": writer.username},
    ):
        document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)
    one = f"/api/v2/workspaces/{shared.id}/vars/{made['id']}"

    async with app.client(reader.token) as person:
        # read: variables:read, not variables:write
        assert (
            len(document(await person.get(f"/api/v2/workspaces/{shared.id}/vars"), 200)["data"])
            == 1
        )
        assert document(await person.get(one), 200)["data"]["attributes"]["value"] == "1"
        assert (
            await person.post(f"/api/v2/workspaces/{shared.id}/vars", json=var_body("z"))
        ).status_code == 403
        assert (await person.patch(one, json=var_body("x", "2"))).status_code == 403
        assert (await person.delete(one)).status_code == 403
        # a workspace it reads but whose variables it may not: 403; one it cannot read: 404
        assert (await person.get(f"/api/v2/workspaces/{no_vars.id}/vars")).status_code == 403
        assert (await person.get(f"/api/v2/workspaces/{hidden.id}/vars")).status_code == 404
        # Authorization comes before validation: a bad key tells nothing of a hidden workspace.
        bad_key = var_body("1bad")
        assert (
            await person.post(f"/api/v2/workspaces/{hidden.id}/vars", json=bad_key)
        ).status_code == 404
        assert (
            await person.post(f"/api/v2/workspaces/{shared.id}/vars", json=bad_key)
        ).status_code == 403
        hidden_one = await person.get(f"/api/v2/vars/{hidden_var['id']}")
        assert hidden_one.status_code == 404 and "variable" in hidden_one.text
        assert (await person.delete(f"/api/v2/vars/{hidden_var['id']}")).status_code == 404

    async with app.client(writer.token) as person:
        changed = await person.patch(one, json={"data": {"attributes": {"value": "3"}}})
        assert document(changed, 200)["data"]["attributes"]["value"] == "3"
        await create(person, shared, "w", "4")
        assert (
            await person.post(f"/api/v2/workspaces/{hidden.id}/vars", json=var_body("z"))
        ).status_code == 404
    assert job_values(app, shared.id) == {"w": "4", "x": "3"}
    assert job_values(app, hidden.id) == {"y": "2"}


async def test_variables_permissions_show_on_the_workspace(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    ws = await create_workspace(admin, org, "app-x")
    reader = await make_user(admin, "reader")
    grant = {"role": "read", "workspaces": "app-*", "user": reader.username}
    document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)
    async with app.client(reader.token) as person:
        perms = document(await person.get(f"/api/v2/workspaces/{ws.id}"), 200)["data"][
            "attributes"
        ]["permissions"]
    assert perms["can-read-variable"] is True and perms["can-update-variable"] is False


async def test_a_body_over_the_limit_is_413(any_app: InProcessCairn) -> None:
    async with any_app.client(any_app.admin_token) as c:
        ws = await organization_and_workspace(c)
        # 6 bytes a character in JSON: beyond what the largest value needs, with 64 KiB to spare
        huge = var_body("x", "\x01" * (MAX_VALUE_BYTES + 16 * 1024))
        response = await c.post(f"/api/v2/workspaces/{ws.id}/vars", json=huge)
        assert error(response, 413)["status"] == "413"
        assert document(await c.get(f"/api/v2/workspaces/{ws.id}/vars"), 200)["data"] == []
        # The largest value, however escaped, fits the body limit and is stored.
        largest = var_body("x", "\x01" * MAX_VALUE_BYTES)
        made = document(await c.post(f"/api/v2/workspaces/{ws.id}/vars", json=largest), 201)
        assert made["data"]["attributes"]["value"] == "\x01" * MAX_VALUE_BYTES
