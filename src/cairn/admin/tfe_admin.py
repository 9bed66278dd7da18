"""The TFE admin API for site admins (Terraform Enterprise's ``/api/v2/admin/…``), as far as
cairn has the parts:

* ``/admin/users``: list (``q``, ``filter[admin]``, ``filter[suspended]``), show, delete,
  ``actions/suspend`` / ``actions/unsuspend`` (cairn's disable/enable: suspending revokes the
  person's tokens, ``cairn.auth.accounts``), ``actions/grant_admin`` / ``actions/revoke_admin``.
* ``/admin/organizations``: list (``q``), show, update (``email``; cairn has no other admin
  setting of an organization: any other attribute is a 422 naming it), delete.
* ``/admin/workspaces``: list (``q``, ``filter[organization][name]``), show, delete.

Everyone but a site admin is answered 404 on every route (the admin API does not exist for
them: ``authz.require`` with ``SITE_READ`` first, then ``SITE_MANAGE`` for changes). Deleting
goes through the domain services, so the rules stay theirs (a locked workspace is not
deleted; an organization's hooks run). A person is deleted unless they hold a workspace lock
or are the last owner of an organization; a site admin cannot delete, suspend or demote
themselves; service accounts (organization and team tokens) are not users to delete here:
revoke their token.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.orm import Session
from starlette.responses import Response
from starlette.routing import Route

from cairn import authz
from cairn.audit.log import Actor, record
from cairn.auth.accounts import AccountChange
from cairn.auth.model import User
from cairn.authz.model import Team, TeamMembership
from cairn.authz.roles import OWNERS_TEAM
from cairn.authz.subject import USER_TYPE, Subject
from cairn.clock import Clock, iso8601
from cairn.db.engine import Database
from cairn.errors import BadRequest, Conflict, Invalid, NotFound
from cairn.organizations.model import Organization
from cairn.organizations.service import OrgUpdate
from cairn.paging import Page
from cairn.tfeapi.http import Call, no_content, route
from cairn.tfeapi.jsonapi import JsonApiResponse, page_from, pagination_meta, query
from cairn.workspaces.model import Workspace

_HIDDEN = "there is no such resource, or you are not allowed to see it"


class Accounts(Protocol):
    def disable(self, caller: Subject, ref: str, source: str) -> AccountChange: ...
    def enable(self, caller: Subject, ref: str, source: str) -> AccountChange: ...


class Organizations(Protocol):
    def update(self, caller: Subject, name: str, change: OrgUpdate) -> Organization: ...
    def delete(self, caller: Subject, name: str) -> None: ...


class Workspaces(Protocol):
    def delete(self, caller: Subject, ws_id: str, *, safe: bool) -> None: ...


def _site_read(caller: Subject) -> None:
    authz.require(caller, authz.SITE_READ, authz.SITE)


def _site_manage(caller: Subject, doing: str) -> None:
    _site_read(caller)
    authz.require(caller, authz.SITE_MANAGE, authz.SITE, doing=doing)


def _bool(call: Call, name: str) -> bool | None:
    value = query(call.request, name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false", parameter=name)
    return value == "true"


def _page(s: Session, stmt: Select[Any], order: Any, page: Page) -> tuple[list[Any], int]:
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    return list(s.scalars(stmt.order_by(order).offset(page.offset).limit(page.size))), int(total)


def user_doc(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "type": USER_TYPE,
        "attributes": {
            "username": u.username,
            "email": u.email,
            "avatar-url": "",
            "is-admin": u.is_site_admin,
            "is-suspended": u.disabled_at is not None,
            "is-service-account": u.is_service_account,
            "two-factor": {"enabled": False, "verified": False},
            "created-at": iso8601(u.created_at),
            "last-login-at": iso8601(u.last_login_at) if u.last_login_at else None,
        },
        "links": {"self": f"/api/v2/admin/users/{u.id}"},
    }


def org_doc(o: Organization) -> dict[str, Any]:
    return {
        "id": o.name,
        "type": "organizations",
        "attributes": {
            "name": o.name,
            "email": o.email,
            "external-id": o.id,
            "created-at": iso8601(o.created_at),
            "is-disabled": False,
            "access-beta-tools": False,
            "global-module-sharing": False,
            "global-provider-sharing": False,
        },
        "links": {"self": f"/api/v2/admin/organizations/{o.name}"},
    }


def ws_doc(ws: Workspace, org: Organization) -> dict[str, Any]:
    return {
        "id": ws.id,
        "type": "workspaces",
        "attributes": {
            "name": ws.name,
            "locked": ws.locked,
            "vcs-repo": None,
            "created-at": iso8601(ws.created_at),
        },
        "relationships": {
            "organization": {"data": {"type": "organizations", "id": org.name}},
            "current-run": {"data": None},
        },
        "links": {"self": f"/api/v2/admin/workspaces/{ws.id}"},
    }


class SiteAdmin:
    """The admin API's reads and the changes no domain service offers (user deletion and the
    site-admin flag), in the request's unit of work."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def users(
        self, caller: Subject, page: Page, q: str | None, admin: bool | None, suspended: bool | None
    ) -> tuple[list[User], int]:
        _site_read(caller)
        stmt = select(User).where(User.is_service_account.is_(False))
        if q:
            stmt = stmt.where(
                User.username.contains(q, autoescape=True) | User.email.contains(q, autoescape=True)
            )
        if admin is not None:
            stmt = stmt.where(User.is_site_admin.is_(admin))
        if suspended is not None:
            stmt = stmt.where(
                User.disabled_at.is_not(None) if suspended else User.disabled_at.is_(None)
            )
        with self._db.unit_of_work() as s:
            return _page(s, stmt, User.username, page)

    def user(self, caller: Subject, user_id: str) -> User:
        _site_read(caller)
        with self._db.unit_of_work() as s:
            return _person(s, user_id)

    def delete_user(self, caller: Subject, user_id: str, source: str) -> None:
        _site_manage(caller, "delete users of")
        with self._db.unit_of_work(write=True) as s:
            user = _person(s, user_id)
            if user.id == caller.id:
                raise Conflict("you cannot delete your own account")
            locked = s.scalar(
                select(Workspace.id).where(
                    Workspace.locked_by_kind == USER_TYPE, Workspace.locked_by_id == user.id
                )
            )
            if locked is not None:
                raise Conflict(
                    f"{user.username} holds the lock of workspace {locked}; unlock it first"
                )
            for team in s.scalars(
                select(Team)
                .join(TeamMembership, TeamMembership.team_id == Team.id)
                .where(TeamMembership.user_id == user.id, Team.name == OWNERS_TEAM)
            ):
                members = s.scalar(
                    select(func.count())
                    .select_from(TeamMembership)
                    .where(TeamMembership.team_id == team.id)
                )
                if (members or 0) <= 1:
                    raise Conflict(
                        f"{user.username} is the last owner of an organization; add another "
                        "owner first"
                    )
            # Tokens, memberships, grants and invitations go with the row (ON DELETE CASCADE).
            username = user.username
            s.execute(delete(User).where(User.id == user.id))
            record(
                s,
                at=self._clock.now(),
                actor=Actor(caller.id, caller.name, source),
                action="user.delete",
                subject=username,
            )
            s.commit()

    def set_admin(self, caller: Subject, user_id: str, source: str, *, admin: bool) -> User:
        _site_manage(caller, "change the site admins of")
        with self._db.unit_of_work(write=True) as s:
            user = _person(s, user_id)
            if user.id == caller.id and not admin:
                raise Conflict("you cannot revoke your own site-admin rights")
            s.execute(update(User).where(User.id == user.id).values(is_site_admin=admin))
            record(
                s,
                at=self._clock.now(),
                actor=Actor(caller.id, caller.name, source),
                action="user.grant_admin" if admin else "user.revoke_admin",
                subject=user.username,
            )
            s.commit()
            s.refresh(user)
            return user

    def organizations(
        self, caller: Subject, page: Page, q: str | None
    ) -> tuple[list[Organization], int]:
        _site_read(caller)
        stmt = select(Organization)
        if q:
            stmt = stmt.where(
                Organization.name.contains(q, autoescape=True)
                | Organization.email.contains(q, autoescape=True)
            )
        with self._db.unit_of_work() as s:
            return _page(s, stmt, Organization.name, page)

    def organization(self, caller: Subject, name: str) -> Organization:
        _site_read(caller)
        with self._db.unit_of_work() as s:
            org = s.scalar(select(Organization).where(Organization.name == name))
            if org is None:
                raise authz.not_found("organization", repr(name))
            return org

    def workspaces(
        self, caller: Subject, page: Page, q: str | None, org_name: str | None
    ) -> tuple[list[tuple[Workspace, Organization]], int]:
        _site_read(caller)
        stmt = select(Workspace, Organization).join(
            Organization, Organization.id == Workspace.organization_id
        )
        if q:
            stmt = stmt.where(
                or_(
                    Workspace.name.contains(q, autoescape=True),
                    Workspace.id == q,
                )
            )
        if org_name:
            stmt = stmt.where(Organization.name == org_name)
        with self._db.unit_of_work() as s:
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = s.execute(
                stmt.order_by(Organization.name, Workspace.name)
                .offset(page.offset)
                .limit(page.size)
            ).all()
            return [(w, o) for w, o in rows], int(total)

    def workspace(self, caller: Subject, ws_id: str) -> tuple[Workspace, Organization]:
        _site_read(caller)
        with self._db.unit_of_work() as s:
            row = s.execute(
                select(Workspace, Organization)
                .join(Organization, Organization.id == Workspace.organization_id)
                .where(Workspace.id == ws_id)
            ).first()
            if row is None:
                raise authz.not_found("workspace", repr(ws_id))
            return row[0], row[1]


