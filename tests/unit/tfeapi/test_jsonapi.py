"""cairn.tfeapi.jsonapi: pagination meta that go-tfe can follow, and strict document reading."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.errors import BadRequest, Invalid
from cairn.paging import Page
from cairn.tfeapi.jsonapi import pagination_meta, parse_document


def meta(number: int, size: int, total: int) -> dict[str, object]:
    result: dict[str, object] = pagination_meta(Page(number, size), total)["pagination"]
    return result


def test_empty_list_is_one_page() -> None:
    assert meta(1, 20, 0) == {
        "current-page": 1,
        "page-size": 20,
        "prev-page": None,
        "next-page": None,
        "total-pages": 1,
        "total-count": 0,
    }


@pytest.mark.parametrize(
    ("number", "prev", "next_"),
    [(1, None, 2), (2, 1, 3), (3, 2, None)],
)
def test_five_items_in_pages_of_two(number: int, prev: int | None, next_: int | None) -> None:
    assert meta(number, 2, 5) == {
        "current-page": number,
        "page-size": 2,
        "prev-page": prev,
        "next-page": next_,
        "total-pages": 3,
        "total-count": 5,
    }


def test_exact_multiple_has_no_empty_last_page() -> None:
    assert meta(2, 10, 20)["total-pages"] == 2
    assert meta(2, 10, 20)["next-page"] is None


def test_page_beyond_the_end_has_no_next_page() -> None:
    m = meta(7, 10, 25)
    assert m["next-page"] is None and m["prev-page"] == 6 and m["total-pages"] == 3


@given(
    number=st.integers(min_value=1, max_value=1000),
    size=st.integers(min_value=1, max_value=100),
    total=st.integers(min_value=0, max_value=100_000),
)
def test_next_page_is_right_whenever_current_is_below_total(
    number: int, size: int, total: int
) -> None:
    """go-tfe loops `for page := 1; ; page = meta.NextPage` while current < total-pages: a
    wrong next-page makes Terraform re-request page 1 forever (reference §0.2.4)."""
    m = meta(number, size, total)
    total_pages = max(1, math.ceil(total / size))
    assert m["total-pages"] == total_pages
    assert m["total-count"] == total
    assert m["current-page"] == number
    assert m["next-page"] == (number + 1 if number < total_pages else None)
    assert m["prev-page"] == (number - 1 if number > 1 else None)


def test_walking_next_pages_visits_every_item_once() -> None:
    total, size = 47, 10
    seen: list[int] = []
    number: int | None = 1
    while number is not None:
        page = Page(number, size)
        seen.extend(range(total)[page.offset : page.offset + size])
        number = meta(number, size, total)["next-page"]  # type: ignore[assignment]
    assert seen == list(range(total))


# ---- reading documents ----------------------------------------------------------------------


def test_parse_document_reads_typed_attributes() -> None:
    doc = parse_document(
        b'{"data":{"type":"workspaces","attributes":{"name":"w","auto-apply":true,"n":3,'
        b'"tags":["a"]},"relationships":{"project":{"data":{"type":"projects","id":"prj-1"}}}}}\n',
        "workspaces",
    )
    assert doc.string("name") == "w"
    assert doc.boolean("auto-apply") is True
    assert doc.integer("n") == 3
    assert doc.string_list("tags") == ["a"]
    assert doc.relationship_id("project", "projects") == "prj-1"
    assert doc.string("missing") is None


def test_blank_type_only_where_allowed() -> None:
    body = b'{"data":{"type":"","attributes":{"reason":"x"}}}'
    assert parse_document(body, "workspaces", allow_blank_type=True).type == ""
    with pytest.raises(Invalid) as caught:
        parse_document(body, "workspaces")
    assert caught.value.pointer == "/data/type"


@pytest.mark.parametrize(
    ("body", "error", "pointer"),
    [
        (b"", BadRequest, None),
        (b"{", BadRequest, None),
        (b'{"data": 1}', BadRequest, "/data"),
        (b'{"data": {"type": 7, "attributes": {}}}', Invalid, "/data/type"),
        (b'{"data": {"type": "runs", "attributes": {}}}', Invalid, "/data/type"),
        (b'{"data": {"type": "workspaces", "attributes": [1]}}', Invalid, "/data/attributes"),
        (b'{"data": {"type": "workspaces", "relationships": 1}}', Invalid, "/data/relationships"),
        (b'{"data": {"type": "workspaces", "id": 5}}', Invalid, "/data/id"),
    ],
)
def test_malformed_documents(body: bytes, error: type[Exception], pointer: str | None) -> None:
    with pytest.raises(error) as caught:
        parse_document(body, "workspaces")
    assert getattr(caught.value, "pointer", None) == pointer


def test_booleans_are_not_integers_and_integers_not_booleans() -> None:
    doc = parse_document(b'{"data":{"type":"x","attributes":{"a":true,"b":1}}}', "x")
    with pytest.raises(Invalid) as caught:
        doc.integer("a")
    assert caught.value.pointer == "/data/attributes/a"
    with pytest.raises(Invalid):
        doc.boolean("b")


def test_deeply_nested_json_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_document(b"[" * 100_000 + b"]" * 100_000, "workspaces")


def test_type_is_checked_only_when_given() -> None:
    """HCP Terraform accepts a document without ``data.type`` (PATCH bodies often omit it)."""
    doc = parse_document(b'{"data": {"attributes": {"name": "w"}}}', "workspaces")
    assert doc.type == "workspaces" and doc.string("name") == "w"
    assert parse_document(b'{"data": {"type": null}}', None).type == ""
