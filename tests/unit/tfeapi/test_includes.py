"""`jsonapi.Includes`: include paths follow relationship linkage through loaders, resolvers
fill linkage they compute, what a loader hides stays out, each resource is included once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from starlette.requests import Request

from cairn.authz.subject import System, User
from cairn.errors import BadRequest, NotFound
from cairn.tfeapi.jsonapi import MAX_INCLUDED, Includes, Resource, loader_by_id

CALLER = User(id="user-a", name="a", token_id="at-1")


def request(query: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": query.encode(),
            "headers": [],
        }
    )


def ws(ident: str, org: str, locker: str | None = None) -> Resource:
    return {
        "id": ident,
        "type": "workspaces",
        "relationships": {
            "organization": {"data": {"id": org, "type": "organizations"}},
            "locked-by": {"data": {"id": locker, "type": "users"} if locker else None},
            "current-run": {"data": None},
        },
    }


def registry(secret_orgs: frozenset[str] = frozenset()) -> tuple[Includes, list[list[str]]]:
    calls: list[list[str]] = []
    found = Includes()
    found.offer(
        "workspaces", "organization", "locked_by", "current_run", "outputs", "organization.owner"
    )

    def load_orgs(caller: Any, ids: Sequence[str]) -> Iterable[Resource]:
        calls.append(list(ids))
        for i in ids:
            if i not in secret_orgs:
                yield {
                    "id": i,
                    "type": "organizations",
                    "relationships": {"owner": {"data": {"id": "user-o", "type": "users"}}},
                }

    def user(caller: Any, ident: str) -> Resource:
        if ident == "user-hidden":
            raise NotFound("no")
        return {"id": ident, "type": "users", "attributes": {}}

    def outputs(caller: Any, docs: Sequence[Resource]) -> Iterable[tuple[Resource, list[Resource]]]:
        for doc in docs:
            yield doc, [{"id": f"wsout-{doc['id']}", "type": "workspace-outputs"}]

    found.loader("organizations", load_orgs)
    found.loader("users", loader_by_id(user))
    found.resolver("workspaces", "outputs", outputs)
    return found, calls


def test_shared_related_resources_are_loaded_and_included_once() -> None:
    found, calls = registry()
    data = [ws("ws-1", "acme", "user-b"), ws("ws-2", "acme", "user-b"), ws("ws-3", "beta")]
    doc = found.document(request("include=organization,locked_by,current_run"), CALLER, data)
    assert [(r["type"], r["id"]) for r in doc["included"]] == [
        ("organizations", "acme"),
        ("organizations", "beta"),
        ("users", "user-b"),
    ]
    assert calls == [["acme", "beta"]], "one batch per type, each ID once"


def test_nested_paths_and_hidden_resources() -> None:
    found, _ = registry(secret_orgs=frozenset({"beta"}))
    data = [ws("ws-1", "acme", "user-hidden"), ws("ws-3", "beta")]
    doc = found.document(request("include=organization.owner,locked_by"), CALLER, data)
    assert [(r["type"], r["id"]) for r in doc["included"]] == [
        ("organizations", "acme"),
        ("users", "user-o"),
    ]


def test_resolvers_fill_the_linkage() -> None:
    found, _ = registry()
    data = ws("ws-1", "acme")
    doc = found.document(request("include=outputs"), CALLER, data)
    assert doc["included"] == [{"id": "wsout-ws-1", "type": "workspace-outputs"}]
    assert doc["data"]["relationships"]["outputs"]["data"] == [
        {"id": "wsout-ws-1", "type": "workspace-outputs"}
    ]


@pytest.mark.parametrize("query", ["include=", "", "include=,"])
def test_no_include_no_included_member(query: str) -> None:
    found, calls = registry()
    doc = found.document(request(query), System(), [ws("ws-1", "acme")], meta={"m": 1})
    assert set(doc) == {"data", "meta"} and calls == []


@pytest.mark.parametrize(
    "query",
    [
        "include=secrets",
        "include=organization.nope",
        "include=" + ",".join(f"p{i}" for i in range(20)),
    ],
)
def test_what_is_not_offered_is_400(query: str) -> None:
    found, _ = registry()
    with pytest.raises(BadRequest) as caught:
        found.document(request(query), CALLER, [ws("ws-1", "acme")])
    assert caught.value.detail.startswith("Invalid include parameter")
    assert caught.value.parameter == "include"


def test_unknown_include_is_refused_on_an_empty_page_too() -> None:
    found, _ = registry()
    with pytest.raises(BadRequest):
        found.document(request("include=bogus"), CALLER, [], resource_type="workspaces")
    doc = found.document(request("include=organization"), CALLER, [], resource_type="workspaces")
    assert doc["included"] == []


def test_included_is_bounded() -> None:
    found = Includes()
    found.offer("teams", "users")
    found.loader("users", lambda caller, ids: ({"id": i, "type": "users"} for i in ids))
    members = [{"id": f"user-{i}", "type": "users"} for i in range(MAX_INCLUDED + 1)]
    team = {"id": "team-1", "type": "teams", "relationships": {"users": {"data": members}}}
    with pytest.raises(BadRequest):
        found.document(request("include=users"), CALLER, team)
