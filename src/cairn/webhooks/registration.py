"""Registering cairn's webhook on the forge, once per (connection, repository).

When a workspace gets a repository on a connection that is not a GitHub App (an App's
deliveries already come to the App's own URL), ``record_repo_hook`` — a workspace
``check_settings`` callback registered in ``app.py`` after ``cairn.vcs``'s own check, inside the
workspace's transaction — adds a ``pending`` row to ``vcs_repo_hooks`` (one per connection and
repository, whichever workspace asked first; ``ON CONFLICT`` decides between two at once).

The worker's round then calls ``HookRegistrar.run``: each due row is claimed (a conditional
``UPDATE`` with a short lease, so one replica creates a given hook), the hook is created with
the connection's webhook URL and secret (``Forge.create_hook``) through the token of the
workspace that asked, and the forge's hook ID recorded — or the error, with the next try after
a growing delay (1 min … 6 h). A workspace saved again with a repository whose registration
failed asks for a try at once (a fixed token, say). ``CAIRN_VCS_REGISTER_HOOKS=false`` turns
the whole step off for forges that cannot reach cairn or where an admin adds hooks by hand.

``GET /api/cairn/v1/oauth-clients/{id}/webhook-status`` (``webhooks.api``) shows each row.
Hooks stay when the last workspace leaves a repository (deleting them is the admin's call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.orm import Session

from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.base import table_of
from cairn.db.engine import Database, affected
from cairn.errors import ApiError
from cairn.organizations.model import Organization
from cairn.vcs.model import OAuthClient, OAuthToken, webhook_secret_aad
from cairn.webhooks.model import VcsRepoHook, one_line
from cairn.workspaces.events import CheckSettings
from cairn.workspaces.model import Workspace

log = logging.getLogger("cairn.webhooks")

LEASE: Final = timedelta(minutes=2)
RETRY: Final = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
HOOKS_PATH: Final = "/api/cairn/v1/vcs-hooks"

_clients = table_of(OAuthClient)
_tokens = table_of(OAuthToken)


def webhook_url(public_url: str, oauth_client_id: str) -> str:
    """The URL a connection's forge posts its webhooks to."""
    return f"{public_url.rstrip('/')}{HOOKS_PATH}/{oauth_client_id}"


class HookForge(Protocol):
    """What registration needs of a forge client (``cairn.vcs.forges.Forge``)."""

    def create_hook(self, repo: str, url: str, secret: str) -> str: ...


ForgeFor = Callable[[str], HookForge]
"""A forge client acting with the OAuth token ``oauth_token_id`` (``forge_for(credential)``)."""


def record_repo_hook(clock: Clock) -> CheckSettings:
    """The workspace ``check_settings`` callback (see the module docstring)."""

    def check(s: Session, org: Organization, ws: Workspace) -> None:
        identifier = ws.vcs_identifier
        token_id = ws.vcs_oauth_token_id
        client_id = ws.vcs_oauth_client_id
        if not identifier or (client_id is None and token_id is None):
            return
        if client_id is None:
            client_id = s.execute(
                select(_tokens.c.oauth_client_id).where(_tokens.c.id == token_id)
            ).scalar()
        kind = s.execute(select(_clients.c.kind).where(_clients.c.id == client_id)).scalar()
        if client_id is None or kind is None or kind == "github_app":
            return
        now = clock.now()
        values: dict[str, Any] = {
            "oauth_client_id": client_id,
            "identifier": identifier,
            "organization_id": org.id,
            "oauth_token_id": token_id,
            "state": "pending",
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        t = table_of(VcsRepoHook)
        if s.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        stmt = insert(t).values(values)
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=["oauth_client_id", "identifier"],
                # A failed registration is tried again at once, with this workspace's token.
                set_={"not_before": None, "oauth_token_id": token_id, "updated_at": now},
                where=t.c.state == "failed",
            )
        )

    return check


@dataclass(frozen=True)
class HookStatus:
    identifier: str
    state: str
    forge_hook_id: str | None
    error: str | None
    attempts: int
    next_attempt_at: datetime | None
    updated_at: datetime


