"""Reading and writing JSON:API documents the way go-tfe and pytfe expect them.

Reading is strict about shape (``data`` object, attribute JSON types; ``type`` when it is sent)
and points at the offending member; writing produces the exact media type, the pagination
``meta`` that go-tfe follows (reference §0.2) and, for ``include=``, the ``included`` member
(``Includes``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cairn.authz.subject import Subject
from cairn.errors import ApiError, BadRequest, Forbidden, Invalid, NotFound
from cairn.names import unstorable
from cairn.paging import Page

MEDIA_TYPE = "application/vnd.api+json"


class JsonApiResponse(Response):
    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_response(err: ApiError) -> JsonApiResponse:
    return JsonApiResponse(
        {"errors": [err.to_jsonapi()]}, status_code=err.status, headers=err.headers
    )


@dataclass
class Document:
    """The parts of a request's primary data that handlers use."""

    type: str
    id: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    relationships: dict[str, Any] = field(default_factory=dict)

    # ---- typed attribute access; every failure points at the member -------------------------
    def _get(self, name: str) -> Any:
        return self.attributes.get(name)

    def has(self, name: str) -> bool:
        return name in self.attributes and self.attributes[name] is not None

    def string(self, name: str, *, required: bool = False, max_len: int = 1000) -> str | None:
        value = self._get(name)
        pointer = f"/data/attributes/{name}"
        if value is None:
            if required:
                raise Invalid(f"attribute '{name}' is required", pointer=pointer)
            return None
        if not isinstance(value, str):
            raise Invalid(f"attribute '{name}' must be a string", pointer=pointer)
        if len(value) > max_len:
            raise Invalid(
                f"attribute '{name}' is longer than {max_len} characters", pointer=pointer
            )
        return value

    def boolean(self, name: str) -> bool | None:
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise Invalid(
                f"attribute '{name}' must be true or false", pointer=f"/data/attributes/{name}"
            )
        return value

    def integer(
        self, name: str, *, required: bool = False, minimum: int | None = None
    ) -> int | None:
        value = self._get(name)
        pointer = f"/data/attributes/{name}"
        if value is None:
            if required:
                raise Invalid(f"attribute '{name}' is required", pointer=pointer)
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"attribute '{name}' must be an integer", pointer=pointer)
        if minimum is not None and value < minimum:
            raise Invalid(f"attribute '{name}' must be at least {minimum}", pointer=pointer)
        return value

    def string_list(self, name: str, *, max_items: int = 100) -> list[str] | None:
        value = self._get(name)
        pointer = f"/data/attributes/{name}"
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid(f"attribute '{name}' must be a list of strings", pointer=pointer)
        if len(value) > max_items:
            raise Invalid(f"attribute '{name}' has more than {max_items} items", pointer=pointer)
        return value

    def relationship_id(self, name: str, expected_type: str) -> str | None:
        """The ``id`` of a to-one relationship, checking its type."""
        rel = self.relationships.get(name)
        pointer = f"/data/relationships/{name}"
        if rel is None:
            return None
        if not isinstance(rel, dict) or "data" not in rel:
            raise Invalid(f"relationship '{name}' must be an object with 'data'", pointer=pointer)
        data = rel["data"]
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise Invalid(f"relationship '{name}' must name one resource by id", pointer=pointer)
        if data.get("type") != expected_type:
            raise Invalid(
                f"relationship '{name}' must be of type '{expected_type}'", pointer=pointer
            )
        return str(data["id"])


# Deepest nesting of objects and arrays accepted in a request body: a JSON:API document is
# a few levels deep plus the values of its attributes.
MAX_BODY_DEPTH = 64
_TOO_DEEP = (
    f"the request body nests objects and arrays more than {MAX_BODY_DEPTH} levels deep; "
    "no JSON:API document cairn reads does"
)


