"""TFE API handlers for VCS connections (``oauth-clients``), their tokens and GitHub App
installations. Paths and documents follow HCP Terraform's pages and what pytfe 1.5.0 and go-tfe
send (tokens are listed both under their client and under the organization).

Creating a connection with ``oauth-token-string`` asks the forge whom the token belongs to
before anything is stored, outside any transaction: the route is a ``stream`` route (the
caller is authenticated in one job) whose handler makes its own hops — checks (read-only),
then the forge, then the write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

from starlette.responses import Response
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.errors import Invalid, Unavailable
from cairn.paging import Page
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Document,
    JsonApiResponse,
    page_from,
    pagination_meta,
    parse_document,
    parse_resource_list,
)
from cairn.vcs import wire
from cairn.vcs.github_app import GitHubApp, Installation
from cairn.vcs.model import TOKEN_KINDS
from cairn.vcs.oauth import ForgeUnreachable, TokenEndpointError
from cairn.vcs.service import (
    MAX_NAME,
    MAX_PEM,
    MAX_SECRET,
    MAX_URL,
    Checked,
    ClientSpec,
    ClientView,
    InstallationsOf,
    TokenCheck,
    TokenView,
    check_url,
)

T = TypeVar("T")
_BODY_LIMIT: Final = 64 * 1024
_NO_STORE: Final = {"Cache-Control": "no-store"}


class Connections(Protocol):
    """What the handlers need of ``VcsConnections``."""

    public_url: str
    check_token: TokenCheck
    list_installations: InstallationsOf

    def list_clients(
        self, caller: Subject, org_name: str, page: Page
    ) -> tuple[list[ClientView], int]: ...
    def get_client(self, caller: Subject, client_id: str) -> ClientView: ...
    def check_create(self, caller: Subject, org_name: str, spec: ClientSpec) -> Checked: ...
    def create_client(
        self,
        caller: Subject,
        org_name: str,
        spec: ClientSpec,
        *,
        validated: tuple[str, Any] | None = None,
        installations: list[Installation] | None = None,
        source: str = "",
    ) -> ClientView: ...
    def update_client(
        self, caller: Subject, client_id: str, spec: ClientSpec, *, source: str = ""
    ) -> ClientView: ...
    def delete_client(self, caller: Subject, client_id: str, *, source: str = "") -> None: ...
    def change_projects(
        self,
        caller: Subject,
        client_id: str,
        project_ids: list[str],
        *,
        add: bool,
        source: str = "",
    ) -> None: ...
    def list_tokens(
        self, caller: Subject, client_id: str, page: Page
    ) -> tuple[list[TokenView], int]: ...
    def list_org_tokens(
        self, caller: Subject, org_name: str, page: Page
    ) -> tuple[list[TokenView], int]: ...
    def get_token(self, caller: Subject, token_id: str) -> TokenView: ...
    def update_token(
        self, caller: Subject, token_id: str, ssh_key: str | None, *, source: str = ""
    ) -> TokenView: ...
    def delete_token(self, caller: Subject, token_id: str, *, source: str = "") -> None: ...
    def installations(self, caller: Subject, page: Page) -> tuple[list[TokenView], int]: ...
    def installation(self, caller: Subject, ghain_id: str) -> TokenView: ...
    def github_app(self, caller: Subject, client_id: str) -> GitHubApp: ...
    def sync_installations(
        self,
        caller: Subject,
        client_id: str,
        installations: list[Installation],
        *,
        source: str = "",
    ) -> list[TokenView]: ...


def _url(doc: Document, name: str) -> str | None:
    value = doc.string(name, max_len=MAX_URL)
    return check_url(value, name) if value is not None else None


def _project_ids(doc: Document) -> list[str] | None:
    rel = doc.relationships.get("projects")
    if rel is None:
        return None
    items = rel.get("data") if isinstance(rel, dict) else None
    pointer = "/data/relationships/projects"
    if not isinstance(items, list):
        raise Invalid("relationship 'projects' must hold a list in 'data'", pointer=pointer)
    return _ids(items, pointer + "/data")


def _ids(items: list[Any], pointer: str) -> list[str]:
    found: list[str] = []
    if len(items) > 1000:
        raise Invalid("at most 1000 projects per request", pointer=pointer)
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or item.get("type") != "projects"
            or not isinstance(item.get("id"), str)
            or len(item["id"]) > 32
        ):
            raise Invalid(
                'each item must be a project: {"type": "projects", "id": "prj-…"}',
                pointer=f"{pointer}/{i}",
            )
        if item["id"] not in found:
            found.append(item["id"])
    return found


def _spec(doc: Document) -> ClientSpec:
    return ClientSpec(
        service_provider=doc.string("service-provider", max_len=64),
        name=doc.string("name", max_len=MAX_NAME),
        http_url=_url(doc, "http-url"),
        api_url=_url(doc, "api-url"),
        key=doc.string("key", max_len=MAX_NAME),
        secret=doc.string("secret", max_len=MAX_SECRET),
        token_string=doc.string("oauth-token-string", max_len=MAX_SECRET),
        app_id=doc.string("app-id", max_len=32),
        private_key=doc.string("private-key", max_len=MAX_PEM),
        webhook_secret=doc.string("webhook-secret", max_len=MAX_SECRET),
        organization_scoped=doc.boolean("organization-scoped"),
        allow_fork_plans=doc.boolean("allow-fork-plans"),
        project_ids=_project_ids(doc),
    )


async def _from_forge(call: Call, fn: Callable[[], T], pointer: str | None) -> T:
    """``fn`` (a forge call) in a worker thread, its failures as API errors."""
    try:
        return await call.run(fn)
    except ForgeUnreachable as err:
        raise Unavailable(f"{err}; try again in a moment") from None
    except TokenEndpointError as err:
        raise Invalid(
            str(err), pointer=f"/data/attributes/{pointer}" if pointer else None
        ) from None


class Handlers:
    def __init__(self, vcs: Connections, clock: Clock) -> None:
        self.vcs = vcs
        self.clock = clock

    def _client(self, v: ClientView) -> dict[str, Any]:
        return wire.client(v, self.vcs.public_url)

    def list_clients(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.vcs.list_clients(call.caller, call.param("org"), page)
        return JsonApiResponse(
            {"data": [self._client(v) for v in views], "meta": pagination_meta(page, total)}
        )

    async def create_client(self, call: Call) -> Response:
        raw = b"".join([chunk async for chunk in call.stream(_BODY_LIMIT)])
        doc = parse_document(raw, wire.CLIENT_TYPE)
        spec = _spec(doc)
        org = call.param("org")
        checked = await call.run(self.vcs.check_create, call.caller, org, spec)
        validated = None
        installations: list[Installation] | None = None
        if checked.kind in TOKEN_KINDS:
            assert spec.token_string is not None
            validated = await call.run(
                self.vcs.check_token,
                checked.kind,
                spec.service_provider or "",
                spec.api_url or "",
                spec.http_url or "",
                spec.token_string,
            )
        elif checked.kind == "github_app":
            # Listing the installations proves the App ID and key before anything is stored.
            app = GitHubApp(
                app_id=spec.app_id or "",
                api_url=spec.api_url or "",
                private_key=spec.private_key or "",
            )
            installations = await _from_forge(
                call, lambda: self.vcs.list_installations(app, self.clock.now()), "private-key"
            )
        view = await call.run(
            lambda: self.vcs.create_client(
                call.caller,
                org,
                spec,
                validated=validated,
                installations=installations,
                source=call.source,
            )
        )
        return JsonApiResponse({"data": self._client(view)}, status_code=201)

    def show_client(self, call: Call) -> Response:
        return JsonApiResponse(
            {"data": self._client(self.vcs.get_client(call.caller, call.param("id")))}
        )

    def update_client(self, call: Call) -> Response:
        doc = call.document(wire.CLIENT_TYPE)
        if doc.id is not None and doc.id != call.param("id"):
            raise Invalid(
                f"'data.id' is {doc.id!r}, but the path names {call.param('id')!r}",
                pointer="/data/id",
            )
        view = self.vcs.update_client(call.caller, call.param("id"), _spec(doc), source=call.source)
        return JsonApiResponse({"data": self._client(view)})

    def delete_client(self, call: Call) -> Response:
        self.vcs.delete_client(call.caller, call.param("id"), source=call.source)
        return no_content()

    def _projects(self, call: Call, *, add: bool) -> Response:
        items = parse_resource_list(call.raw, "projects", max_items=1000)
        ids = _ids(items, "/data")
        self.vcs.change_projects(call.caller, call.param("id"), ids, add=add, source=call.source)
        return no_content()

    def add_projects(self, call: Call) -> Response:
        return self._projects(call, add=True)

    def remove_projects(self, call: Call) -> Response:
        return self._projects(call, add=False)

    async def sync_installations(self, call: Call) -> Response:
        """cairn's: re-read a GitHub App's installations from GitHub (after installing it on
        another account); answers the connection's installations."""
        client_id = call.param("id")
        app = await call.run(self.vcs.github_app, call.caller, client_id)
        found = await _from_forge(
            call, lambda: self.vcs.list_installations(app, self.clock.now()), None
        )
        views = await call.run(
            lambda: self.vcs.sync_installations(call.caller, client_id, found, source=call.source)
        )
        return JsonApiResponse({"data": [wire.installation(v) for v in views]})

    def list_client_tokens(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.vcs.list_tokens(call.caller, call.param("id"), page)
        return JsonApiResponse(
            {"data": [wire.token(v) for v in views], "meta": pagination_meta(page, total)}
        )

    def list_org_tokens(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.vcs.list_org_tokens(call.caller, call.param("org"), page)
        return JsonApiResponse(
            {"data": [wire.token(v) for v in views], "meta": pagination_meta(page, total)}
        )

    def show_token(self, call: Call) -> Response:
        return JsonApiResponse(
            {"data": wire.token(self.vcs.get_token(call.caller, call.param("id")))}
        )

    def update_token(self, call: Call) -> Response:
        doc = call.document(wire.TOKEN_TYPE)
        ssh_key = doc.string("ssh-key", max_len=MAX_PEM)
        if ssh_key is None and "ssh-key" in doc.attributes:
            ssh_key = ""  # an explicit null removes the key
        view = self.vcs.update_token(call.caller, call.param("id"), ssh_key, source=call.source)
        return JsonApiResponse({"data": wire.token(view)})

    def delete_token(self, call: Call) -> Response:
        self.vcs.delete_token(call.caller, call.param("id"), source=call.source)
        return no_content()

    def list_installations(self, call: Call) -> Response:
        page = page_from(call.request)
        views, total = self.vcs.installations(call.caller, page)
        return JsonApiResponse(
            {"data": [wire.installation(v) for v in views], "meta": pagination_meta(page, total)}
        )

    def show_installation(self, call: Call) -> Response:
        view = self.vcs.installation(call.caller, call.param("id"))
        return JsonApiResponse({"data": wire.installation(view)})


def routes(vcs: Connections, clock: Clock) -> list[Route]:
    """The TFE routes (mounted under ``/api/v2``)."""
    h = Handlers(vcs, clock)
    client = "/oauth-clients/{id}"
    return [
        route("/organizations/{org}/oauth-clients", h.list_clients, ["GET"]),
        route("/organizations/{org}/oauth-clients", h.create_client, ["POST"], executor="stream"),
        route(client, h.show_client, ["GET"]),
        route(client, h.update_client, ["PATCH"], limit=_BODY_LIMIT),
        route(client, h.delete_client, ["DELETE"]),
        route(client + "/relationships/projects", h.add_projects, ["POST"], limit=_BODY_LIMIT),
        route(client + "/relationships/projects", h.remove_projects, ["DELETE"], limit=_BODY_LIMIT),
        route(client + "/oauth-tokens", h.list_client_tokens, ["GET"]),
        route(
            client + "/actions/sync-installations",
            h.sync_installations,
            ["POST"],
            executor="stream",
        ),
        route("/organizations/{org}/oauth-tokens", h.list_org_tokens, ["GET"]),
        route("/oauth-tokens/{id}", h.show_token, ["GET"]),
        route("/oauth-tokens/{id}", h.update_token, ["PATCH"], limit=_BODY_LIMIT),
        route("/oauth-tokens/{id}", h.delete_token, ["DELETE"]),
        route("/github-app/installations", h.list_installations, ["GET"]),
        route("/github-app/installation/{id}", h.show_installation, ["GET"]),
    ]