def hook_statuses(conn: Connection, oauth_client_id: str) -> list[HookStatus]:
    """The connection's hooks, by repository."""
    h = VcsRepoHook
    rows = conn.execute(
        select(
            h.identifier,
            h.state,
            h.forge_hook_id,
            h.error,
            h.attempts,
            h.not_before,
            h.updated_at,
        )
        .where(h.oauth_client_id == oauth_client_id)
        .order_by(h.identifier)
    ).all()
    return [
        HookStatus(
            r.identifier,
            r.state,
            r.forge_hook_id,
            r.error,
            r.attempts,
            r.not_before if r.state != "registered" else None,
            r.updated_at,
        )
        for r in rows
    ]


class HookRegistrar:
    """Creates pending hooks on their forges (a step of the worker's round)."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        forge_for: ForgeFor,
        public_url: str,
        *,
        enabled: bool = True,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock
        self._forge_for = forge_for
        self.public_url = public_url
        self.enabled = enabled

    def run(self) -> int:
        """Create every hook that is due; how many were registered."""
        if not self.enabled:
            return 0
        done = 0
        while (claimed := self._claim()) is not None:
            done += self._register(*claimed)
        return done

    # ---- one hook ---------------------------------------------------------------------------

    def _claim(self) -> tuple[str, str, str | None, bytes, int] | None:
        h = VcsRepoHook
        now = self._clock.now()
        due = and_(
            h.state.in_(("pending", "failed")),
            or_(h.not_before.is_(None), h.not_before <= now),
            or_(h.lease_until.is_(None), h.lease_until < now),
        )
        with self._db.unit_of_work(write=True) as s:
            pick = select(h.oauth_client_id, h.identifier).where(due).limit(1)
            if s.get_bind().dialect.name == "postgresql":
                pick = pick.with_for_update(skip_locked=True)
            row = s.execute(pick).first()
            if row is None:
                return None
            won = s.execute(
                update(h)
                .where(h.oauth_client_id == row[0], h.identifier == row[1], due)
                .values(lease_until=now + LEASE, attempts=h.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            if affected(won) != 1:  # taken meanwhile (SQLite cannot; PostgreSQL skips it)
                return None
            found = s.execute(
                select(h.oauth_token_id, h.attempts, _clients.c.webhook_secret_sealed)
                .join(_clients, _clients.c.id == h.oauth_client_id)
                .where(h.oauth_client_id == row[0], h.identifier == row[1])
            ).one()
            s.commit()
        return row[0], row[1], found[0], bytes(found[2]), found[1]

    def _register(
        self, client_id: str, identifier: str, token_id: str | None, sealed: bytes, attempt: int
    ) -> int:
        url = webhook_url(self.public_url, client_id)
        hook_id: str | None = None
        error: str | None = None
        try:
            if token_id is None:
                raise ApiError(
                    "no OAuth token of this connection is known to act on the repository; "
                    "save a workspace with this repository again"
                )
            secret = self._keyring.open(sealed, aad=webhook_secret_aad(client_id)).decode()
            hook_id = self._forge_for(token_id).create_hook(identifier, url, secret)
        except ApiError as exc:
            error = exc.detail
        except Exception as exc:
            log.exception(
                "creating a webhook on the forge failed",
                extra={"oauth_client_id": client_id, "repository": identifier},
            )
            error = f"{type(exc).__name__} (the details are in the server log)"
        now = self._clock.now()
        h = VcsRepoHook
        if hook_id is not None:
            values: dict[str, Any] = {
                "state": "registered",
                "forge_hook_id": one_line(str(hook_id), 64),
                "error": None,
                "not_before": None,
            }
        else:
            delay = RETRY[min(attempt, len(RETRY)) - 1]
            values = {
                "state": "failed",
                "error": one_line(f"creating the webhook failed: {error}"),
                "not_before": now + delay,
            }
        with self._db.unit_of_work(write=True) as s:
            s.execute(
                update(h)
                .where(
                    h.oauth_client_id == client_id,
                    h.identifier == identifier,
                    h.attempts == attempt,
                )
                .values(lease_until=None, updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
            s.commit()
        log.info(
            "webhook registration",
            extra={
                "oauth_client_id": client_id,
                "repository": identifier,
                "state": values["state"],
            },
        )
        return 1 if hook_id is not None else 0
