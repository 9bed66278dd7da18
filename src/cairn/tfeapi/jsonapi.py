"""Reading and writing JSON:API documents the way go-tfe and pytfe expect them.

Reading is strict about shape (``data`` object, ``type``, attribute JSON types) and points at
the offending member; writing produces the exact media type and the pagination ``meta`` that
go-tfe follows (reference §0.2).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cairn.errors import ApiError, BadRequest, Invalid
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
    """Parse ``{"data": {...}}``. ``expected_type`` None accepts any type."""
    body = parse_json(raw)
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise BadRequest(
            "the request body must be a JSON:API document with a 'data' object", pointer="/data"
        )
    data = body["data"]
    typ = data.get("type")
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
    number = _positive_int(request, "page[number]", 1)
    size = _positive_int(request, "page[size]", default_size)
    return Page(number=number, size=min(size, max_size))


def _positive_int(request: Request, name: str, default: int) -> int:
    values = request.query_params.getlist(name)
    if not values or values[-1] == "":
        return default
    value = values[-1]
    # ASCII digits only: str.isdigit() also accepts '²' (which int() refuses) and '٣'.
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"query parameter '{name}' must be a positive integer", parameter=name)
    digits = value.lstrip("0")
    if not digits:
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
