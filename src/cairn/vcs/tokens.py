"""The single-flight token service: every forge call gets its token here (VCS-01..07, VCS-11).

A GitLab refresh kills the old pair the moment the forge issues the next one, and a refresh
token is single-use: two replicas refreshing one grant at once leave one of them with a dead
pair, and a strict server revokes the whole grant on the replay. So, for each token row:

- **lease** — whoever must refresh first takes the row's lease by a conditional UPDATE
  (``generation`` as read, lease free or lapsed); it works alike on SQLite and PostgreSQL and
  holds no connection during the forge call. Everyone else waits (``NOTIFY cairn_vcs_tokens``
  wakes the waiters of every replica, short polls are the backstop) for ``generation`` to move.
- **re-read inside the lease** — a replica that lost a race by a hair sees the new pair and
  skips the POST (VCS-02).
- **one POST** (``vcs.oauth``, never retried), then **compare-and-set** on ``generation``: the
  new pair, its expiry and ``generation + 1`` in one UPDATE, sealed under an aad naming that
  generation (VCS-03). A crash between the forge's answer and the commit leaves the old row
  and a lease that lapses; the next refresh presents the spent refresh token, gets
  ``invalid_grant`` and marks the row ``needs_reauth`` — consistent, never a mixed pair.
- **invalid_grant** (VCS-06) — re-read (after a short grace for a racer's commit): if the
  generation moved, a racer won and its pair is used (a "race recovered"); otherwise the grant
  is dead: ``needs_reauth`` once (conditional on the generation, with an audit event), never
  another POST until the connection is authorised again (``store_new_grant``).
- **forge unreachable** (VCS-07) — the outcome is unknown: the lease is kept a few seconds as
  a breaker (waiters fail at once instead of each POSTing in turn; a token with a minute or
  more left is still handed out), then the next caller tries; if the forge had rotated the
  pair, that attempt gets invalid_grant → needs_reauth.

Refresh-ahead (VCS-05): a token with less than 5 minutes left is refreshed by the caller; the
background job ``refresh_due`` refreshes those within 10 minutes so requests rarely wait.
GitHub App installation tokens are "refreshed" by minting one (1 h) under the same lease, so
one mint per window is shared by every replica. Personal/group access tokens are never
refreshed: an expired one marks the row ``needs_reauth`` with a message saying so.

Blocking: call from worker threads (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import httpx
from prometheus_client import Counter
from sqlalchemy import select, update

from cairn.audit.log import SYSTEM, record
from cairn.clock import Clock, as_utc
from cairn.crypto import Keyring
from cairn.db.engine import Database, affected
from cairn.db.notify import Subscriptions, notify
from cairn.errors import ApiError, Conflict, NotFound
from cairn.vcs import github_app, oauth
from cairn.vcs.github_app import GitHubApp
from cairn.vcs.model import (
    TOKEN_KINDS,
    OAuthClient,
    OAuthToken,
    access_aad,
    app_key_aad,
    refresh_aad,
    secret_aad,
)
from cairn.vcs.oauth import (
    ClientRejected,
    ForgeUnreachable,
    GrantInvalid,
    OAuthClientSecrets,
    TokenEndpointError,
    TokenPair,
)

log = logging.getLogger("cairn.vcs")

CHANNEL: Final = "cairn_vcs_tokens"
AHEAD: Final = timedelta(minutes=5)  # refresh in the caller when less remains
SWEEP_AHEAD: Final = timedelta(minutes=10)  # the background job refreshes within this
LEASE: Final = timedelta(seconds=30)  # > the token endpoint's timeout (15 s)
BREAKER: Final = timedelta(seconds=5)  # after an unreachable forge: fail fast this long
GRACE: Final = 2.0  # seconds an invalid_grant waits for a racer's commit
WAIT: Final = 45.0  # longest a caller waits for another's refresh
POLL: Final = 0.25  # short poll between notifications
SWEEP_BATCH: Final = 100
_BREAKER_HOLDER = "!unreachable"
# Tests only: sleep this many seconds after the forge answered, before the commit, so a test
# can kill the process there (VCS-03's crash case).
_CRASH_PAUSE_ENV = "CAIRN_TEST_VCS_PAUSE_BEFORE_COMMIT"


@dataclass(frozen=True)
class ForgeCredential:
    """What a forge client needs to act: the connection's URLs and a bearer token."""

    token_id: str
    kind: str
    service_provider: str
    api_url: str
    http_url: str
    token: str = field(repr=False)