def parse_json(raw: bytes) -> Any:
    """A request body's JSON, nested at most ``MAX_BODY_DEPTH`` levels (400 otherwise), whose
    strings can all be stored (a NUL byte or a lone surrogate anywhere is a 422 pointing at
    it: PostgreSQL text cannot hold them)."""
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON:API document")
    try:
        # The decoder itself stops at the interpreter's recursion limit, long before memory
        # matters; the bound below is the one cairn promises.
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    _check_body(body, MAX_BODY_DEPTH)
    return body


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _check_body(value: Any, limit: int) -> None:
    """Refuse ``value`` if it nests containers more than ``limit`` levels (400) or holds a
    string (member name or value) that cannot be stored (422). No recursion."""
    todo: list[tuple[Any, int, str]] = [(value, 1, "")]
    while todo:
        item, depth, pointer = todo.pop()
        if isinstance(item, str):
            _check_storable(item, pointer or "/")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            raise BadRequest(_TOO_DEEP)
        if isinstance(item, dict):
            for key, child in item.items():
                why = unstorable(key)
                if why is not None:
                    raise Invalid(
                        f"a member name at '{pointer or '/'}' contains {why}, which cairn "
                        "cannot store",
                        pointer=pointer or "/",
                    )
                todo.append((child, depth + 1, f"{pointer}/{_pointer_token(key)}"))
        else:
            todo.extend((c, depth + 1, f"{pointer}/{i}") for i, c in enumerate(item))


def _check_storable(value: str, pointer: str) -> None:
    why = unstorable(value)
    if why is not None:
        raise Invalid(f"'{pointer}' contains {why}, which cairn cannot store", pointer=pointer)


def parse_document(
    raw: bytes, expected_type: str | None, *, allow_blank_type: bool = False
) -> Document:
    """Parse ``{"data": {...}}``. ``expected_type`` None accepts any type; a ``data`` without
    ``type`` is taken to be of the expected type (``allow_blank_type``: ``""`` too, which is
    what go-tfe sends for option structs without a type)."""
    body = parse_json(raw)
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise BadRequest(
            "the request body must be a JSON:API document with a 'data' object", pointer="/data"
        )
    data = body["data"]
    typ = data.get("type")
    if typ is None:
        # HCP Terraform checks the type only when it is sent (PATCH bodies often omit it).
        typ = expected_type or ""
    if not isinstance(typ, str):
        raise Invalid("'data.type' must be a string", pointer="/data/type")
    if expected_type is not None and typ != expected_type and not (allow_blank_type and typ == ""):
        raise Invalid(f"'data.type' must be '{expected_type}', not '{typ}'", pointer="/data/type")
    attrs = data.get("attributes") or {}
    rels = data.get("relationships") or {}
    if not isinstance(attrs, dict):
        raise Invalid("'data.attributes' must be an object", pointer="/data/attributes")
    if not isinstance(rels, dict):
        raise Invalid("'data.relationships' must be an object", pointer="/data/relationships")
    ident = data.get("id")
    if ident is not None and not isinstance(ident, str):
        raise Invalid("'data.id' must be a string", pointer="/data/id")
    return Document(type=typ, id=ident, attributes=attrs, relationships=rels)


def parse_resource_list(
    raw: bytes, expected_type: str, *, max_items: int = 100
) -> list[dict[str, Any]]:
    """Parse ``{"data": [{type, id?, attributes?}, ...]}`` (relationship endpoints)."""
    body = parse_json(raw)
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise BadRequest(
            "the request body must be a JSON:API document with a 'data' array", pointer="/data"
        )
    items = body["data"]
    if len(items) > max_items:
        raise Invalid(f"at most {max_items} items may be sent at once", pointer="/data")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != expected_type:
            raise Invalid(f"every item must be of type '{expected_type}'", pointer=f"/data/{i}")
    return list(items)


# ---- pagination (reference §0.2.4) -----------------------------------------------------------


def page_from(request: Request, *, default_size: int = 20, max_size: int = 100) -> Page:
    # HCP Terraform answers page[number]=0 with the first page; so does cairn.
    number = max(_positive_int(request, "page[number]", 1, zero_ok=True), 1)
    size = _positive_int(request, "page[size]", default_size)
    return Page(number=number, size=min(size, max_size))


def _positive_int(request: Request, name: str, default: int, *, zero_ok: bool = False) -> int:
    values = request.query_params.getlist(name)
    if not values or values[-1] == "":
        return default
    value = values[-1]
    # ASCII digits only: str.isdigit() also accepts '²' (which int() refuses) and '٣'.
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"query parameter '{name}' must be a positive integer", parameter=name)
    digits = value.lstrip("0")
    if not digits:
        if zero_ok:
            return 0
        raise BadRequest(f"query parameter '{name}' must be a positive integer", parameter=name)
    # Capped before int(): Python refuses to convert more than 4,300 digits.
    return 1_000_000 if len(digits) > 7 else min(int(digits), 1_000_000)


