"""A workspace's resources (``GET /workspaces/:id/resources``), read from its current state.

HCP Terraform lists one entry per resource instance of the current state: ``address``
(``module.net.aws_subnet.a[0]``), ``name``, ``module`` (``root`` or ``module.net``),
``provider`` (``hashicorp/aws``), ``provider-type`` (the resource type), ``name-index`` (the
instance key as text, or null) and the state version that last changed it. cairn keeps no
per-resource history, so ``modified-by-state-version-id`` and the timestamps are those of the
current state version.

The state is streamed from its blob with ijson's prefixed events: one resource instance's
few fields are held at a time, never its attributes, whatever the state's size (the state's
shape and nesting were checked when it was stored). Data sources are not listed. Format 3
states (Terraform ≤ 0.11) list their managed resources by address too; their ``provider``
is the one the state names (``provider.aws``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import ijson
from starlette.responses import Response
from starlette.routing import Route

from cairn import authz
from cairn.authz.permissions import STATE_READ
from cairn.authz.subject import Subject
from cairn.blobs.store import BlobStore
from cairn.clock import iso8601
from cairn.db.engine import Database
from cairn.errors import Invalid
from cairn.paging import Page
from cairn.state.inspect import as_file
from cairn.state.model import StateVersion
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import JsonApiResponse, page_from, pagination_meta
from cairn.workspaces import consumers
from cairn.workspaces import store as workspaces

# The most resource instances one listing reads from a state; a larger state is refused with
# a clear error rather than answered partially (states this large are rare: ~100 MB).
MAX_RESOURCES = 200_000


@dataclass(frozen=True)
class Resource:
    """One managed resource instance of a state."""

    address: str
    name: str
    module: str
    provider: str
    provider_type: str
    name_index: str | None


def _index_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _index_suffix(key: Any) -> str:
    if key is None:
        return ""
    if isinstance(key, str):
        return f'["{key}"]'
    return f"[{key}]"


def _provider(raw: str) -> str:
    """``provider["registry.terraform.io/hashicorp/null"]`` → ``hashicorp/null`` (HCP
    Terraform's form); anything else as the state says it."""
    start, end = raw.find('["'), raw.rfind('"]')
    if start == -1 or end <= start:
        return raw
    source = raw[start + 2 : end]
    parts = source.split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else source


_FIELDS = frozenset(f"resources.item.{k}" for k in ("mode", "type", "name", "module", "provider"))


def read_resources(chunks: Iterable[bytes]) -> Iterator[Resource]:
    """The managed resource instances of a state (formats 3 and 4), in state order."""
    res: dict[str, Any] = {}
    keys: list[Any] = []
    module_path: list[str] = []
    for prefix, event, value in ijson.parse(as_file(chunks), use_float=True):
        if prefix == "resources.item":
            if event == "start_map":
                res, keys = {}, []
            elif event == "end_map" and res.get("mode", "managed") == "managed":
                yield from _format4(res, keys)
        elif prefix in _FIELDS:
            res[prefix.rsplit(".", 1)[1]] = value
        elif prefix == "resources.item.instances.item" and event == "start_map":
            keys.append(None)
        elif prefix == "resources.item.instances.item.index_key" and keys:
            keys[-1] = value
        elif prefix == "modules.item" and event == "start_map":
            module_path = []
        elif prefix == "modules.item.path.item" and event == "string":
            module_path.append(str(value))
        elif prefix == "modules.item.resources" and event == "map_key":
            found = _format3(module_path, str(value))
            if found is not None:
                yield found


def _format4(res: dict[str, Any], keys: list[Any]) -> Iterator[Resource]:
    rtype, name = str(res.get("type", "")), str(res.get("name", ""))
    module = str(res.get("module") or "")
    base = f"{module + '.' if module else ''}{rtype}.{name}"
    provider = _provider(str(res.get("provider", "")))
    for key in keys:
        yield Resource(
            address=base + _index_suffix(key),
            name=name,
            module=module or "root",
            provider=provider,
            provider_type=rtype,
            name_index=_index_text(key),
        )


def _format3(path: list[str], key: str) -> Resource | None:
    """A format 3 resource key: ``aws_instance.web`` or ``aws_instance.web.1``; data
    sources (``data.…``) are not listed."""
    if key.startswith("data."):
        return None
    parts = key.split(".")
    if len(parts) < 2:
        return None
    rtype, name = parts[0], parts[1]
    index = parts[2] if len(parts) > 2 and parts[2].isdigit() else None
    module = ".".join(f"module.{p}" for p in path[1:])
    address = f"{module + '.' if module else ''}{rtype}.{name}{f'[{index}]' if index else ''}"
    return Resource(
        address=address,
        name=name,
        module=module or "root",
        provider=rtype.split("_", 1)[0],
        provider_type=rtype,
        name_index=index,
    )


def resource_id(ws_id: str, address: str) -> str:
    """A stable ID for a resource of a workspace (HCP Terraform's ``wsr-`` IDs)."""
    digest = hashlib.sha256(f"{ws_id}\0{address}".encode()).hexdigest()[:16]
    return f"wsr-{digest}"


def document(ws_id: str, sv: StateVersion, r: Resource) -> dict[str, Any]:
    """A ``resources`` document (HCP Terraform's attributes)."""
    at = iso8601(sv.finalized_at or sv.created_at)
    return {
        "id": resource_id(ws_id, r.address),
        "type": "resources",
        "attributes": {
            "address": r.address,
            "name": r.name,
            "created-at": at,
            "updated-at": at,
            "module": r.module,
            "provider": r.provider,
            "provider-type": r.provider_type,
            "modified-by-state-version-id": sv.id,
            "name-index": r.name_index,
        },
    }


class WorkspaceResources:
    """Lists the resources of a workspace's current state, a page at a time."""

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    def listing(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[dict[str, Any]], int]:
        """One page of resource documents and their total. Reading them reads the state
        (``state:read``, as HCP Terraform's "read state versions"); a workspace without a
        state has none."""
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            authz.require(
                caller, STATE_READ, workspaces.target(org, ws), doing="list the resources of"
            )
            consumers.require_consumable(s, caller, org, ws)
            sv = s.get(StateVersion, ws.current_state_version_id or "")
            if sv is None or sv.status != "finalized" or sv.sha256 is None:
                return [], 0
        found: list[Resource] = []
        for r in read_resources(self._blobs.iter_chunks(sv.sha256)):
            found.append(r)
            if len(found) > MAX_RESOURCES:
                raise Invalid(
                    f"the current state holds more than {MAX_RESOURCES} resource instances; "
                    "cairn does not list that many"
                )
        chosen = found[page.offset : page.offset + page.size]
        return [document(ws_id, sv, r) for r in chosen], len(found)


class Lister(Protocol):
    def listing(
        self, caller: Subject, ws_id: str, page: Page
    ) -> tuple[list[dict[str, Any]], int]: ...


def routes(resources: Lister) -> list[Route]:
    """``GET /workspaces/:id/resources`` (paginated: 20 a page by default, as HCP Terraform)."""

    def list_resources(call: Call) -> Response:
        page = page_from(call.request)
        docs, total = resources.listing(call.caller, call.param("id"), page)
        return JsonApiResponse({"data": docs, "meta": pagination_meta(page, total)})

    return [route("/workspaces/{id}/resources", list_resources, ["GET"])]
