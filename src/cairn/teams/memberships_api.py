"""TFE API handlers for organization memberships (``organization-memberships``):
``GET /organization-memberships`` (the caller's own), ``GET/POST
/organizations/:org/organization-memberships`` (list, invite by ``email`` or — cairn's
addition, since cairn sends no email — ``username``), ``GET/DELETE
/organization-memberships/:id``. What a membership is: ``cairn.teams.memberships``."""

from __future__ import annotations

from typing import Any, Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.auth.account_update import check_email
from cairn.authz.subject import USER_TYPE, Subject
from cairn.errors import Invalid
from cairn.paging import Page
from cairn.teams.memberships import MembershipView
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import (
    Includes,
    JsonApiResponse,
    loader_by_id,
    page_from,
    pagination_meta,
    query,
)

TYPE = "organization-memberships"


class Memberships(Protocol):
    def list_organization(
        self,
        caller: Subject,
        org_name: str,
        page: Page,
        *,
        emails: list[str] | None = None,
        status: str | None = None,
        q: str | None = None,
    ) -> tuple[list[MembershipView], int]: ...
    def list_mine(self, caller: Subject, page: Page) -> tuple[list[MembershipView], int]: ...
    def get(self, caller: Subject, membership_id: str) -> MembershipView: ...
    def invite(
        self,
        caller: Subject,
        org_name: str,
        *,
        email: str | None,
        username: str | None,
        team_ids: list[str],
        source: str,
    ) -> MembershipView: ...
    def delete(self, caller: Subject, membership_id: str, source: str) -> None: ...


def membership_doc(v: MembershipView) -> dict[str, Any]:
    """HCP Terraform's document: ``status`` and ``email``; ``user`` (null for a pending
    invitation of someone without an account), ``organization`` and the member's ``teams``
    that the caller may see."""
    return {
        "id": v.id,
        "type": TYPE,
        "attributes": {"status": v.status, "email": v.email},
        "relationships": {
            "organization": {"data": {"type": "organizations", "id": v.org.name}},
            "user": {"data": {"type": USER_TYPE, "id": v.user.id} if v.user else None},
            "teams": {"data": [{"type": "teams", "id": t} for t in v.team_ids]},
        },
        "links": {"self": f"/api/v2/organization-memberships/{v.id}"},
    }


def _team_ids(call: Call, relationships: dict[str, Any]) -> list[str]:
    rel = relationships.get("teams")
    if rel is None:
        return []
    items = rel.get("data") if isinstance(rel, dict) else None
    if not isinstance(items, list):
        raise Invalid("relationship 'teams' must hold a list", pointer="/data/relationships/teams")
    found: list[str] = []
    for i, item in enumerate(items):
        ident = item.get("id") if isinstance(item, dict) else None
        if not isinstance(ident, str) or not ident:
            raise Invalid("each team needs its id", pointer=f"/data/relationships/teams/data/{i}")
        found.append(ident)
    return found


def routes(memberships: Memberships) -> list[Route]:
    """Mounted under ``/api/v2``."""

    def listing(call: Call, views: list[MembershipView], page: Page, total: int) -> Response:
        return call.respond(
            [membership_doc(v) for v in views],
            resource_type=TYPE,
            meta=pagination_meta(page, total),
        )

    def list_mine(call: Call) -> Response:
        page = page_from(call.request)
        views, total = memberships.list_mine(call.caller, page)
        return listing(call, views, page, total)

    def list_organization(call: Call) -> Response:
        page = page_from(call.request)
        emails = [e for e in (query(call.request, "filter[email]") or "").split(",") if e]
        views, total = memberships.list_organization(
            call.caller,
            call.param("org"),
            page,
            emails=emails or None,
            status=query(call.request, "filter[status]"),
            q=query(call.request, "q"),
        )
        return listing(call, views, page, total)

    def invite(call: Call) -> Response:
        doc = call.document(TYPE, allow_blank_type=True)
        email = doc.string("email", max_len=255)
        username = doc.string("username", max_len=100)
        if (email is None) == (username is None):
            raise Invalid(
                "name the person to invite with attributes.email or attributes.username "
                "(one of them)",
                pointer="/data/attributes/email",
            )
        if email is not None:
            email = check_email(email)
        view = memberships.invite(
            call.caller,
            call.param("org"),
            email=email,
            username=username,
            team_ids=_team_ids(call, doc.relationships),
            source=call.source,
        )
        return JsonApiResponse({"data": membership_doc(view)}, status_code=201)

    def show(call: Call) -> Response:
        return call.respond(membership_doc(memberships.get(call.caller, call.param("id"))))

    def remove(call: Call) -> Response:
        memberships.delete(call.caller, call.param("id"), call.source)
        return no_content()

    org_path = "/organizations/{org}/organization-memberships"
    return [
        route("/organization-memberships", list_mine, ["GET"]),
        route(org_path, list_organization, ["GET"]),
        route(org_path, invite, ["POST"]),
        route("/organization-memberships/{id}", show, ["GET"]),
        route("/organization-memberships/{id}", remove, ["DELETE"]),
    ]


def offer_includes(includes: Includes, memberships: Memberships) -> None:
    """``include=user,teams`` on memberships (HCP Terraform's list; users and teams are loaded
    by their domains, so only what the caller may read), and memberships for ``included``."""
    includes.offer(TYPE, "user", "teams")
    includes.loader(
        TYPE, loader_by_id(lambda caller, ident: membership_doc(memberships.get(caller, ident)))
    )