def pagination_meta(page: Page, total: int) -> dict[str, Any]:
    total_pages = max(1, math.ceil(total / page.size)) if page.size else 1
    return {
        "pagination": {
            "current-page": page.number,
            "page-size": page.size,
            "prev-page": page.number - 1 if page.number > 1 else None,
            "next-page": page.number + 1 if page.number < total_pages else None,
            "total-pages": total_pages,
            "total-count": total,
        }
    }


def query(request: Request, name: str) -> str | None:
    """The last value of a query parameter ('' counts as absent; pytfe repeats parameters)."""
    values = request.query_params.getlist(name)
    if not values or values[-1] == "":
        return None
    return values[-1]


# ---- include= (compound documents) -----------------------------------------------------------

Resource = dict[str, Any]
Loader = Callable[[Subject, Sequence[str]], Iterable[Resource]]
"""``(caller, ids)`` → the documents of those resources of one type that the caller may read
(the others are left out, exactly as a 404 would hide them)."""
Resolver = Callable[[Subject, Sequence[Resource]], Iterable[tuple[Resource, list[Resource]]]]
"""``(caller, documents)`` → for each document, the related documents of one relationship
that its linkage cannot name by itself (e.g. a workspace's outputs, kept by the state)."""

MAX_INCLUDE_PATHS = 16
MAX_INCLUDED = 2000


def _relationship_name(segment: str) -> str:
    """HCP Terraform names includes with underscores (``current_state_version``) and go-tfe
    sometimes with dashes (``current-state-version``); both name the relationship member."""
    return segment.strip().replace("_", "-")


