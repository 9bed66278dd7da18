"""``GET /api/v2/organizations/{org}/vcs-events``: the webhook deliveries an organization's
connections received and what became of them (HCP's VCS events), newest first.

One delivery is one event: ``level`` is ``error`` for a failed delivery, ``info`` otherwise;
``message`` is its outcome (what the ingest did: runs started, workspaces skipped and why) or,
before it is handled, its state. HCP's filters are served: ``filter[from]`` / ``filter[to]``
(ISO 8601 times of receipt), ``filter[oauth_client_external_ids]`` (comma-separated
connection IDs) and ``filter[levels]`` (``info``, ``error``). Needs
``org:manage-vcs-settings`` (the deliveries name repositories and people).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, func, select
from starlette.responses import Response
from starlette.routing import Route

from cairn import authz
from cairn.authz.permissions import ORG_MANAGE_VCS
from cairn.clock import iso8601
from cairn.db.engine import Database
from cairn.errors import Invalid
from cairn.organizations import store as orgs
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import JsonApiResponse, page_from, pagination_meta
from cairn.webhooks.model import VcsDelivery

LEVELS: Final = ("info", "error")
MAX_CLIENT_IDS: Final = 50

_DEFAULT_MESSAGE: Final = {
    "queued": "received; waiting to be handled",
    "processing": "being handled",
    "ignored": "received; cairn does not act on this event",
}


def vcs_event(d: VcsDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "type": "vcs-events",
        "attributes": {
            "created-at": iso8601(d.received_at),
            "level": "error" if d.state == "failed" else "info",
            "message": d.outcome or _DEFAULT_MESSAGE.get(d.state, d.state),
            "organization-id": d.organization_id,
            "suggested-action": None,
            # cairn's own: the delivery behind the event.
            "event": d.event,
            "action": d.action,
            "state": d.state,
            "provider": d.provider,
            "delivery-key": d.delivery_key,
            "attempts": d.attempts,
            "processed-at": iso8601(d.processed_at),
        },
        "relationships": {
            "oauth-client": {"data": {"id": d.oauth_client_id, "type": "oauth-clients"}},
        },
    }


def _time(call: Call, name: str) -> datetime | None:
    raw = call.request.query_params.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{name} must be an ISO 8601 time, like 2026-01-31T12:00:00Z") from None
    if value.tzinfo is None:
        raise Invalid(f"{name} must name its time zone (end it with Z for UTC)")
    return value


def _filters(call: Call) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    start, end = _time(call, "filter[from]"), _time(call, "filter[to]")
    if start is not None:
        where.append(VcsDelivery.received_at >= start)
    if end is not None:
        where.append(VcsDelivery.received_at <= end)
    raw_ids = call.request.query_params.get("filter[oauth_client_external_ids]", "")
    ids = [i.strip() for i in raw_ids.split(",") if i.strip()]
    if len(ids) > MAX_CLIENT_IDS:
        raise Invalid(f"filter[oauth_client_external_ids] names at most {MAX_CLIENT_IDS} IDs")
    if ids:
        where.append(VcsDelivery.oauth_client_id.in_(ids))
    raw_levels = call.request.query_params.get("filter[levels]", "")
    levels = {lv.strip() for lv in raw_levels.split(",") if lv.strip()}
    if levels - set(LEVELS):
        raise Invalid("filter[levels] takes info and/or error")
    if levels == {"error"}:
        where.append(VcsDelivery.state == "failed")
    elif levels == {"info"}:
        where.append(VcsDelivery.state != "failed")
    return where


def routes(db: Database) -> list[Route]:
    def list_events(call: Call) -> Response:
        page = page_from(call.request)
        where = _filters(call)
        with db.unit_of_work() as s:
            org = orgs.readable(s, call.caller, call.param("name"))
            authz.require(
                call.caller, ORG_MANAGE_VCS, orgs.target(org), doing="see the VCS events of"
            )
            base = select(VcsDelivery).where(VcsDelivery.organization_id == org.id, *where)
            total = s.scalar(select(func.count()).select_from(base.subquery())) or 0
            rows = s.scalars(
                base.order_by(VcsDelivery.received_at.desc(), VcsDelivery.id.desc())
                .offset(page.offset)
                .limit(page.size)
            ).all()
            data = [vcs_event(d) for d in rows]
        return JsonApiResponse({"data": data, "meta": pagination_meta(page, total)})

    return [route("/organizations/{name}/vcs-events", list_events, ["GET"])]
