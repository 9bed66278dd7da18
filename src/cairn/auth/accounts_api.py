"""HTTP for disabling and enabling people (``cairn.auth.accounts``), beside the site admin's
``/admin/users`` (mounted under ``/api/cairn/v1``)::

    POST /admin/users/{user}/actions/disable     200 {"data": {…, "disabled-at": "…"},
                                                      "meta": {"revoked-tokens": […],
                                                               "removed-idp-teams": […]}}
    POST /admin/users/{user}/actions/enable      200 {"data": {…, "disabled-at": null}}

``{user}`` is a user ID or a username. The shape follows the TFE admin API's
``/admin/users/:id/actions/suspend|unsuspend`` (an action on the resource, no body). Site
admins only: anyone else gets a 403.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cairn.auth.accounts import AccountChange
from cairn.authz.subject import Subject
from cairn.clock import iso8601
from cairn.tfeapi.http import Call, route

_ACTION_LIMIT = 4 * 1024  # no body is needed; a small one (e.g. "{}") is ignored


class Accounts(Protocol):
    """The service (``cairn.auth.accounts.UserAccounts``)."""

    def disable(self, caller: Subject, ref: str, source: str) -> AccountChange: ...
    def enable(self, caller: Subject, ref: str, source: str) -> AccountChange: ...


def account_doc(change: AccountChange) -> dict[str, Any]:
    user = change.user
    return {
        "data": {
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "site-admin": user.is_site_admin,
            "idp-issuer": user.idp_issuer,
            "disabled": user.disabled_at is not None,
            "disabled-at": iso8601(user.disabled_at),
        },
        "meta": {
            "changed": change.changed,
            "revoked-tokens": change.revoked_tokens,
            "removed-idp-teams": change.removed_teams,
        },
    }


def routes(accounts: Accounts) -> list[Route]:
    def disable(call: Call) -> Response:
        return JSONResponse(
            account_doc(accounts.disable(call.caller, call.param("user"), call.source))
        )

    def enable(call: Call) -> Response:
        return JSONResponse(
            account_doc(accounts.enable(call.caller, call.param("user"), call.source))
        )

    return [
        route("/admin/users/{user}/actions/disable", disable, ["POST"], limit=_ACTION_LIMIT),
        route("/admin/users/{user}/actions/enable", enable, ["POST"], limit=_ACTION_LIMIT),
    ]
