"""HTTP for the private module registry, which holds no modules yet (see the package).

Two surfaces, both behind API tokens and the organization's read permission:

- the TFE API (``/api/v2``): ``GET /organizations/:org/registry-modules`` (an empty page),
  ``…/registry-modules/:registry/:namespace/:name/:provider`` and its ``version`` (404),
  ``GET /registry-modules/:id`` (404);
- the module registry protocol Terraform's installer speaks (``modules.v1`` in discovery,
  ``/api/registry/v1/modules``): a namespace's module list (empty), a module's versions,
  a version and its download (404, in the protocol's error shape ``{"errors": [...]}``).
"""

from __future__ import annotations

import json
from typing import Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.authz.subject import Subject
from cairn.errors import ApiError, BadRequest, NotFound
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import JsonApiResponse, page_from, pagination_meta

PROTOCOL_PATH = "/api/registry/v1/modules"
"""Where ``modules.v1`` points (HCP Terraform's path for its private registry)."""

REGISTRIES = ("private", "public")
MAX_PROTOCOL_LIMIT = 100


class Organizations(Protocol):
    """Reading an organization, refusing (404) a caller who may not (``OrganizationService``)."""

    def get(self, caller: Subject, name: str) -> object: ...


def _no_module(namespace: str, name: str, provider: str) -> NotFound:
    return NotFound(
        f"module {namespace}/{name}/{provider} is not in this registry: cairn's private "
        "module registry holds no modules yet"
    )


def tfe_routes(orgs: Organizations) -> list[Route]:
    """The registry-modules endpoints of the TFE API; mounted under ``/api/v2``."""

    def list_modules(call: Call) -> Response:
        page = page_from(call.request)
        orgs.get(call.caller, call.param("org"))
        return JsonApiResponse({"data": [], "meta": pagination_meta(page, 0)})

    def show_module(call: Call) -> Response:
        orgs.get(call.caller, call.param("org"))
        registry = call.param("registry")
        if registry not in REGISTRIES:
            raise NotFound(f"there is no {registry!r} registry; use 'private' or 'public'")
        raise _no_module(call.param("namespace"), call.param("name"), call.param("provider"))

    def show_module_by_id(call: Call) -> Response:
        raise NotFound(f"registry module {call.param('id')!r} not found")

    base = "/organizations/{org}/registry-modules"
    module = base + "/{registry}/{namespace}/{name}/{provider}"
    return [
        route(base, list_modules, ["GET"]),
        route(module, show_module, ["GET"]),
        route(module + "/version", show_module, ["GET"]),
        route("/registry-modules/{id}", show_module_by_id, ["GET"]),
    ]


def protocol_error(err: ApiError) -> Response:
    """The module registry protocol's error shape: ``{"errors": ["…"]}``."""
    return Response(
        json.dumps({"errors": [err.detail]}),
        status_code=err.status,
        media_type="application/json",
        headers=err.headers,
    )


def _protocol_int(call: Call, name: str, default: int, maximum: int) -> int:
    value = call.request.query_params.get(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise BadRequest(f"query parameter '{name}' must be a non-negative integer")
    return min(int(value), maximum)


def protocol_routes(orgs: Organizations) -> list[Route]:
    """The module registry protocol; mounted under ``PROTOCOL_PATH``. A namespace is an
    organization's name."""

    def list_namespace(call: Call) -> Response:
        orgs.get(call.caller, call.param("namespace"))
        limit = _protocol_int(call, "limit", 15, MAX_PROTOCOL_LIMIT)
        offset = _protocol_int(call, "offset", 0, 10**9)
        body = {"meta": {"limit": limit, "current_offset": offset}, "modules": []}
        return Response(json.dumps(body), media_type="application/json")

    def missing(call: Call) -> Response:
        namespace = call.param("namespace")
        orgs.get(call.caller, namespace)
        raise _no_module(namespace, call.param("name"), call.param("provider"))

    module = "/{namespace}/{name}/{provider}"
    errors = protocol_error
    return [
        route("/{namespace}", list_namespace, ["GET"], errors=errors),
        route(module, missing, ["GET"], errors=errors),
        route(module + "/versions", missing, ["GET"], errors=errors),
        route(module + "/{version}", missing, ["GET"], errors=errors),
        route(module + "/{version}/download", missing, ["GET"], errors=errors),
    ]
