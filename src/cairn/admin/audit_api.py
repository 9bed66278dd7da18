"""``GET /api/cairn/v1/audit-events[/{id}]``: the audit log for site admins.

Others get 404, as for every admin resource (no existence leak): ``authz.require`` with
``SITE_READ`` on ``authz.SITE``. Read-only on purpose: no
route updates or deletes an event (the methods answer 405).

Filters: ``filter[action]`` (exact, or a prefix ending in ``.`` or ``*``), ``filter[actor]``
(user name or id), ``filter[subject]`` (substring), ``filter[since]`` / ``filter[until]``
(ISO 8601; since inclusive, until exclusive), ``filter[outcome]``. An unknown ``filter[…]``
is a 400, so a typo never silently widens the selection. Pages: ``page[number]``,
``page[size]`` (default 20, at most 100).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cairn import authz
from cairn.audit.model import AuditEvent
from cairn.audit.service import AuditQuery
from cairn.clock import iso8601
from cairn.errors import BadRequest, NotFound
from cairn.paging import Page
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import JsonApiResponse, page_from, pagination_meta, query

TYPE = "audit-events"
FILTERS = ("action", "actor", "subject", "since", "until", "outcome")
_HIDDEN = "there is no such resource, or you are not allowed to see it"


class AuditReader(Protocol):
    """What the API reads (``cairn.audit.service.AuditLog``)."""

    def search(self, q: AuditQuery, page: Page) -> tuple[list[AuditEvent], int]: ...
    def get(self, event_id: str) -> AuditEvent | None: ...


def event_doc(event: AuditEvent) -> dict[str, Any]:
    try:
        details = json.loads(event.details or "{}")
    except ValueError:
        details = {}
    return {
        "id": event.id,
        "type": TYPE,
        "attributes": {
            "at": iso8601(event.at),
            "actor-id": event.actor_id,
            "actor-name": event.actor_name,
            "action": event.action,
            "subject": event.subject,
            "source-address": event.source_address or None,
            "outcome": event.outcome,
            "details": details if isinstance(details, dict) else {"value": details},
        },
        "links": {"self": f"/api/cairn/v1/audit-events/{event.id}"},
    }


def _time(request: Request, name: str) -> datetime | None:
    value = query(request, f"filter[{name}]")
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(
            f"filter[{name}] must be an ISO 8601 time like 2030-01-31T12:00:00Z, not {value!r}",
            parameter=f"filter[{name}]",
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def parse_query(request: Request) -> AuditQuery:
    for key in request.query_params:
        if key.startswith("filter[") and key[len("filter[") : -1] not in FILTERS:
            raise BadRequest(
                f"unknown filter {key!r}; the filters are "
                + ", ".join(f"filter[{f}]" for f in FILTERS),
                parameter=key,
            )
    q = AuditQuery(
        action=query(request, "filter[action]"),
        actor=query(request, "filter[actor]"),
        subject=query(request, "filter[subject]"),
        since=_time(request, "since"),
        until=_time(request, "until"),
        outcome=query(request, "filter[outcome]"),
    )
    if q.since is not None and q.until is not None and q.until <= q.since:
        raise BadRequest(
            "filter[until] must be later than filter[since]", parameter="filter[until]"
        )
    return q


def routes(log: AuditReader) -> list[Route]:
    """Mounted under ``/api/cairn/v1``."""

    def list_events(call: Call) -> Response:
        authz.require(call.caller, authz.SITE_READ, authz.SITE, doing="read the audit log of")
        q = parse_query(call.request)
        page = page_from(call.request)
        rows, total = log.search(q, page)
        return JsonApiResponse(
            {"data": [event_doc(e) for e in rows], "meta": pagination_meta(page, total)}
        )

    def show_event(call: Call) -> Response:
        authz.require(call.caller, authz.SITE_READ, authz.SITE, doing="read the audit log of")
        event = log.get(call.param("id"))
        if event is None:
            raise NotFound(_HIDDEN)
        return JsonApiResponse({"data": event_doc(event)})

    return [
        route("/audit-events", list_events, ["GET"]),
        route("/audit-events/{id}", show_event, ["GET"]),
    ]