class Includes:
    """The ``include=`` parameter, one mechanism for every resource type.

    Domains offer, per primary type, the include paths HCP Terraform documents for it
    (``offer``), and a ``loader`` per resource type that turns IDs into documents through
    their service (so only what the caller may read is included). A path ``a.b`` follows the
    relationship ``a`` of the primary documents (its ``data`` linkage), then ``b`` of those.
    A relationship whose members the linkage cannot name gets a ``resolver`` instead, which
    also fills the linkage in. Related resources cairn does not have (runs, configuration
    versions) have no loader: their relationship is ``null`` and nothing is included.
    """

    def __init__(self) -> None:
        self._offered: dict[str, dict[tuple[str, ...], str]] = {}
        self._loaders: dict[str, Loader] = {}
        self._resolvers: dict[tuple[str, str], Resolver] = {}

    def offer(self, resource_type: str, *paths: str) -> None:
        """Accept ``paths`` (as HCP Terraform spells them) in ``include=`` on ``resource_type``."""
        offered = self._offered.setdefault(resource_type, {})
        for path in paths:
            offered[self._key(path)] = path

    def loader(self, resource_type: str, load: Loader) -> None:
        self._loaders[resource_type] = load

    def resolver(self, resource_type: str, relationship: str, resolve: Resolver) -> None:
        self._resolvers[(resource_type, _relationship_name(relationship))] = resolve

    @staticmethod
    def _key(path: str) -> tuple[str, ...]:
        return tuple(_relationship_name(s) for s in path.split("."))

    def requested(self, request: Request, resource_type: str) -> list[tuple[str, ...]]:
        """The include paths asked for (all ``include`` parameters, comma-separated; empty
        ones ignored). One that ``resource_type`` does not offer is a 400 that go-tfe turns
        into ``ErrInvalidIncludeValue`` (it looks for "Invalid include parameter")."""
        raw = [
            part.strip()
            for value in request.query_params.getlist("include")
            for part in value.split(",")
        ]
        names = list(dict.fromkeys(p for p in raw if p))
        if len(names) > MAX_INCLUDE_PATHS:
            raise BadRequest(
                f"Invalid include parameter: at most {MAX_INCLUDE_PATHS} paths may be included",
                parameter="include",
            )
        offered = self._offered.get(resource_type, {})
        paths: list[tuple[str, ...]] = []
        for name in names:
            key = self._key(name)
            if key not in offered:
                choices = ", ".join(sorted(offered.values())) or "nothing"
                shown = name if len(name) <= 100 else name[:100] + "…"
                raise BadRequest(
                    f"Invalid include parameter: {shown!r} cannot be included with "
                    f"{resource_type}; they offer {choices}",
                    parameter="include",
                )
            paths.append(key)
        return paths

    def included(
        self, caller: Subject, primary: Sequence[Resource], paths: Sequence[tuple[str, ...]]
    ) -> list[Resource]:
        """The ``included`` member: every resource reached by ``paths`` from ``primary`` that
        the caller may read, once, in the order reached, never one of the primary resources."""
        seen = {(d["type"], d["id"]) for d in primary}
        out: list[Resource] = []
        # Documents fetched once per request, whichever path reaches them first.
        cache: dict[tuple[str, str], Resource | None] = {}
        for path in paths:
            level: list[Resource] = list(primary)
            for name in path:
                level = self._follow(caller, level, name, cache)
                for doc in level:
                    key = (doc["type"], doc["id"])
                    if key not in seen:
                        seen.add(key)
                        out.append(doc)
                if len(out) > MAX_INCLUDED:
                    raise _too_many()
        return out

    def _follow(
        self,
        caller: Subject,
        docs: list[Resource],
        name: str,
        cache: dict[tuple[str, str], Resource | None],
    ) -> list[Resource]:
        related: list[Resource] = []
        by_type: dict[str, list[Resource]] = {}
        for doc in docs:
            by_type.setdefault(doc["type"], []).append(doc)
        for typ, group in by_type.items():
            resolve = self._resolvers.get((typ, name))
            if resolve is not None:
                for parent, found in resolve(caller, group):
                    rel = parent.setdefault("relationships", {}).setdefault(name, {})
                    linkage = [{"id": d["id"], "type": d["type"]} for d in found]
                    if isinstance(rel.get("data", []), list):
                        rel["data"] = linkage
                    else:  # to-one: keep its shape
                        rel["data"] = linkage[0] if linkage else None
                    for d in found:
                        cache[(d["type"], d["id"])] = d
                    related.extend(found)
                continue
            wanted: list[tuple[str, str]] = []
            for doc in group:
                linkage = (doc.get("relationships") or {}).get(name, {}).get("data")
                items = linkage if isinstance(linkage, list) else [linkage] if linkage else []
                wanted.extend((i["type"], i["id"]) for i in items)
            if len(wanted) > MAX_INCLUDED:  # refused before anything is loaded
                raise _too_many()
            self._load(caller, [w for w in dict.fromkeys(wanted) if w not in cache], cache)
            for w in dict.fromkeys(wanted):
                found_doc = cache.get(w)
                if found_doc is not None:
                    related.append(found_doc)
        return related

    def _load(
        self,
        caller: Subject,
        keys: list[tuple[str, str]],
        cache: dict[tuple[str, str], Resource | None],
    ) -> None:
        by_type: dict[str, list[str]] = {}
        for typ, ident in keys:
            by_type.setdefault(typ, []).append(ident)
            cache[(typ, ident)] = None  # unreadable or unknown unless loaded below
        for typ, ids in by_type.items():
            load = self._loaders.get(typ)
            if load is None:
                continue
            for doc in load(caller, ids):
                cache[(doc["type"], doc["id"])] = doc

    def document(
        self,
        request: Request,
        caller: Subject,
        data: Resource | list[Resource],
        *,
        resource_type: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``{"data": …, "included": […], "meta": …}``: ``included`` only when ``include=``
        names something. ``resource_type`` names the primary type when ``data`` is an empty
        list (an unknown include is refused on an empty page too)."""
        primary = data if isinstance(data, list) else [data]
        typ = resource_type or (primary[0]["type"] if primary else "")
        paths = self.requested(request, typ)
        doc: dict[str, Any] = {"data": data}
        if paths:
            doc["included"] = self.included(caller, primary, paths)
        if meta is not None:
            doc["meta"] = meta
        return doc


def _too_many() -> BadRequest:
    return BadRequest(
        f"Invalid include parameter: more than {MAX_INCLUDED} resources would be included; "
        "ask for a smaller page[size] or fewer includes",
        parameter="include",
    )


def loader_by_id(
    get: Callable[[Subject, str], Resource],
    *,
    hidden: tuple[type[Exception], ...] = (NotFound, Forbidden),
) -> Loader:
    """A ``Loader`` from a per-ID reader that raises one of ``hidden`` for what the caller
    may not read (left out of ``included``, as the reader's 404 or 403 would say)."""

    def load(caller: Subject, ids: Sequence[str]) -> Iterable[Resource]:
        for ident in ids:
            try:
                yield get(caller, ident)
            except hidden:
                continue

    return load