def _person(s: Session, user_id: str) -> User:
    user = s.get(User, user_id)
    if user is None or user.is_service_account:
        raise NotFound(f"user {user_id!r} not found (organization and team tokens are not users)")
    return user


_ORG_SETTABLE = frozenset({"email"})


def routes(
    admin: SiteAdmin, accounts: Accounts, organizations: Organizations, workspaces: Workspaces
) -> list[Route]:
    """Mounted under ``/api/v2``."""

    def list_users(call: Call) -> Response:
        page = page_from(call.request)
        rows, total = admin.users(
            call.caller,
            page,
            query(call.request, "q"),
            _bool(call, "filter[admin]"),
            _bool(call, "filter[suspended]"),
        )
        return JsonApiResponse(
            {"data": [user_doc(u) for u in rows], "meta": pagination_meta(page, total)}
        )

    def show_user(call: Call) -> Response:
        return JsonApiResponse({"data": user_doc(admin.user(call.caller, call.param("id")))})

    def delete_user(call: Call) -> Response:
        admin.delete_user(call.caller, call.param("id"), call.source)
        return no_content()

    def suspend(call: Call) -> Response:
        _site_manage(call.caller, "suspend users of")
        user = admin.user(call.caller, call.param("id"))
        accounts.disable(call.caller, user.id, call.source)
        return JsonApiResponse({"data": user_doc(admin.user(call.caller, user.id))})

    def unsuspend(call: Call) -> Response:
        _site_manage(call.caller, "unsuspend users of")
        user = admin.user(call.caller, call.param("id"))
        accounts.enable(call.caller, user.id, call.source)
        return JsonApiResponse({"data": user_doc(admin.user(call.caller, user.id))})

    def grant_admin(call: Call) -> Response:
        user = admin.set_admin(call.caller, call.param("id"), call.source, admin=True)
        return JsonApiResponse({"data": user_doc(user)})

    def revoke_admin(call: Call) -> Response:
        user = admin.set_admin(call.caller, call.param("id"), call.source, admin=False)
        return JsonApiResponse({"data": user_doc(user)})

    def list_orgs(call: Call) -> Response:
        page = page_from(call.request)
        rows, total = admin.organizations(call.caller, page, query(call.request, "q"))
        return JsonApiResponse(
            {"data": [org_doc(o) for o in rows], "meta": pagination_meta(page, total)}
        )

    def show_org(call: Call) -> Response:
        return JsonApiResponse(
            {"data": org_doc(admin.organization(call.caller, call.param("org")))}
        )

    def update_org(call: Call) -> Response:
        _site_manage(call.caller, "change organizations of")
        doc = call.document("organizations", allow_blank_type=True)
        unknown = sorted(set(doc.attributes) - _ORG_SETTABLE)
        if unknown:
            raise Invalid(
                f"cairn has no admin setting {', '.join(unknown)} on organizations; only "
                f"{', '.join(sorted(_ORG_SETTABLE))} may be changed here",
                pointer=f"/data/attributes/{unknown[0]}",
            )
        org = admin.organization(call.caller, call.param("org"))
        changed = organizations.update(
            call.caller, org.name, OrgUpdate(email=doc.string("email", max_len=255))
        )
        return JsonApiResponse({"data": org_doc(changed)})

    def delete_org(call: Call) -> Response:
        _site_manage(call.caller, "delete organizations of")
        org = admin.organization(call.caller, call.param("org"))
        organizations.delete(call.caller, org.name)
        return no_content()

    def list_workspaces(call: Call) -> Response:
        page = page_from(call.request)
        rows, total = admin.workspaces(
            call.caller,
            page,
            query(call.request, "q"),
            query(call.request, "filter[organization][name]"),
        )
        return JsonApiResponse(
            {"data": [ws_doc(w, o) for w, o in rows], "meta": pagination_meta(page, total)}
        )

    def show_workspace(call: Call) -> Response:
        ws, org = admin.workspace(call.caller, call.param("id"))
        return JsonApiResponse({"data": ws_doc(ws, org)})

    def delete_workspace(call: Call) -> Response:
        _site_manage(call.caller, "delete workspaces of")
        ws, _ = admin.workspace(call.caller, call.param("id"))
        workspaces.delete(call.caller, ws.id, safe=False)
        return no_content()

    users = "/admin/users/{id}"
    return [
        route("/admin/users", list_users, ["GET"]),
        route(users, show_user, ["GET"]),
        route(users, delete_user, ["DELETE"]),
        route(users + "/actions/suspend", suspend, ["POST"]),
        route(users + "/actions/unsuspend", unsuspend, ["POST"]),
        route(users + "/actions/grant_admin", grant_admin, ["POST"]),
        route(users + "/actions/revoke_admin", revoke_admin, ["POST"]),
        route("/admin/organizations", list_orgs, ["GET"]),
        route("/admin/organizations/{org}", show_org, ["GET"]),
        route("/admin/organizations/{org}", update_org, ["PATCH"]),
        route("/admin/organizations/{org}", delete_org, ["DELETE"]),
        route("/admin/workspaces", list_workspaces, ["GET"]),
        route("/admin/workspaces/{id}", show_workspace, ["GET"]),
        route("/admin/workspaces/{id}", delete_workspace, ["DELETE"]),
    ]
