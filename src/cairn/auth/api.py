"""TFE API handlers for the calling user (``account/details``) and users by id.

``routes(users)`` takes the user reader as a protocol (``cairn.auth.users.SqlUsers``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from starlette.responses import Response
from starlette.routing import Route

from cairn.auth.model import User
from cairn.authz.subject import USER_TYPE, Subject
from cairn.errors import NotFound
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import Includes, JsonApiResponse, Resource


def user_doc(user: User, *, me: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "username": user.username,
        "is-service-account": user.is_service_account,
        "is-site-admin": user.is_site_admin,
        "avatar-url": "",
        "v2-only": True,
        "two-factor": {"enabled": False, "verified": False},
        "permissions": {
            "can-create-organizations": user.is_site_admin,
            "can-change-email": me,
            "can-change-username": False,
            "can-manage-user-tokens": me and not user.is_service_account,
        },
    }
    if me:
        attrs["email"] = user.email
        attrs["unconfirmed-email"] = None
    return {
        "id": user.id,
        "type": USER_TYPE,
        "attributes": attrs,
        "links": {"self": f"/api/v2/users/{user.id}"},
    }


class Users(Protocol):
    """Where the handlers read users."""

    def get(self, user_id: str) -> User | None: ...


def offer_includes(includes: Includes, users: Users) -> None:
    """Users for ``included`` (e.g. ``include=created_by``, ``locked_by``, a team's
    ``users``): every user is readable by any caller, as ``GET /users/:id`` is."""

    def load(caller: Subject, ids: Sequence[str]) -> Iterable[Resource]:
        for user_id in ids:
            user = users.get(user_id)
            if user is not None:
                yield user_doc(user, me=user.id == caller.id)

    includes.loader(USER_TYPE, load)


def routes(users: Users) -> list[Route]:
    """Mounted under ``/api/v2``."""

    def _user(user_id: str) -> User:
        user = users.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found")
        return user

    def account_details(call: Call) -> Response:
        user = _user(call.caller.id)
        return JsonApiResponse({"data": user_doc(user, me=True)})

    def show_user(call: Call) -> Response:
        user = _user(call.param("id"))
        return JsonApiResponse({"data": user_doc(user, me=user.id == call.caller.id)})

    return [
        route("/account/details", account_details, ["GET"]),
        route("/users/{id}", show_user, ["GET"]),
    ]
