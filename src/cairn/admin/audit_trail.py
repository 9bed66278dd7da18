"""``GET /api/v2/organization/audit-trail``: an organization's audit trail in HCP Terraform's
shape, built on cairn's audit events (``cairn.audit``; the site-wide log stays at
``/api/cairn/v1/audit-events``).

As in HCP Terraform it is read with the **organization token** only (the organization is the
token's; any other caller is answered 404, as for a resource that is not there), and the
answer is plain JSON, not JSON:API: ``{"data": [events], "pagination": {"current_page",
"prev_page", "next_page", "total_pages", "total_count"}}``. ``since`` (ISO 8601) returns the
events after that moment; ``page[number]`` and ``page[size]`` (default and at most 1000, as
HCP Terraform) page through them, oldest first, so a collector polls with the time of the last
event it saw.

Which events are the organization's: those whose subject names it — ``<org>/…`` (workspaces,
teams, states, locks, roles, members), ``<org>: …`` (grants, team-project access) and the
id-tokens minted for its workspaces (``organization:<org>:…``). Events about people and
tokens are site-wide and stay in the site admins' log. An event is shown as HCP Terraform
shows one: ``resource.type`` and ``resource.action`` from cairn's action
(``state.version.create`` → ``state_version`` / ``create``), ``resource.id`` the subject,
``resource.meta`` the event's details, ``auth`` the actor.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cairn.audit.model import AuditEvent
from cairn.authz.subject import Subject
from cairn.db.engine import Database
from cairn.errors import BadRequest, NotFound
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import page_from, query

MAX_PAGE = 1000


def organization_of(caller: Subject) -> str:
    """The organization whose token the caller holds (404 for every other caller)."""
    if caller.kind != "service-account" or caller.team_id is not None:
        raise NotFound(
            "the audit trail is read with an organization token (HCP Terraform's rule): "
            "create one with POST /api/v2/organizations/<name>/authentication-token"
        )
    return caller.organization_id


def parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"since {value!r} is not an ISO 8601 time (like 2026-12-01T10:00:00Z)",
            parameter="since",
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def trail_event(event: AuditEvent, org_id: str) -> dict[str, Any]:
    """One event in HCP Terraform's audit-trail shape."""
    try:
        meta = json.loads(event.details or "{}")
    except ValueError:
        meta = {}
    parts = [p for p in event.action.split(".") if p]
    action = parts[-1] if parts else event.action
    kind = "_".join(p for p in parts[:-1] if p != "rbac") or event.action
    return {
        "id": event.id,
        "version": "0",
        "type": "Resource",
        "timestamp": event.at.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "auth": {
            "accessor_id": event.actor_id,
            "description": event.actor_name,
            "type": "Client" if event.actor_id else "System",
            "impersonator_id": None,
            "organization_id": org_id,
        },
        "request": {"id": event.id},
        "resource": {
            "id": event.subject,
            "type": kind,
            "action": action,
            "meta": (meta or None)
            if event.outcome == "success"
            else {**meta, "outcome": event.outcome},
        },
    }


class AuditTrail:
    def __init__(self, db: Database) -> None:
        self._db = db

    def events(
        self, caller: Subject, since: datetime | None, page: Page
    ) -> tuple[list[dict[str, Any]], int]:
        org_id = organization_of(caller)
        with self._db.unit_of_work() as s:
            org = s.get(Organization, org_id)
            if org is None:
                raise NotFound("the organization of this token no longer exists")
            name = org.name
            stmt = select(AuditEvent).where(
                or_(
                    AuditEvent.subject.startswith(f"{name}/", autoescape=True),
                    AuditEvent.subject.startswith(f"{name}: ", autoescape=True),
                    AuditEvent.subject.startswith(f"organization:{name}:", autoescape=True),
                )
            )
            if since is not None:
                stmt = stmt.where(AuditEvent.at > since)
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = s.scalars(
                stmt.order_by(AuditEvent.at, AuditEvent.id).offset(page.offset).limit(page.size)
            )
            return [trail_event(e, org_id) for e in rows], int(total)


def routes(trail: AuditTrail) -> list[Route]:
    """Mounted under ``/api/v2``."""

    def audit_trail(call: Call) -> Response:
        page = page_from(call.request, default_size=MAX_PAGE, max_size=MAX_PAGE)
        since = parse_since(query(call.request, "since"))
        data, total = trail.events(call.caller, since, page)
        pages = max(1, -(-total // page.size))
        return JSONResponse(
            {
                "data": data,
                "pagination": {
                    "current_page": page.number,
                    "prev_page": page.number - 1 if page.number > 1 else None,
                    "next_page": page.number + 1 if page.number < pages else None,
                    "total_pages": pages,
                    "total_count": total,
                },
            }
        )

    return [route("/organization/audit-trail", audit_trail, ["GET"])]
