"""TFE API handlers for workspaces, their locks and tags."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.errors import BadRequest, Invalid
from cairn.organizations.service import (
    check_execution_mode,
    check_speculative_plan_credentials,
)
from cairn.paging import Page
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    Includes,
    JsonApiResponse,
    loader_by_id,
    page_from,
    pagination_meta,
    parse_json,
    parse_resource_list,
    query,
)
from cairn.workspaces import wire
from cairn.workspaces.model import Tag
from cairn.workspaces.service import VcsRepoChange, WorkspaceSettings
from cairn.workspaces.store import SORTS, ListFilter, WorkspaceView


class Workspaces(Protocol):
    """What the handlers need of ``WorkspaceService``."""

    def create(
        self, caller: Subject, org_name: str, change: WorkspaceSettings
    ) -> WorkspaceView: ...
    def search(
        self, caller: Subject, org_name: str, flt: ListFilter, page: Page
    ) -> tuple[list[WorkspaceView], int]: ...
    def resolve(self, caller: Subject, org_name: str | None, name_or_id: str) -> str: ...
    def get(self, caller: Subject, ws_id: str) -> WorkspaceView: ...
    def get_by_name(self, caller: Subject, org_name: str, name: str) -> WorkspaceView: ...
    def update(self, caller: Subject, ws_id: str, change: WorkspaceSettings) -> WorkspaceView: ...
    def delete(self, caller: Subject, ws_id: str, *, safe: bool) -> None: ...


class Locks(Protocol):
    """What the handlers need of ``LockService``."""

    def lock(self, caller: Subject, ws_id: str, reason: str, source: str) -> WorkspaceView: ...
    def unlock(self, caller: Subject, ws_id: str, source: str) -> WorkspaceView: ...
    def force_unlock(self, caller: Subject, ws_id: str, source: str) -> WorkspaceView: ...


class Tags(Protocol):
    """What the handlers need of ``TagService``."""

    def add_tags(self, caller: Subject, ws_id: str, names: list[str]) -> None: ...
    def remove_tags(
        self, caller: Subject, ws_id: str, names: list[str], tag_ids: list[str]
    ) -> None: ...
    def workspace_tags(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[Tag], int]: ...
    def organization_tags(
        self, caller: Subject, org_name: str, page: Page, q: str | None
    ) -> tuple[list[tuple[Tag, int]], int]: ...
    def delete_organization_tags(
        self, caller: Subject, org_name: str, tag_ids: list[str]
    ) -> None: ...


def _split(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").split(",") if t.strip()]


def _settings(doc: Document, *, creating: bool) -> WorkspaceSettings:
    mode = doc.string("execution-mode")
    if mode is not None:
        check_execution_mode(mode, "/data/attributes/execution-mode")
    elif (ops := doc.boolean("operations")) is not None:
        mode = "remote" if ops else "local"
    vcs = _vcs_repo(doc, creating=creating)
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
    pool = doc.string("agent-pool-id", max_len=32)
    if pool is None and "agent-pool-id" in doc.attributes:
        pool = ""  # an explicit null clears the pool
    spc = doc.string("speculative-plan-credentials", max_len=24)
    if spc is not None:
        check_speculative_plan_credentials(spc, "/data/attributes/speculative-plan-credentials")
    elif "speculative-plan-credentials" in doc.attributes:
        spc = ""  # an explicit null: the organization's default again
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
        agent_pool_id=pool,
        speculative_plan_credentials=spc,
        project_id=doc.relationship_id("project", "projects"),
        tags=tags,
        vcs_repo=vcs,
        file_triggers_enabled=doc.boolean("file-triggers-enabled"),
        trigger_prefixes=_triggers(doc, "trigger-prefixes"),
        trigger_patterns=_triggers(doc, "trigger-patterns"),
    )


MAX_TRIGGERS = 100
MAX_TRIGGER_LEN = 500
MAX_TAGS_REGEX = 255
_VCS = "/data/attributes/vcs-repo"
_VCS_FIELDS = (
    "identifier",
    "branch",
    "ingress-submodules",
    "oauth-token-id",
    "github-app-installation-id",
    "tags-regex",
)
# What HCP Terraform renders and pytfe's VCSRepo echoes back on update: accepted, ignored.
_VCS_READ_ONLY = ("display-identifier", "repository-http-url", "service-provider", "webhook-url")


def _triggers(doc: Document, name: str) -> list[str] | None:
    values = doc.string_list(name, max_items=MAX_TRIGGERS)
    if values is None:
        return None
    for i, v in enumerate(values):
        if not v or len(v) > MAX_TRIGGER_LEN:
            raise Invalid(
                f"each item of '{name}' must be a non-empty path of at most {MAX_TRIGGER_LEN} "
                "characters",
                pointer=f"/data/attributes/{name}/{i}",
            )
    return values


def _vcs_string(vcs: dict[str, Any], name: str, max_len: int) -> str | None:
    value = vcs.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise Invalid(
            f"vcs-repo.{name} must be a string of at most {max_len} characters",
            pointer=f"{_VCS}/{name}",
        )
    return value


def _vcs_repo(doc: Document, *, creating: bool) -> VcsRepoChange | None:
    """``vcs-repo``: absent or ``{}`` (pytfe sends it when unset) → no change; null →
    disconnect; an object → set (on create: identifier and a token or installation needed)."""
    if "vcs-repo" not in doc.attributes:
        return None
    vcs = doc.attributes["vcs-repo"]
    if vcs is None:
        return None if creating else VcsRepoChange(remove=True)
    if not isinstance(vcs, dict):
        raise Invalid("vcs-repo must be an object, or null to disconnect", pointer=_VCS)
    if not vcs:
        return None
    unknown = sorted(set(vcs) - set(_VCS_FIELDS) - set(_VCS_READ_ONLY))
    if unknown:
        raise Invalid(
            f"vcs-repo has unknown member(s) {', '.join(unknown)}; it takes "
            f"{', '.join(_VCS_FIELDS)}",
            pointer=f"{_VCS}/{unknown[0]}",
        )
    sub = vcs.get("ingress-submodules")
    if sub is not None and not isinstance(sub, bool):
        raise Invalid(
            "vcs-repo.ingress-submodules must be true or false",
            pointer=f"{_VCS}/ingress-submodules",
        )
    if sub:
        raise Invalid(
            "vcs-repo.ingress-submodules: cairn does not fetch Git submodules yet (it builds the "
            "configuration from the forge's archive of the commit, which leaves them out); "
            "vendor the modules into the repository or use module sources, and set it to false",
            pointer=f"{_VCS}/ingress-submodules",
        )
    change = VcsRepoChange(
        identifier=_vcs_string(vcs, "identifier", 255),
        branch=_vcs_string(vcs, "branch", 255),
        ingress_submodules=sub,
        oauth_token_id=_vcs_string(vcs, "oauth-token-id", 32) or None,
        github_app_installation_id=_vcs_string(vcs, "github-app-installation-id", 32) or None,
        tags_regex=_vcs_string(vcs, "tags-regex", MAX_TAGS_REGEX),
    )
    if change.oauth_token_id and change.github_app_installation_id:
        raise Invalid(
            "vcs-repo takes oauth-token-id or github-app-installation-id, not both",
            pointer=f"{_VCS}/github-app-installation-id",
        )
    if change.tags_regex:
        try:
            re.compile(change.tags_regex)
        except re.error as err:
            raise Invalid(
                f"vcs-repo.tags-regex is not a valid regular expression: {err}",
                pointer=f"{_VCS}/tags-regex",
            ) from None
    if creating and not change.identifier:
        raise Invalid(
            "vcs-repo.identifier is required: the repository, like group/project or owner/repo",
            pointer=f"{_VCS}/identifier",
        )
    if creating and not (change.oauth_token_id or change.github_app_installation_id):
        raise Invalid(
            "vcs-repo needs oauth-token-id (a VCS connection's token) or "
            "github-app-installation-id",
            pointer=f"{_VCS}/oauth-token-id",
        )
    return change


def _lock_reason(raw: bytes) -> str:
    """The lock's reason from an optional body; a body that is not a JSON:API document
    (an array, a non-object ``data`` or ``attributes``) is refused before anything is locked."""
    if not raw.strip():
        return ""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", pointer="/")
    data = body.get("data")
    if data is not None and not isinstance(data, dict):
        raise BadRequest("'data' must be an object", pointer="/data")
    attrs = data.get("attributes") if isinstance(data, dict) else None
    if attrs is not None and not isinstance(attrs, dict):
        raise Invalid("'data.attributes' must be an object", pointer="/data/attributes")
    value = attrs.get("reason") if isinstance(attrs, dict) else None
    if value is not None and not isinstance(value, str):
        raise Invalid("attribute 'reason' must be a string", pointer="/data/attributes/reason")
    return value or ""


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


class Handlers:
    def __init__(
        self,
        workspaces: Workspaces,
        locks: Locks,
        tags: Tags,
        count_resources: Callable[[str], None],
        public_url: str = "",
    ) -> None:
        self.public_url = public_url  # webhook URLs in vcs-repo
        self.workspaces = workspaces
        self.locks = locks
        self.tags = tags
        self.count_resources = count_resources

    def create_workspace(self, call: Call) -> Response:
        doc = call.document("workspaces")
        change = _settings(doc, creating=True)
        view = self.workspaces.create(call.caller, call.param("org"), change)
        return JsonApiResponse({"data": wire.workspace(view, self.public_url)}, status_code=201)

    def list_workspaces(self, call: Call) -> Response:
        r = call.request
        page = page_from(r)
        sort = query(r, "sort") or "name"
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}", parameter="sort")
        flt = ListFilter(
            name=query(r, "search[name]"),
            wildcard=query(r, "search[wildcard-name]"),
            tags=_split(query(r, "search[tags]")),
            exclude_tags=_split(query(r, "search[exclude-tags]")),
            project_id=query(r, "filter[project][id]"),
            sort=sort,
        )
        views, total = self.workspaces.search(call.caller, call.param("org"), flt, page)
        return call.respond(
            [wire.workspace(v, self.public_url) for v in views],
            resource_type="workspaces",
            meta=pagination_meta(page, total),
        )

    def _ws_id(self, call: Call) -> str:
        if "org" in call.request.path_params:
            return self.workspaces.resolve(call.caller, call.param("org"), call.param("name"))
        return call.param("id")

    def show_workspace(self, call: Call) -> Response:
        if "org" in call.request.path_params:
            view = self.workspaces.get_by_name(call.caller, call.param("org"), call.param("name"))
        else:
            view = self.workspaces.get(call.caller, call.param("id"))
        return call.respond(wire.workspace(view, self.public_url))

    def update_workspace(self, call: Call) -> Response:
        doc = call.document("workspaces")
        ws_id = self._ws_id(call)
        view = self.workspaces.update(call.caller, ws_id, _settings(doc, creating=False))
        return JsonApiResponse({"data": wire.workspace(view, self.public_url)})

    def delete_workspace(self, call: Call) -> Response:
        self.workspaces.delete(call.caller, self._ws_id(call), safe=False)
        return no_content()

    def safe_delete_workspace(self, call: Call) -> Response:
        ws_id = self._ws_id(call)
        # The decision needs the resource count of the current state: count it now if pending.
        self.count_resources(ws_id)
        self.workspaces.delete(call.caller, ws_id, safe=True)
        return no_content()

    def lock(self, call: Call) -> Response:
        reason = _lock_reason(call.raw)
        view = self.locks.lock(call.caller, call.param("id"), reason, call.source)
        return JsonApiResponse({"data": wire.workspace(view, self.public_url)})

    def unlock(self, call: Call) -> Response:
        view = self.locks.unlock(call.caller, call.param("id"), call.source)
        return JsonApiResponse({"data": wire.workspace(view, self.public_url)})

    def force_unlock(self, call: Call) -> Response:
        view = self.locks.force_unlock(call.caller, call.param("id"), call.source)
        return JsonApiResponse({"data": wire.workspace(view, self.public_url)})

    def list_workspace_tags(self, call: Call) -> Response:
        page = page_from(call.request)
        tags, total = self.tags.workspace_tags(call.caller, call.param("id"), page)
        return JsonApiResponse(
            {"data": [wire.tag(t) for t in tags], "meta": pagination_meta(page, total)}
        )

    def add_workspace_tags(self, call: Call) -> Response:
        names, ids = _tag_items(call.raw)
        if ids:
            raise Invalid("tags are added by name: send attributes.name", pointer="/data")
        self.tags.add_tags(call.caller, call.param("id"), names)
        return no_content()

    def remove_workspace_tags(self, call: Call) -> Response:
        names, ids = _tag_items(call.raw)
        self.tags.remove_tags(call.caller, call.param("id"), names, ids)
        return no_content()

    def list_organization_tags(self, call: Call) -> Response:
        page = page_from(call.request)
        rows, total = self.tags.organization_tags(
            call.caller, call.param("org"), page, query(call.request, "q")
        )
        return JsonApiResponse(
            {"data": [wire.tag(t, n) for t, n in rows], "meta": pagination_meta(page, total)}
        )

    def delete_organization_tags(self, call: Call) -> Response:
        items = parse_resource_list(call.raw, "tags")
        ids = [i["id"] for i in items if isinstance(i.get("id"), str)]
        self.tags.delete_organization_tags(call.caller, call.param("org"), ids)
        return no_content()


def routes(
    workspaces: Workspaces,
    locks: Locks,
    tags: Tags,
    *,
    count_resources: Callable[[str], None],
    public_url: str = "",
) -> list[Route]:
    """``count_resources(ws_id)``: counts the current state's resources now if that is still
    pending (state sits above workspaces: it is passed in, not imported)."""
    h = Handlers(workspaces, locks, tags, count_resources, public_url)
    by_name = "/organizations/{org}/workspaces/{name}"
    return [
        route("/organizations/{org}/workspaces", h.list_workspaces, ["GET"]),
        route("/organizations/{org}/workspaces", h.create_workspace, ["POST"]),
        route(by_name, h.show_workspace, ["GET"]),
        route(by_name, h.update_workspace, ["PATCH"]),
        route(by_name, h.delete_workspace, ["DELETE"]),
        route(by_name + "/actions/safe-delete", h.safe_delete_workspace, ["POST"]),
        route("/workspaces/{id}", h.show_workspace, ["GET"]),
        route("/workspaces/{id}", h.update_workspace, ["PATCH"]),
        route("/workspaces/{id}", h.delete_workspace, ["DELETE"]),
        route("/workspaces/{id}/actions/safe-delete", h.safe_delete_workspace, ["POST"]),
        route("/workspaces/{id}/actions/lock", h.lock, ["POST"]),
        route("/workspaces/{id}/actions/unlock", h.unlock, ["POST"]),
        route("/workspaces/{id}/actions/force-unlock", h.force_unlock, ["POST"]),
        route("/workspaces/{id}/relationships/tags", h.list_workspace_tags, ["GET"]),
        route("/workspaces/{id}/relationships/tags", h.add_workspace_tags, ["POST"]),
        route("/workspaces/{id}/relationships/tags", h.remove_workspace_tags, ["DELETE"]),
        route("/organizations/{org}/tags", h.list_organization_tags, ["GET"]),
        route("/organizations/{org}/tags", h.delete_organization_tags, ["DELETE"]),
    ]


def offer_includes(includes: Includes, workspaces: Workspaces, public_url: str = "") -> None:
    """What ``include=`` can name on workspaces (HCP Terraform's list; runs, configuration
    versions, readmes and tag bindings cairn does not have yet are accepted and include
    nothing, their relationships being empty), and how workspaces are loaded for
    ``included``. The state offers the state versions and outputs (``state.api``)."""
    includes.offer("workspaces", *wire.INCLUDABLE)
    includes.loader(
        "workspaces",
        loader_by_id(
            lambda caller, ws_id: wire.workspace(workspaces.get(caller, ws_id), public_url)
        ),
    )