class NeedsReauth(Conflict):
    """The connection's grant is gone (revoked, spent, or an expired access token): someone
    must authorise it again (or give a new token)."""

    code = "vcs-needs-reauth"


class ForgeError(ApiError):
    """The forge answered an error cairn cannot fix by itself (502, the forge's status in the
    message, never a token)."""

    status, title, code = 502, "Bad Gateway", "forge-error"

    def __init__(self, detail: str, *, forge_status: int | None = None) -> None:
        super().__init__(detail)
        self.forge_status = forge_status


class TokenMetrics:
    """VCS-11's counters. Not registered anywhere by default: ``app.py`` adds ``collectors``
    to the ``/metrics`` registry."""

    def __init__(self) -> None:
        self.refreshes = Counter(
            "cairn_vcs_token_refreshes_total",
            "Token endpoint calls (refresh or GitHub App mint) by outcome",
            ["outcome"],
            registry=None,
        )
        self.races_recovered = Counter(
            "cairn_vcs_token_races_recovered_total",
            "Refreshes that lost a race (invalid_grant or a moved generation) and used the "
            "winner's pair",
            registry=None,
        )
        self.needs_reauth = Counter(
            "cairn_vcs_token_needs_reauth_total",
            "Tokens marked needs_reauth",
            registry=None,
        )

    @property
    def collectors(self) -> list[Counter]:
        return [self.refreshes, self.races_recovered, self.needs_reauth]


@dataclass
class _Row:
    """One token row with its connection's columns (read in one query)."""

    id: str
    organization_id: str
    oauth_client_id: str
    generation: int
    status: str
    status_reason: str | None
    expires_at: datetime | None
    lease_until: datetime | None
    lease_holder: str | None
    access_sealed: bytes = field(repr=False)
    refresh_sealed: bytes | None = field(repr=False)
    installation_id: int | None
    kind: str
    service_provider: str
    api_url: str
    http_url: str
    key: str | None
    secret_sealed: bytes | None = field(repr=False)
    app_id: str | None
    app_key_sealed: bytes | None = field(repr=False)


