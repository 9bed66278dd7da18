"""TFE API handlers for workspaces, their locks and tags."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from cairn.errors import BadRequest, Invalid
from cairn.organizations.service import check_execution_mode
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    JsonApiResponse,
    page_from,
    pagination_meta,
    parse_json,
    parse_resource_list,
    query,
)
from cairn.workspaces import wire
from cairn.workspaces.service import _SORTS, ListFilter, WorkspaceSettings


def _split(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").split(",") if t.strip()]


def _settings(doc: Document, *, creating: bool) -> WorkspaceSettings:
    mode = doc.string("execution-mode")
    if mode is not None:
        check_execution_mode(mode, "/data/attributes/execution-mode")
    elif (ops := doc.boolean("operations")) is not None:
        mode = "remote" if ops else "local"
    vcs = doc.attributes.get("vcs-repo")
    if vcs not in (None, {}):  # pytfe always sends {} when no VCS repo is wanted
        raise Invalid(
            "VCS-connected workspaces are not available in this cairn version yet",
            pointer="/data/attributes/vcs-repo",
        )
    tv = doc.string("terraform-version", max_len=32)
    if tv is not None and tv != "latest" and not all(c.isalnum() or c in ".-~>=<, " for c in tv):
        raise Invalid(
            f"terraform-version {tv!r} is not a version",
            pointer="/data/attributes/terraform-version",
        )
    tags = list(doc.string_list("tag-names") or [])
    rel = doc.relationships.get("tags")
    if rel is not None:
        items = rel.get("data") if isinstance(rel, dict) else None
        if not isinstance(items, list):
            raise Invalid(
                "relationship 'tags' must hold a list", pointer="/data/relationships/tags"
            )
        for i, item in enumerate(items):
            name = (item.get("attributes") or {}).get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise Invalid(
                    "each tag needs attributes.name", pointer=f"/data/relationships/tags/data/{i}"
                )
            tags.append(name)
    return WorkspaceSettings(
        name=doc.string("name", required=creating, max_len=90),
        description=doc.string("description", max_len=1000),
        execution_mode=mode,
        terraform_version=tv,
        auto_apply=doc.boolean("auto-apply"),
        working_directory=doc.string("working-directory", max_len=500),
        allow_destroy_plan=doc.boolean("allow-destroy-plan"),
        global_remote_state=doc.boolean("global-remote-state"),
        speculative_enabled=doc.boolean("speculative-enabled"),
        queue_all_runs=doc.boolean("queue-all-runs"),
        project_id=doc.relationship_id("project", "projects"),
        tags=tags,
    )


def create_workspace(call: Call) -> Response:
    doc = call.document("workspaces")
    view = call.ctx.workspaces.create(call.caller, call.param("org"), _settings(doc, creating=True))
    return JsonApiResponse({"data": wire.workspace(view)}, status_code=201)


def list_workspaces(call: Call) -> Response:
    r = call.request
    page = page_from(r)
    sort = query(r, "sort") or "name"
    if sort not in _SORTS:
        raise BadRequest(f"sort must be one of {', '.join(_SORTS)}", parameter="sort")
    flt = ListFilter(
        name=query(r, "search[name]"),
        wildcard=query(r, "search[wildcard-name]"),
        tags=_split(query(r, "search[tags]")),
        exclude_tags=_split(query(r, "search[exclude-tags]")),
        project_id=query(r, "filter[project][id]"),
        sort=sort,
    )
    views, total = call.ctx.workspaces.search(call.caller, call.param("org"), flt, page)
    return JsonApiResponse(
        {"data": [wire.workspace(v) for v in views], "meta": pagination_meta(page, total)}
    )


def _ws_id(call: Call) -> str:
    if "org" in call.request.path_params:
        return call.ctx.workspaces.resolve(call.caller, call.param("org"), call.param("name"))
    return call.param("id")


def show_workspace(call: Call) -> Response:
    if "org" in call.request.path_params:
        view = call.ctx.workspaces.get_by_name(call.caller, call.param("org"), call.param("name"))
    else:
        view = call.ctx.workspaces.get(call.caller, call.param("id"))
    return JsonApiResponse({"data": wire.workspace(view)})


def update_workspace(call: Call) -> Response:
    doc = call.document("workspaces")
    ws_id = _ws_id(call)
    view = call.ctx.workspaces.update(call.caller, ws_id, _settings(doc, creating=False))
    return JsonApiResponse({"data": wire.workspace(view)})


def delete_workspace(call: Call) -> Response:
    ws_id = _ws_id(call)
    call.ctx.workspaces.delete(call.caller, ws_id, safe=False)
    return no_content()


def safe_delete_workspace(call: Call) -> Response:
    ws_id = _ws_id(call)
    # The decision needs the resource count of the current state: count it now if pending.
    call.ctx.states.process_current(ws_id)
    call.ctx.workspaces.delete(call.caller, ws_id, safe=True)
    return no_content()


def lock(call: Call) -> Response:
    raw = call.raw
    reason = ""
    if raw.strip():
        body = parse_json(raw)
        data = body.get("data") if isinstance(body, dict) else None
        attrs = data.get("attributes") if isinstance(data, dict) else None
        value = attrs.get("reason") if isinstance(attrs, dict) else None
        if value is not None and not isinstance(value, str):
            raise Invalid("attribute 'reason' must be a string", pointer="/data/attributes/reason")
        reason = value or ""
    view = call.ctx.workspaces.lock(call.caller, call.param("id"), reason)
    return JsonApiResponse({"data": wire.workspace(view)})


def unlock(call: Call) -> Response:
    view = call.ctx.workspaces.unlock(call.caller, call.param("id"))
    return JsonApiResponse({"data": wire.workspace(view)})


def force_unlock(call: Call) -> Response:
    view = call.ctx.workspaces.force_unlock(call.caller, call.param("id"))
    return JsonApiResponse({"data": wire.workspace(view)})


def _tag_items(raw: bytes) -> tuple[list[str], list[str]]:
    names: list[str] = []
    ids: list[str] = []
    for i, item in enumerate(parse_resource_list(raw, "tags")):
        name = (item.get("attributes") or {}).get("name")
        if isinstance(name, str):
            names.append(name)
        elif isinstance(item.get("id"), str):
            ids.append(item["id"])
        else:
            raise Invalid("each tag needs attributes.name or an id", pointer=f"/data/{i}")
    return names, ids


def list_workspace_tags(call: Call) -> Response:
    page = page_from(call.request)
    tags = call.ctx.workspaces.workspace_tags(call.caller, call.param("id"))
    chosen = tags[page.offset : page.offset + page.size]
    return JsonApiResponse(
        {"data": [wire.tag(t) for t in chosen], "meta": pagination_meta(page, len(tags))}
    )


def add_workspace_tags(call: Call) -> Response:
    names, ids = _tag_items(call.raw)
    if ids:
        raise Invalid("tags are added by name: send attributes.name", pointer="/data")
    call.ctx.workspaces.add_tags(call.caller, call.param("id"), names)
    return no_content()


def remove_workspace_tags(call: Call) -> Response:
    names, ids = _tag_items(call.raw)
    call.ctx.workspaces.remove_tags(call.caller, call.param("id"), names, ids)
    return no_content()


def list_organization_tags(call: Call) -> Response:
    page = page_from(call.request)
    rows, total = call.ctx.workspaces.organization_tags(
        call.caller,
        call.param("org"),
        page,
        query(call.request, "q"),
    )
    return JsonApiResponse(
        {"data": [wire.tag(t, n) for t, n in rows], "meta": pagination_meta(page, total)}
    )


def delete_organization_tags(call: Call) -> Response:
    items = parse_resource_list(call.raw, "tags")
    ids = [i["id"] for i in items if isinstance(i.get("id"), str)]
    call.ctx.workspaces.delete_organization_tags(call.caller, call.param("org"), ids)
    return no_content()


def routes() -> list[Route]:
    by_name = "/organizations/{org}/workspaces/{name}"
    return [
        route("/organizations/{org}/workspaces", list_workspaces, ["GET"]),
        route("/organizations/{org}/workspaces", create_workspace, ["POST"]),
        route(by_name, show_workspace, ["GET"]),
        route(by_name, update_workspace, ["PATCH"]),
        route(by_name, delete_workspace, ["DELETE"]),
        route(by_name + "/actions/safe-delete", safe_delete_workspace, ["POST"]),
        route("/workspaces/{id}", show_workspace, ["GET"]),
        route("/workspaces/{id}", update_workspace, ["PATCH"]),
        route("/workspaces/{id}", delete_workspace, ["DELETE"]),
        route("/workspaces/{id}/actions/safe-delete", safe_delete_workspace, ["POST"]),
        route("/workspaces/{id}/actions/lock", lock, ["POST"]),
        route("/workspaces/{id}/actions/unlock", unlock, ["POST"]),
        route("/workspaces/{id}/actions/force-unlock", force_unlock, ["POST"]),
        route("/workspaces/{id}/relationships/tags", list_workspace_tags, ["GET"]),
        route("/workspaces/{id}/relationships/tags", add_workspace_tags, ["POST"]),
        route("/workspaces/{id}/relationships/tags", remove_workspace_tags, ["DELETE"]),
        route("/organizations/{org}/tags", list_organization_tags, ["GET"]),
        route("/organizations/{org}/tags", delete_organization_tags, ["DELETE"]),
    ]
