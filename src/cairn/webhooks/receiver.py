"""The webhook receiver: ``POST /api/cairn/v1/vcs-hooks/{oauth_client_id}``, one URL per
connection.

What a request does, in order (one short transaction; no forge call and no token work, so a
burst is acknowledged in milliseconds whatever state the connection's token is in — VCS-08):

1. the body is read up to ``MAX_BODY`` (25 MiB, GitHub's own cap on payloads; larger: 413);
2. the connection is read (unknown: 404) and the delivery verified **before anything parses
   it**: GitLab's ``X-Gitlab-Token`` must equal the connection's webhook secret, GitHub's
   ``X-Hub-Signature-256`` must be ``sha256=`` + the hex HMAC-SHA256 of the raw body under it;
   both compared in constant time (``hmac.compare_digest``). Missing or wrong: 401, nothing
   written;
3. the body must be a JSON object (else 400, nothing written) — parsed only for its
   ``action``; the ingest reads the rest later;
4. the delivery is recorded under its key (GitHub ``X-GitHub-Delivery``; GitLab
   ``Idempotency-Key``, else ``X-Gitlab-Event-UUID``; a forge sending neither gets the body's
   SHA-256, so an identical resend is still one delivery). A key seen before on this connection
   is a redelivery: 200 with the first delivery's ID, nothing new;
5. events cairn acts on (GitLab ``Push Hook``, ``Tag Push Hook``, ``Merge Request Hook``;
   GitHub ``push``, ``pull_request``) are ``queued`` (202) and the worker is woken (``NOTIFY
   cairn_vcs`` for other replicas, in the transaction; this process's worker after the
   commit). Any other event (GitHub's ``ping`` when a hook is created, issues, stars…) is
   recorded ``ignored`` without its body (200), so the deliveries list shows the hook reached
   cairn.

A connection whose token needs re-authorisation still receives: the ingest fails such a
delivery with an outcome saying so.

Unsealed webhook secrets are cached for ``SecretCache.TTL`` seconds, keyed by the connection
*and its sealed value*: a changed secret (or a connection deleted and made again) never matches
a cached entry, and a burst of deliveries opens the sealed value once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import event
from starlette.responses import Response

from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.engine import Database
from cairn.db.notify import notify
from cairn.errors import BadRequest, NotFound, Unauthorized
from cairn.tfeapi.http import Call
from cairn.tfeapi.jsonapi import JsonApiResponse
from cairn.vcs.model import webhook_secret_aad
from cairn.webhooks import store
from cairn.webhooks.model import MAX_KEY
from cairn.webhooks.store import Receiving

log = logging.getLogger("cairn.webhooks")

CHANNEL: Final = "cairn_vcs"
MAX_BODY: Final = 25 * 1024 * 1024
QUEUED_EVENTS: Final = {
    "gitlab": frozenset({"Push Hook", "Tag Push Hook", "Merge Request Hook"}),
    "github": frozenset({"push", "pull_request"}),
}
_MAX_EVENT = 64
# Where each forge puts its delivery ID: GitHub's stays the same on a redelivery, as does
# GitLab's Idempotency-Key (GitLab 17+) across retries; older GitLab sends only the event UUID.
_KEY_HEADERS: Final = {
    "github": ("x-github-delivery",),
    "gitlab": ("idempotency-key", "x-gitlab-event-uuid"),
}


class SecretCache:
    """Unsealed webhook secrets of recent connections (see the module docstring). Thread-safe;
    its repr shows no secret."""

    TTL: Final = 300.0  # seconds an unsealed secret stays in memory
    MAX_ENTRIES: Final = 10_000

    def __init__(self, keyring: Keyring, *, ttl: float = TTL) -> None:
        self._keyring = keyring
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[bytes, bytes, float]] = {}
        self.opened = 0  # how many times a sealed secret was opened (tests, benchmarks)

    def __repr__(self) -> str:
        return f"SecretCache(<{len(self._entries)} entries>)"

    def secret(self, client: Receiving) -> bytes:
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(client.id)
        if found is not None and found[0] == client.webhook_secret_sealed and found[2] > now:
            return found[1]
        secret = self._keyring.open(client.webhook_secret_sealed, aad=webhook_secret_aad(client.id))
        with self._lock:
            self.opened += 1
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[client.id] = (client.webhook_secret_sealed, secret, now + self._ttl)
        return secret


def verify(client: Receiving, secret: bytes, headers: Mapping[str, str], raw: bytes) -> None:
    """Raise Unauthorized unless the delivery carries the connection's secret (GitLab) or a
    valid signature of ``raw`` under it (GitHub)."""
    if client.provider == "gitlab":
        token = headers.get("x-gitlab-token")
        if token is None:
            raise Unauthorized(
                "the X-Gitlab-Token header is missing: set the webhook's secret token to this "
                "connection's webhook secret"
            )
        if not hmac.compare_digest(token.encode("latin-1", "replace"), secret):
            raise Unauthorized(
                "the X-Gitlab-Token header does not match this connection's webhook secret"
            )
        return
    signature = headers.get("x-hub-signature-256")
    if signature is None:
        raise Unauthorized(
            "the X-Hub-Signature-256 header is missing: give the webhook this connection's "
            "webhook secret so GitHub signs its deliveries"
        )
    expected = b"sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(signature.strip().lower().encode("latin-1", "replace"), expected):
        raise Unauthorized(
            "the X-Hub-Signature-256 header is not the signature of this body under this "
            "connection's webhook secret"
        )


def delivery_key(provider: str, headers: Mapping[str, str], raw: bytes) -> str:
    """The forge's ID of this delivery (a redelivery keeps it), or the body's SHA-256."""
    names = _KEY_HEADERS[provider]
    for name in names:
        value = headers.get(name)
        if value is not None and value.strip():
            key = value.strip()
            if len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
                raise BadRequest(
                    f"the {name} header must be at most {MAX_KEY} printable ASCII characters"
                )
            return key
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def event_name(provider: str, headers: Mapping[str, str]) -> str:
    header = "X-GitHub-Event" if provider == "github" else "X-Gitlab-Event"
    value = headers.get(header)
    if value is None or not value.strip():
        raise BadRequest(f"the {header} header is missing: cairn cannot tell what happened")
    name = value.strip()
    if len(name) > _MAX_EVENT or not name.isascii() or not name.isprintable():
        raise BadRequest(f"the {header} header is not an event name cairn knows")
    return name


def payload_action(provider: str, raw: bytes) -> str | None:
    """Parse the verified body: a JSON object, or BadRequest. Returns its action (GitHub's
    ``action``, GitLab's ``object_attributes.action``) when it has one."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the webhook body is not JSON; nothing was recorded") from None
    if not isinstance(payload, dict):
        raise BadRequest("the webhook body is not a JSON object; nothing was recorded")
    action: Any = payload.get("action")
    if provider == "gitlab":
        attributes = payload.get("object_attributes")
        action = attributes.get("action") if isinstance(attributes, dict) else None
    if isinstance(action, str) and action and len(action) <= _MAX_EVENT:
        return action
    return None


@dataclass
class Receiver:
    """The handler of the webhook route (wired by ``webhooks.api.routes``)."""

    db: Database
    clock: Clock
    secrets: SecretCache
    wake: Callable[[], None]  # this process's worker, once a queued delivery has committed

    def receive(self, call: Call) -> Response:
        client_id = call.param("oauth_client_id")
        # One transaction on the request's connection (a second, nested writer would hold two
        # pooled connections per request on SQLite: a burst could exhaust the pool).
        with self.db.unit_of_work(write=True) as s:
            client = store.connection(s.connection(), client_id)
            if client is None:
                raise NotFound(
                    f"VCS connection {client_id} not found: the webhook's URL names a "
                    "connection that does not exist (any more); copy the URL again from the "
                    "workspace's VCS settings"
                )
            headers = call.request.headers
            verify(client, self.secrets.secret(client), headers, call.raw)
            name = event_name(client.provider, headers)
            key = delivery_key(client.provider, headers, call.raw)
            action = payload_action(client.provider, call.raw)
            queued = name in QUEUED_EVENTS[client.provider]
            row = store.record(
                s,
                client,
                delivery_key=key,
                event=name,
                action=action,
                body=call.raw if queued else b"",
                state="queued" if queued else "ignored",
                now=self.clock.now(),
            )
            if row.created and queued:
                notify(s, CHANNEL, client.id)
                event.listen(s, "after_commit", lambda _s: self.wake(), once=True)
            s.commit()
        if not row.created:
            status, detail = 200, "already received: this delivery was recorded before"
        elif queued:
            status, detail = 202, "queued"
        else:
            status, detail = 200, f"ignored: cairn does not act on {name} events"
        log.info(
            "webhook received",
            extra={
                "oauth_client_id": client.id,
                "delivery_id": row.id,
                "vcs_event": name,
                "state": row.state,
                "new": row.created,
            },
        )
        return JsonApiResponse(
            {
                "data": {
                    "type": "vcs-deliveries",
                    "id": row.id,
                    "attributes": {"event": name, "state": row.state},
                },
                "meta": {"detail": detail},
            },
            status_code=status,
        )
