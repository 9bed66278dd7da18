"""`GET /api/cairn/v1/audit-events`, on both metadata backends: site admins only, newest
first, filters (action exact or by prefix, actor, subject substring, since/until, outcome),
pages of at most 100, and no way to change an event.

The server is shared by the module, so each test makes its own events (API tokens with a
description unique to the test) and selects them by subject.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support import api as tfe_api
from tests.support.server import CairnServer
from tests.tokens.support import CT, create_user_token, make_user, me

pytestmark = pytest.mark.e2e

PATH = "/api/cairn/v1/audit-events"


def _events(
    api: httpx.Client, *, page: int | None = None, size: int | None = None, **filters: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of events matching `filters` (filter[NAME]=VALUE), and its pagination."""
    return _query(api, filters, page=page, size=size)


def _query(
    api: httpx.Client, filters: dict[str, str], *, page: int | None = None, size: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    query: dict[str, str | int] = {f"filter[{k}]": v for k, v in filters.items()}
    if page is not None:
        query["page[number]"] = page
    if size is not None:
        query["page[size]"] = size
    doc = tfe_api.document(api.get(PATH, params=query), 200)
    return doc["data"], doc["meta"]["pagination"]


def _make_events(api: httpx.Client, marker: str, n: int) -> list[str]:
    """`n` token.create events whose subject contains `marker`; their token ids, oldest first."""
    user_id = me(api)["id"]
    made = []
    for i in range(n):
        token_id, _ = create_user_token(api, user_id, f"{marker} {i}")
        made.append(token_id)
        time.sleep(0.01)  # distinct milliseconds, so since/until can split them
    return made


def test_events_are_newest_first_and_paginated(api: httpx.Client) -> None:
    marker = tfe_api.unique_name("pages")
    made = _make_events(api, marker, 5)

    everything, meta = _events(api, subject=marker)
    assert [e["attributes"]["details"]["token_id"] for e in everything] == made[::-1]
    assert meta["total-count"] == 5
    times = [datetime.fromisoformat(e["attributes"]["at"]) for e in everything]
    assert times == sorted(times, reverse=True)
    first = everything[0]
    assert first["type"] == "audit-events"
    assert set(first["attributes"]) == {
        "at",
        "actor-id",
        "actor-name",
        "action",
        "subject",
        "source-address",
        "outcome",
        "details",
    }
    assert isinstance(first["attributes"]["details"], dict)

    seen: list[str] = []
    page: int | None = 1
    metas = []
    while page is not None:
        data, meta = _events(api, subject=marker, page=page, size=2)
        seen += [e["id"] for e in data]
        metas.append(meta)
        page = meta["next-page"]
    assert seen == [e["id"] for e in everything]
    assert [m["current-page"] for m in metas] == [1, 2, 3]
    assert {m["total-pages"] for m in metas} == {3}
    assert metas[-1]["next-page"] is None and metas[1]["prev-page"] == 1

    _, meta = _events(api, size=1000)
    assert meta["page-size"] == 100  # the maximum


def test_filters(server: CairnServer, api: httpx.Client) -> None:
    marker = tfe_api.unique_name("filters")
    made = _make_events(api, marker, 4)
    tfe_api.expect(api.delete(f"/api/v2/authentication-tokens/{made[0]}", headers=CT), 204)

    def tokens(**filters: str) -> list[str]:
        data, _ = _query(api, {"subject": marker, **filters})
        return [e["attributes"]["details"]["token_id"] for e in data]

    # action: exact, or a prefix ending in "." or "*"
    assert tokens(action="token.create") == made[::-1]
    assert tokens(action="token.revoke") == [made[0]]
    assert tokens(action="token.") == [made[0], *made[::-1]]
    assert tokens(action="token.*") == tokens(action="token.")
    assert tokens(action="token") == []
    assert tokens(action="token.cr") == []  # not a prefix match without "." or "*"
    issuer, _ = _events(api, action="oidc.")
    assert issuer and all(e["attributes"]["action"].startswith("oidc.") for e in issuer)

    # subject is a substring; outcome exact; actor by name or id
    assert tokens(subject=made[2]) == [made[2]]
    assert tokens(outcome="success") == tokens()
    assert tokens(outcome="failure") == []
    admin = me(api)
    assert tokens(actor="admin") == tokens()
    assert tokens(actor=admin["id"]) == tokens()
    assert tokens(actor="somebody-else") == []

    # since is inclusive, until exclusive
    creates, _ = _events(api, subject=marker, action="token.create")
    third_at = next(e for e in creates if e["attributes"]["details"]["token_id"] == made[2])
    at = third_at["attributes"]["at"]
    assert tokens(action="token.create", since=at) == [made[3], made[2]]
    assert tokens(action="token.create", until=at) == [made[1], made[0]]
    assert tokens(action="token.create", since=at.replace("Z", "+00:00")) == [made[3], made[2]]


def test_others_cannot_read_the_log(server: CairnServer, api: httpx.Client) -> None:
    _, value = make_user(api, "reader")
    with server.client(value) as client:
        tfe_api.expect(client.get(PATH), 404)
        some = _events(api)[0][0]["id"]
        tfe_api.expect(client.get(f"{PATH}/{some}"), 404)
    with server.client() as anonymous:
        tfe_api.expect(anonymous.get(PATH), 401)


def test_one_event_by_id(api: httpx.Client) -> None:
    marker = tfe_api.unique_name("one")
    (token_id,) = _make_events(api, marker, 1)
    (event,), _ = _events(api, subject=marker)
    shown = tfe_api.document(api.get(f"{PATH}/{event['id']}"), 200)["data"]
    assert shown == event
    assert shown["attributes"]["subject"] == f"{token_id} ({marker} 0)"
    tfe_api.expect(api.get(f"{PATH}/evt-0000000000000000"), 404)


def test_the_log_is_append_only(api: httpx.Client) -> None:
    event = _events(api)[0][0]
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        tfe_api.expect(api.request(method, PATH, headers=CT), 405)
        tfe_api.expect(api.request(method, f"{PATH}/{event['id']}", headers=CT), 405)
    assert tfe_api.document(api.get(f"{PATH}/{event['id']}"), 200)["data"] == event


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"filter[nope]": "x"}, "filter[nope]"),
        ({"filter[since]": "yesterday"}, "filter[since]"),
        ({"filter[until]": "2020-13-45"}, "filter[until]"),
        (
            {"filter[since]": "2030-01-02T00:00:00Z", "filter[until]": "2030-01-01T00:00:00Z"},
            "filter[until]",
        ),
        ({"page[size]": "-1"}, "page[size]"),
    ],
)
def test_bad_queries_are_400(api: httpx.Client, params: dict[str, str], parameter: str) -> None:
    error = tfe_api.document(api.get(PATH, params=params), 400)["errors"][0]
    assert error["source"]["parameter"] == parameter
