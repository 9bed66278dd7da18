"""Finding H2: ``search[tags]`` / ``search[exclude-tags]`` are bounded (at most 50 tags of at
most 255 characters each, else a 400 naming the parameter and the limit), and the list query
has one tag subquery whatever the number of tags (it was one nested subquery per tag: 200 tags
ran 58 s on PostgreSQL, 999 were a 500 on SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.support.app import (
    InProcessCairn,
    create_organization,
    create_workspace,
    document,
    make_user,
)

pytestmark = pytest.mark.anyio

LIMIT = 50


@contextmanager
def statements(app: InProcessCairn) -> Iterator[list[str]]:
    """The SQL statements the app runs meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = app.ctx.db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def _search(client: httpx.AsyncClient, org: str, **params: str) -> httpx.Response:
    return await client.get(f"/api/v2/organizations/{org}/workspaces", params=params)


def _names(response: httpx.Response) -> set[str]:
    return {w["attributes"]["name"] for w in document(response, 200)["data"]}


@pytest.mark.parametrize("parameter", ["search[tags]", "search[exclude-tags]"])
async def test_too_many_or_too_long_tags_are_a_400(
    app: InProcessCairn, admin: httpx.AsyncClient, parameter: str
) -> None:
    """The reproducer's caller: a reader with one read grant. 999 tags was a 500 on SQLite
    (and minutes of PostgreSQL); beyond the limits it is a 400 that says which and why."""
    org = await create_organization(admin)
    await create_workspace(admin, org, "app", **{"tag-names": ["t"]})
    reader = await make_user(admin, "reader")
    grant = {"role": "read", "workspaces": "app", "user": reader.username}
    document(await admin.post(f"/api/cairn/v1/organizations/{org}/grants", json=grant), 201)
    async with app.client(reader.token) as person:
        for value, says in (
            (",".join(["t"] * 999), f"at most {LIMIT}"),
            (",".join(f"t{i}" for i in range(LIMIT + 1)), f"at most {LIMIT}"),
            ("t," + "x" * 256, "at most 255"),
        ):
            error = document(await _search(person, org, **{parameter: value}), 400)["errors"][0]
            assert error["source"] == {"parameter": parameter}
            assert parameter in error["detail"] and says in error["detail"], error
        # At the limits: answered.
        at_limit = ",".join(["t"] + [f"u{i}" for i in range(LIMIT - 2)] + ["v" * 255])
        document(await _search(person, org, **{parameter: at_limit}), 200)


async def test_one_tag_subquery_whatever_the_number_of_tags(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    org = await create_organization(admin)
    await create_workspace(admin, org, "app", **{"tag-names": ["t"]})
    counts = []
    for n in (1, 10, LIMIT):
        tags = ",".join(["t"] + [f"x{i}" for i in range(n - 1)])
        with statements(app) as seen:
            assert _names(await _search(admin, org, **{"search[tags]": tags})) == (
                {"app"} if n == 1 else set()
            )
        listing = [s for s in seen if "workspace_tags" in s and "FROM workspaces" in s]
        assert listing, seen
        counts.append(max(s.count("FROM workspace_tags") for s in listing))
    assert counts == [1, 1, 1], counts


async def test_tag_search_keeps_its_meaning(admin: httpx.AsyncClient) -> None:
    """All of search[tags] (duplicates and spaces ignored), none of search[exclude-tags]."""
    org = await create_organization(admin)
    for name, tags in (
        ("a", ["env:prod", "team:web"]),
        ("b", ["env:prod"]),
        ("c", ["team:web"]),
        ("d", []),
    ):
        await create_workspace(admin, org, name, **{"tag-names": tags})
    cases = [
        ({"search[tags]": "env:prod"}, {"a", "b"}),
        ({"search[tags]": "env:prod,team:web"}, {"a"}),
        ({"search[tags]": "team:web, env:prod ,env:prod"}, {"a"}),
        ({"search[tags]": "env:prod,nope"}, set()),
        ({"search[exclude-tags]": "env:prod"}, {"c", "d"}),
        ({"search[exclude-tags]": "env:prod,team:web"}, {"d"}),
        ({"search[tags]": "team:web", "search[exclude-tags]": "env:prod"}, {"c"}),
    ]
    for params, expected in cases:
        assert _names(await _search(admin, org, **params)) == expected, params
        counted = document(await _search(admin, org, **params), 200)["meta"]["pagination"]
        assert counted["total-count"] == len(expected), params