class VcsTokens:
    """Access tokens for forge calls, refreshed at most once per grant and window across every
    replica (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        redirect_uri: Callable[[str], str],
        *,
        http: httpx.Client | None = None,
        lease: timedelta = LEASE,
        wait: float = WAIT,
        metrics: TokenMetrics | None = None,
    ) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock
        # The connection's OAuth callback URL (``vcs.wire.callback_path``), sent with refreshes.
        self._redirect_uri = redirect_uri
        self._http = http
        self._lease = lease
        self._wait = wait
        self.metrics = metrics or TokenMetrics()
        self._holder = f"{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._changed = threading.Condition()

    def __repr__(self) -> str:
        return f"VcsTokens(holder={self._holder!r})"

    # ---- waking waiters ------------------------------------------------------------------------

    def follow(self, listener: Subscriptions) -> None:
        """Wake this process's waiters when another replica stores a pair or a status."""
        listener.subscribe(CHANNEL, self._wake, on_connect=lambda: self._wake(""))

    def _wake(self, _payload: str) -> None:
        with self._changed:
            self._changed.notify_all()

    def _sleep(self, seconds: float) -> None:
        with self._changed:
            self._changed.wait(seconds)

    # ---- the public interface ------------------------------------------------------------------

    def credential(self, token_id: str) -> ForgeCredential:
        """A token with at least 5 minutes left, refreshing it if needed (once across every
        replica). Raises ``NeedsReauth`` when the grant is gone, ``ForgeUnreachable`` when the
        forge cannot be asked now, ``NotFound`` for an unknown token."""
        deadline = time.monotonic() + self._wait
        while True:
            row = self._read(token_id)
            now = self._clock.now()
            if row.status != "ok":
                raise self._needs_reauth_error(row)
            if _fresh(row, now, AHEAD):
                return self._credential(row)
            if not _refreshable(row):
                return self._unrefreshable(row, now)
            if self._take_lease(row, now):
                try:
                    return self._refresh_leased(row)
                except ForgeUnreachable:
                    if _usable(row, self._clock.now()):
                        return self._credential(row)  # the old token still has a while
                    raise
            if row.lease_holder == _BREAKER_HOLDER and _leased(row, now):
                if _usable(row, now):
                    return self._credential(row)
                raise ForgeUnreachable(
                    f"the forge's token endpoint for connection {row.oauth_client_id} did not "
                    "answer moments ago; try again shortly"
                )
            if time.monotonic() >= deadline:
                raise ForgeUnreachable(
                    f"another replica has been refreshing the token of connection "
                    f"{row.oauth_client_id} for too long; try again shortly"
                )
            self._sleep(POLL)

    def refresh_due(self) -> int:
        """Background job: refresh the tokens (OAuth pairs, App installation tokens) that
        expire within 10 minutes and whose lease is free; how many were refreshed. (An App
        installation never used yet has no token: its first caller mints one.)"""
        now = self._clock.now()
        with self._db.read_transaction() as conn:
            ids = list(
                conn.execute(
                    select(OAuthToken.id)
                    .join(OAuthClient, OAuthClient.id == OAuthToken.oauth_client_id)
                    .where(
                        OAuthToken.status == "ok",
                        (OAuthClient.kind == "github_app")
                        | (
                            OAuthClient.kind.not_in(sorted(TOKEN_KINDS))
                            & OAuthToken.refresh_token_sealed.is_not(None)
                        ),
                        OAuthToken.expires_at.is_not(None),
                        OAuthToken.expires_at < now + SWEEP_AHEAD,
                        (OAuthToken.lease_until.is_(None)) | (OAuthToken.lease_until < now),
                    )
                    .order_by(OAuthToken.expires_at)
                    .limit(SWEEP_BATCH)
                ).scalars()
            )
        done = 0
        for token_id in ids:
            try:
                row = self._read(token_id)
            except NotFound:
                continue
            now = self._clock.now()
            if row.status != "ok" or not _refreshable(row) or _fresh(row, now, SWEEP_AHEAD):
                continue
            if not self._take_lease(row, now):
                continue
            try:
                self._refresh_leased(row, SWEEP_AHEAD)
                done += 1
            except Exception as exc:  # one token's trouble must not stall the others
                log.warning(
                    "refreshing a VCS token ahead of expiry failed",
                    extra={"token_id": token_id, "error": type(exc).__name__},
                )
        return done

    def store_new_grant(self, token_id: str, pair: TokenPair) -> None:
        """A new authorisation's pair (the browser flow): ``generation + 1``, status ok, any
        lease dropped. Waiters wake and use it."""
        for _ in range(5):
            row = self._read(token_id)
            if self._store(row, pair, require_lease=False):
                return
        raise Conflict(f"the token {token_id} changed while storing its new grant; try again")

    # ---- reading -------------------------------------------------------------------------------

    def _read(self, token_id: str) -> _Row:
        t, c = OAuthToken, OAuthClient
        with self._db.read_transaction() as conn:
            r = conn.execute(
                select(
                    t.id,
                    t.organization_id,
                    t.oauth_client_id,
                    t.generation,
                    t.status,
                    t.status_reason,
                    t.expires_at,
                    t.lease_until,
                    t.lease_holder,
                    t.access_token_sealed,
                    t.refresh_token_sealed,
                    t.github_installation_id,
                    c.kind,
                    c.service_provider,
                    c.api_url,
                    c.http_url,
                    c.key,
                    c.secret_sealed,
                    c.app_id,
                    c.app_key_sealed,
                )
                .join(c, c.id == t.oauth_client_id)
                .where(t.id == token_id)
            ).one_or_none()
        if r is None:
            raise NotFound(f"OAuth token {token_id!r} does not exist")
        return _Row(
            id=r.id,
            organization_id=r.organization_id,
            oauth_client_id=r.oauth_client_id,
            generation=r.generation,
            status=r.status,
            status_reason=r.status_reason,
            expires_at=as_utc(r.expires_at),
            lease_until=as_utc(r.lease_until),
            lease_holder=r.lease_holder,
            access_sealed=r.access_token_sealed,
            refresh_sealed=r.refresh_token_sealed,
            installation_id=r.github_installation_id,
            kind=r.kind,
            service_provider=r.service_provider,
            api_url=r.api_url,
            http_url=r.http_url,
            key=r.key,
            secret_sealed=r.secret_sealed,
            app_id=r.app_id,
            app_key_sealed=r.app_key_sealed,
        )

    def _credential(self, row: _Row) -> ForgeCredential:
        token = self._keys.open(row.access_sealed, aad=access_aad(row.id, row.generation))
        return ForgeCredential(
            token_id=row.id,
            kind=row.kind,
            service_provider=row.service_provider,
            api_url=row.api_url,
            http_url=row.http_url,
            token=token.decode(),
        )

    # ---- the lease and the refresh -------------------------------------------------------------

    def _take_lease(self, row: _Row, now: datetime) -> bool:
        with self._db.write_transaction() as conn:
            won = affected(
                conn.execute(
                    update(OAuthToken)
                    .where(
                        OAuthToken.id == row.id,
                        OAuthToken.generation == row.generation,
                        OAuthToken.status == "ok",
                        (OAuthToken.lease_until.is_(None)) | (OAuthToken.lease_until < now),
                    )
                    .values(lease_until=now + self._lease, lease_holder=self._holder)
                )
            )
        return won == 1

    def _release(
        self, row: _Row, *, until: datetime | None = None, holder: str | None = None
    ) -> None:
        with self._db.write_transaction() as conn:
            conn.execute(
                update(OAuthToken)
                .where(OAuthToken.id == row.id, OAuthToken.lease_holder == self._holder)
                .values(lease_until=until, lease_holder=holder)
            )
            notify(conn, CHANNEL, row.id)
        self._wake("")

    def _refresh_leased(self, leased: _Row, margin: timedelta = AHEAD) -> ForgeCredential:
        """Holding the lease: re-read, call the forge once, store by compare-and-set."""
        try:
            row = self._read(leased.id)
        except BaseException:
            self._release(leased)
            raise
        now = self._clock.now()
        if row.generation != leased.generation or row.status != "ok" or _fresh(row, now, margin):
            self._release(row)
            if row.status != "ok":
                raise self._needs_reauth_error(row)
            return self._credential(row)
        try:
            pair = self._call_forge(row, now)
        except (GrantInvalid, ClientRejected) as exc:
            self.metrics.refreshes.labels("refused").inc()
            # A lapsed lease taken over: its holder may be about to commit the winning pair.
            took_over = leased.lease_holder not in (None, _BREAKER_HOLDER)
            return self._after_refusal(row, exc, grace=GRACE if took_over else 0.0)
        except ForgeUnreachable:
            self.metrics.refreshes.labels("unreachable").inc()
            self._release(row, until=self._clock.now() + BREAKER, holder=_BREAKER_HOLDER)
            raise
        except TokenEndpointError as exc:
            self.metrics.refreshes.labels("error").inc()
            self._release(row)
            raise ForgeError(str(exc)) from None
        except BaseException:
            self._release(row)
            raise
        self.metrics.refreshes.labels("ok").inc()
        pause = os.environ.get(_CRASH_PAUSE_ENV)
        if pause:
            time.sleep(float(pause))
        if not self._store(row, pair, require_lease=False):
            # Someone stored a newer pair meanwhile (a new authorisation): theirs stands.
            latest = self._read(row.id)
            self._release(latest)
            if latest.status != "ok":
                raise self._needs_reauth_error(latest)
            return self._credential(latest)
        return ForgeCredential(
            token_id=row.id,
            kind=row.kind,
            service_provider=row.service_provider,
            api_url=row.api_url,
            http_url=row.http_url,
            token=pair.access_token,
        )

    def _call_forge(self, row: _Row, now: datetime) -> TokenPair:
        if row.kind == "github_app":
            if row.app_id is None or row.app_key_sealed is None or row.installation_id is None:
                raise ClientRejected("the GitHub App connection has no App ID or private key")
            key = self._keys.open(row.app_key_sealed, aad=app_key_aad(row.oauth_client_id))
            app = GitHubApp(row.app_id, row.api_url, key.decode())
            # The App JWT is checked against GitHub's clock: signed at wall-clock time.
            token, expires_at = github_app.mint_installation_token(
                app, row.installation_id, http=self._http
            )
            return TokenPair(token, None, expires_at)
        if row.key is None or row.secret_sealed is None or row.refresh_sealed is None:
            raise ClientRejected("the connection has no OAuth application key and secret")
        secret = self._keys.open(row.secret_sealed, aad=secret_aad(row.oauth_client_id))
        refresh_token = self._keys.open(row.refresh_sealed, aad=refresh_aad(row.id, row.generation))
        client = OAuthClientSecrets(row.kind, row.http_url, row.key, secret.decode())
        redirect_uri = self._redirect_uri(row.oauth_client_id)
        return oauth.refresh(client, refresh_token.decode(), redirect_uri, now=now, http=self._http)

    def _after_refusal(
        self, row: _Row, exc: TokenEndpointError, *, grace: float
    ) -> ForgeCredential:
        """invalid_grant (or a refused client): a racer's pair if the generation moved, else
        ``needs_reauth`` once. A racer is waited for while it holds the lease (it took ours
        over and is mid-refresh: its answer decides), and for ``grace`` seconds when we took
        a lapsed lease over (its holder may be about to commit the winning pair)."""
        give_up = time.monotonic() + grace
        deadline = time.monotonic() + self._wait
        while True:
            latest = self._read(row.id)
            if latest.generation != row.generation:
                self._release(latest)
                if latest.status != "ok":
                    raise self._needs_reauth_error(latest)
                self.metrics.races_recovered.inc()
                log.info(
                    "a VCS token refresh lost a race; using the winner's pair",
                    extra={"token_id": row.id, "generation": latest.generation},
                )
                return self._credential(latest)
            if latest.status != "ok":
                raise self._needs_reauth_error(latest)  # the racer found the grant dead
            racing = latest.lease_holder not in (None, self._holder, _BREAKER_HOLDER) and _leased(
                latest, self._clock.now()
            )
            now_s = time.monotonic()
            if isinstance(exc, ClientRejected) or not (
                (racing and now_s < deadline) or now_s < give_up
            ):
                break
            self._sleep(POLL)
        reason = (
            "the forge refused the stored grant (revoked, expired or already used); "
            f"re-authorise connection {row.oauth_client_id}"
            if isinstance(exc, GrantInvalid)
            else f"{exc}; then re-authorise connection {row.oauth_client_id}"
        )
        self._mark_needs_reauth(row, reason[:500])
        raise NeedsReauth(reason)

    def _store(self, row: _Row, pair: TokenPair, *, require_lease: bool) -> bool:
        """Compare-and-set the new pair on ``row.generation``; True if it was stored."""
        generation = row.generation + 1
        now = self._clock.now()
        access = self._keys.seal(pair.access_token.encode(), aad=access_aad(row.id, generation))
        refresh = (
            self._keys.seal(pair.refresh_token.encode(), aad=refresh_aad(row.id, generation))
            if pair.refresh_token is not None
            else None
        )
        where = [OAuthToken.id == row.id, OAuthToken.generation == row.generation]
        if require_lease:
            where.append(OAuthToken.lease_holder == self._holder)
        with self._db.write_transaction() as conn:
            won = affected(
                conn.execute(
                    update(OAuthToken)
                    .where(*where)
                    .values(
                        access_token_sealed=access,
                        refresh_token_sealed=refresh,
                        expires_at=pair.expires_at,
                        generation=generation,
                        refreshed_at=now,
                        status="ok",
                        status_reason=None,
                        lease_until=None,
                        lease_holder=None,
                        **({"status_changed_at": now} if row.status != "ok" else {}),
                    )
                )
            )
            if won == 1:
                notify(conn, CHANNEL, row.id)
        if won == 1:
            self._wake("")
        return won == 1

    def _mark_needs_reauth(self, row: _Row, reason: str) -> None:
        """Status ``needs_reauth`` (conditional: once per generation) with an audit event."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            won = affected(
                s.execute(
                    update(OAuthToken)
                    .where(
                        OAuthToken.id == row.id,
                        OAuthToken.generation == row.generation,
                        OAuthToken.status == "ok",
                    )
                    .values(
                        status="needs_reauth",
                        status_reason=reason,
                        status_changed_at=now,
                        lease_until=None,
                        lease_holder=None,
                    )
                    .execution_options(synchronize_session=False)
                )
            )
            if won == 1:
                record(
                    s,
                    at=now,
                    actor=SYSTEM,
                    action="vcs.token.needs_reauth",
                    subject=row.id,
                    outcome="failure",
                    oauth_client_id=row.oauth_client_id,
                    organization_id=row.organization_id,
                    reason=reason,
                )
                notify(s, CHANNEL, row.id)
            s.commit()
        if won == 1:
            self.metrics.needs_reauth.inc()
            log.warning(
                "a VCS token needs re-authorisation",
                extra={"token_id": row.id, "oauth_client_id": row.oauth_client_id},
            )
        self._wake("")

    def _unrefreshable(self, row: _Row, now: datetime) -> ForgeCredential:
        """A personal/group access token (or an OAuth token without a refresh token): used as
        long as it has not expired; expired → ``needs_reauth`` with a message."""
        if row.expires_at is None or row.expires_at > now:
            return self._credential(row)
        if row.kind in TOKEN_KINDS:
            reason = (
                f"the access token of connection {row.oauth_client_id} expired on "
                f"{row.expires_at:%Y-%m-%d}; create a new token at the forge and update the "
                "connection's oauth-token-string"
            )
        else:
            reason = (
                f"the access token of connection {row.oauth_client_id} expired and the forge "
                "gave no refresh token; re-authorise the connection"
            )
        self._mark_needs_reauth(row, reason)
        raise NeedsReauth(reason)

    @staticmethod
    def _needs_reauth_error(row: _Row) -> NeedsReauth:
        return NeedsReauth(
            row.status_reason or f"re-authorise connection {row.oauth_client_id}: its grant is gone"
        )


def _fresh(row: _Row, now: datetime, margin: timedelta) -> bool:
    """Usable for at least ``margin``: a non-expiring token, or one expiring later."""
    if row.kind == "github_app" and row.expires_at is None:
        return False  # an installation row before its first mint holds no token
    return row.expires_at is None or row.expires_at - now >= margin


def _usable(row: _Row, now: datetime) -> bool:
    """While the token endpoint cannot be reached: a token with a minute or more left is
    still worth handing out (if the forge did rotate it, the forge call gets a 401)."""
    return row.expires_at is not None and row.expires_at - now >= timedelta(minutes=1)


def _refreshable(row: _Row) -> bool:
    if row.kind == "github_app":
        return True
    return row.kind not in TOKEN_KINDS and row.refresh_sealed is not None


def _leased(row: _Row, now: datetime) -> bool:
    return row.lease_until is not None and row.lease_until >= now


__all__ = [
    "CHANNEL",
    "ForgeCredential",
    "ForgeError",
    "ForgeUnreachable",
    "NeedsReauth",
    "TokenMetrics",
    "VcsTokens",
]
