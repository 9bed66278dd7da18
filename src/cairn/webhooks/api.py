"""The webhook routes, mounted under ``/api/cairn/v1``.

- ``POST /vcs-hooks/{oauth_client_id}``: the receiver (public: the delivery's secret or
  signature is its credential, checked by ``webhooks.receiver``; body up to 25 MiB).
- ``GET /oauth-clients/{oauth_client_id}/webhook-status``: the hooks cairn registered (or
  failed to register) on the forge for that connection, by repository, with the webhook URL
  to give the forge by hand when registration is off; ``org:manage-vcs-settings``.
"""

from __future__ import annotations

from sqlalchemy import String, column, select, table
from starlette.responses import Response
from starlette.routing import Route

from cairn import authz
from cairn.authz.authorizer import Org
from cairn.authz.permissions import ORG_MANAGE_VCS
from cairn.clock import iso8601
from cairn.errors import NotFound
from cairn.organizations.model import Organization
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.jsonapi import JsonApiResponse
from cairn.webhooks.receiver import MAX_BODY, Receiver
from cairn.webhooks.registration import hook_statuses, webhook_url

_clients = table("oauth_clients", column("id", String), column("organization_id", String))


def routes(receiver: Receiver, *, public_url: str, register_hooks: bool) -> list[Route]:
    def webhook_status(call: Call) -> Response:
        client_id = call.param("oauth_client_id")
        with receiver.db.read_transaction() as conn:
            found = conn.execute(
                select(Organization.id, Organization.name)
                .join(_clients, _clients.c.organization_id == Organization.id)
                .where(_clients.c.id == client_id)
            ).first()
            hooks = hook_statuses(conn, client_id) if found is not None else []
        if found is None:
            raise NotFound(
                f"VCS connection {client_id} not found, or you are not allowed to see it"
            )
        authz.require(
            call.caller, ORG_MANAGE_VCS, Org(found.id, found.name), doing="see the webhooks of"
        )
        return JsonApiResponse(
            {
                "data": [
                    {
                        "type": "vcs-repo-hooks",
                        "id": f"{client_id}:{h.identifier}",
                        "attributes": {
                            "identifier": h.identifier,
                            "state": h.state,
                            "forge-hook-id": h.forge_hook_id,
                            "error": h.error,
                            "attempts": h.attempts,
                            "next-attempt-at": iso8601(h.next_attempt_at),
                            "updated-at": iso8601(h.updated_at),
                        },
                    }
                    for h in hooks
                ],
                "meta": {
                    "webhook-url": webhook_url(public_url, client_id),
                    "register-hooks": register_hooks,
                },
            }
        )

    return [
        route(
            "/vcs-hooks/{oauth_client_id}",
            receiver.receive,
            ["POST"],
            auth=None,
            limit=MAX_BODY,
        ),
        route("/oauth-clients/{oauth_client_id}/webhook-status", webhook_status, ["GET"]),
    ]
