"""The workload-identity issuer of one cairn process.

It keeps, in memory, everything the public endpoints serve (the discovery document and the
JWKS, as bytes) and the opened active key. The cache is dropped when PostgreSQL notifies a
rotation (``follow``: the channel ``cairn_oidc_keys`` on the process's ``cairn.db.notify``
listener), and rebuilt at least every ``cache_ttl`` (the backstop when the listener is down)
and whenever a retired key's publication window ends. Requests never wait for the database
to serve discovery or the JWKS: a refresh that fails keeps the last good documents.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.permissions import RUN_APPLY, RUN_PLAN, WORKSPACE_READ
from cairn.authz.subject import Subject
from cairn.clock import Clock
from cairn.db.base import table_of
from cairn.db.engine import Database
from cairn.db.notify import Subscriptions
from cairn.errors import Conflict, Invalid, NotFound, SealError, Unavailable
from cairn.identity import discovery, lifecycle, tokens
from cairn.identity.errors import KeyMaterialError, KeySetCorrupt, RotationConflict
from cairn.identity.keys import SigningKey
from cairn.identity.plan import Plan
from cairn.identity.store import NOTIFY_CHANNEL, KeyStore
from cairn.organizations.model import Organization, Project
from cairn.workspaces.model import Workspace

log = logging.getLogger("cairn.identity")
_RUN_ID = re.compile(r"^run-[A-Za-z0-9]{1,40}$")

_ws = table_of(Workspace)
_org = table_of(Organization)
_prj = table_of(Project)
# What a token names, in one Core select (no entities): the workspace, its organization and
# (outer join: checked after the caller's rights, as before) its project.
_PLACE = (
    select(_org.c.id, _org.c.name, _ws.c.id, _ws.c.name, _prj.c.id, _prj.c.name)
    .select_from(
        _ws.join(_org, _org.c.id == _ws.c.organization_id).outerjoin(
            _prj, _prj.c.id == _ws.c.project_id
        )
    )
    .where(_ws.c.id == bindparam("ws_id"))
)


class Place(NamedTuple):
    """A workspace with its organization and project, by ID and current name, as read for a
    mint (``Issuer.locate``); the project is None when it no longer exists."""

    organization_id: str
    organization_name: str
    workspace_id: str
    workspace_name: str
    project_id: str | None
    project_name: str | None

    @property
    def target(self) -> authz.Ws:
        """The workspace as the target of an access check."""
        return authz.Ws(
            self.organization_id,
            self.organization_name,
            self.workspace_id,
            self.workspace_name,
            self.project_id,
        )


@dataclass(frozen=True)
class _Snapshot:
    keys: list[SigningKey]
    discovery_doc: discovery.Document
    jwks_doc: discovery.Document
    signer: tokens.Signer | None
    loaded_at: datetime
    stale_at: datetime


@dataclass(frozen=True)
class Minted:
    token: str
    expires_at: datetime
    run_id: str
    jti: str
    kid: str


class Issuer:
    def __init__(
        self,
        db: Database,
        store: KeyStore,
        clock: Clock,
        policy: lifecycle.RotationPolicy,
        issuer_url: str,
        cache_ttl: timedelta,
    ) -> None:
        self._db = db
        self._store = store
        self._clock = clock
        self.policy = policy
        self.issuer_url = issuer_url
        self._cache_ttl = cache_ttl
        self._lock = threading.Lock()
        self._snap: _Snapshot | None = None
        self._generation = 0

    # ---- the cache ------------------------------------------------------------------------

    def ensure_keys(self) -> None:
        """Create the first key set on an empty database. Several replicas may race here: the
        unique indexes let one win; the others find its keys."""
        if self._store.load():
            return
        now = self._clock.now()
        try:
            self._store.apply(lifecycle.initial(now, self.policy), actor=_system(), at=now)
        except RotationConflict:
            log.info("another replica created the first signing keys")

    def open_active_key(self) -> None:
        """Open the active key's seal now (raises SealError/KeyMaterialError if it cannot)."""
        self._store.open_active()

    def refresh(self) -> _Snapshot:
        """Rebuild the in-memory documents and signer from the database."""
        with self._lock:
            generation = self._generation
        try:
            keys, private = self._store.open_active()
        except (SealError, KeyMaterialError) as exc:
            # Serve the public keys anyway; minting answers 503 until an emergency rotation.
            log.error("the active signing key cannot be opened", extra={"error": str(exc)})
            keys, private = self._store.load(), None
        now = self._clock.now()
        active = next((key for key in keys if key.state == "active"), None)
        signer = tokens.Signer(active, private) if active and private is not None else None
        algs = sorted({key.alg for key in lifecycle.published(keys, now)} | {self.policy.alg})
        stale_at = now + self._cache_ttl
        ends = lifecycle.jwks_valid_until(keys, now)
        if ends is not None:
            stale_at = min(stale_at, ends)
        snap = _Snapshot(
            keys=keys,
            discovery_doc=discovery.openid_configuration(self.issuer_url, signing_algs=algs),
            jwks_doc=discovery.jwks(keys, now),
            signer=signer,
            loaded_at=now,
            stale_at=stale_at,
        )
        with self._lock:
            # A notification that arrived while loading makes this snapshot stale at once.
            if generation != self._generation:
                snap = _Snapshot(**{**snap.__dict__, "stale_at": now})
            self._snap = snap
        return snap

    def follow(self, subscriptions: Subscriptions) -> None:
        """Drop the cache whenever another replica notifies a rotation, and when the
        listening connection is (re)opened (a notification may have been missed)."""
        subscriptions.subscribe(
            NOTIFY_CHANNEL,
            lambda payload: self.invalidate(f"notified by another replica ({payload})"),
            on_connect=lambda: self.invalidate("listener (re)connected"),
        )

    def invalidate(self, reason: str = "") -> None:
        """Drop the cached documents and signer (on NOTIFY, or after a local rotation)."""
        with self._lock:
            self._generation += 1
            if self._snap is not None:
                self._snap = _Snapshot(**{**self._snap.__dict__, "stale_at": self._clock.now()})
        log.info("signing-key cache invalidated", extra={"reason": reason})

    def snapshot(self) -> _Snapshot:
        snap = self._snap
        if snap is None or snap.stale_at <= self._clock.now():
            return self.refresh()
        return snap

    def cached(self) -> _Snapshot | None:
        """What the public endpoints serve: never loads (the refresher task does)."""
        return self._snap

    def needs_refresh(self) -> bool:
        snap = self._snap
        return snap is None or snap.stale_at <= self._clock.now()

    def refresh_if_stale(self) -> None:
        """The refresher's step (a background job): rebuild the documents when they are stale
        (TTL, notification, a retired key leaving the JWKS). A failed refresh raises and the
        last good documents stay served."""
        if self.needs_refresh():
            self.refresh()

    # ---- minting ----------------------------------------------------------------------------

    def locate(self, ws_id: str) -> Place | None:
        """The workspace a token is asked for, read in the unit of work in progress (on the
        mint route, the job's transaction that authenticated the caller); None when there is
        no such workspace. No access check: ``mint`` does it."""
        with self._db.read_transaction() as conn:
            return self.locate_in(conn, ws_id)

    @staticmethod
    def locate_in(conn: Connection, ws_id: str) -> Place | None:
        """``locate`` in the transaction of ``conn``."""
        row = conn.execute(_PLACE, {"ws_id": ws_id}).first()
        return None if row is None else Place(*row)

    def mint(
        self,
        caller: Subject,
        ws_id: str,
        place: Place | None,
        *,
        audience: str | list[str],
        phase: str,
        ttl: timedelta,
        run_id: str | None,
        source_address: str,
    ) -> Minted:
        """Sign a token for the workspace ``ws_id`` (``place``, from ``locate``). Its audit
        event is recorded in the unit of work in progress; on the audited lane (the mint
        route's executor) it is committed with those of concurrent mints before the token is
        answered."""
        # Not found and not readable answer alike, and name the ID asked for: the target's
        # label (its organization and name) is only for those who may read it.
        if place is None or not authz.allowed(caller, WORKSPACE_READ, target := place.target):
            raise authz.not_found("workspace", repr(ws_id))
        if phase not in tokens.RUN_PHASES:  # speculative_plan is for cairn's runs only
            raise Invalid("run_phase must be 'plan' or 'apply'", pointer="/run_phase")
        needed = RUN_PLAN if phase == "plan" else RUN_APPLY
        authz.require(caller, needed, target, doing=f"mint a {phase} token for")
        if place.project_id is None or place.project_name is None:
            raise NotFound("the workspace's project no longer exists")
        if run_id is not None and not _RUN_ID.fullmatch(run_id):
            raise Invalid("run_id must look like run-<letters and digits>", pointer="/run_id")
        run_id = run_id or ids.new_id("run")
        return self._sign(
            None,
            place,
            audience=audience,
            phase=phase,  # narrowed to RUN_PHASES above
            speculative=None,
            ttl=ttl,
            run_id=run_id,
            actor=Actor(caller.id, caller.name, source_address),
        )

    def mint_for_job(
        self,
        s: Session,
        place: Place,
        *,
        audience: str,
        phase: tokens.TokenPhase,
        speculative: bool,
        ttl: timedelta,
        run_id: str,
        actor: Actor,
        config: str,
    ) -> Minted:
        """Sign a token for one phase of a cairn run (the agent protocol's workload-identity
        call): no access check here, the caller's job token already names the run, its
        workspace and phase. ``cairn_run_speculative`` is always present; ``phase`` is
        ``speculative_plan`` for a speculative plan under ``distinct_subject``. The audit event
        (``oidc.token.mint`` with the ``jti``, never the token) is recorded in ``s``'s
        transaction, which the caller commits before answering."""
        return self._sign(
            s,
            place,
            audience=audience,
            phase=phase,
            speculative=speculative,
            ttl=ttl,
            run_id=run_id,
            actor=actor,
            config=config,
        )

    def _sign(
        self,
        s: Session | None,
        place: Place,
        *,
        audience: str | list[str],
        phase: tokens.TokenPhase,
        speculative: bool | None,
        ttl: timedelta,
        run_id: str,
        actor: Actor,
        **audited: str,
    ) -> Minted:
        """Sign a workload token for ``place`` with the active key and audit it
        (``oidc.token.mint``: its ``jti``, never the token) in ``s``'s transaction, or on its
        own when ``s`` is None."""
        if place.project_id is None or place.project_name is None:
            raise NotFound("the workspace's project no longer exists")
        workload = tokens.Workload(
            organization_id=place.organization_id,
            organization_name=place.organization_name,
            project_id=place.project_id,
            project_name=place.project_name,
            workspace_id=place.workspace_id,
            workspace_name=place.workspace_name,
        )
        now = self._clock.now()
        claims = tokens.workload_claims(
            issuer=self.issuer_url,
            audience=audience,
            workload=workload,
            run_id=run_id,
            phase=phase,
            now=now,
            ttl=ttl,
            max_ttl=self.policy.max_token_ttl,
            speculative=speculative,
        )
        signer = self.signer()
        token = signer.sign(claims)
        record(
            s,
            at=now,
            actor=actor,
            action="oidc.token.mint",
            subject=str(claims["sub"]),
            jti=claims["jti"],
            kid=signer.kid,
            aud=claims["aud"],
            exp=claims["exp"],
            run_id=run_id,
            **audited,
        )
        return Minted(token, tokens.expires_at(claims), run_id, str(claims["jti"]), signer.kid)

    def signer(self) -> tokens.Signer:
        """The active key, opened: from the cache, reloaded once if the cache has none."""
        signer = self.snapshot().signer
        if signer is None:
            signer = self.refresh().signer
        if signer is None:
            raise Unavailable(
                "cairn cannot sign right now: the active signing key cannot be opened (see the "
                "server log); an emergency rotation (cairn keys rotate --emergency) replaces it"
            )
        return signer

    # ---- lifecycle --------------------------------------------------------------------------

    def keys(self) -> list[SigningKey]:
        return self._store.load()

    def rotate(self, actor: Actor, *, emergency: bool, force: bool) -> Plan:
        now = self._clock.now()
        current = self._store.load()
        if emergency:
            plan = lifecycle.emergency(current, now, self.policy)
        else:
            plan = lifecycle.graceful(current, now, self.policy, force=force)
        self.apply(plan, actor, at=now)
        self.refresh()
        return plan

    def apply(self, plan: Plan, actor: Actor, *, at: datetime) -> None:
        """Apply a plan made at ``at``: refuse it if a key it makes active cannot be opened,
        write it in one transaction (RotationConflict: another rotation came first, nothing
        changed), then drop the cache. An empty plan changes nothing."""
        if plan.empty:
            return
        self._check_promotable(plan)
        self._store.apply(plan, actor=actor, at=at)
        self.invalidate(f"rotation ({plan.action})")

    def _check_promotable(self, plan: Plan) -> None:
        try:
            self._store.check_promotable(plan)
        except (SealError, KeyMaterialError, KeySetCorrupt) as exc:
            log.error("refused to promote a damaged signing key", extra={"error": str(exc)})
            raise Conflict(
                f"the next signing key cannot be opened ({exc}); nothing was changed. "
                "Run an emergency rotation (cairn keys rotate --emergency) to replace it"
            ) from None

    def trim(self, actor: Actor) -> Plan:
        now = self._clock.now()
        plan = lifecycle.trim(self._store.load(), now)
        self.apply(plan, actor, at=now)
        return plan

    def tick(self) -> Plan | None:
        """The scheduler: rotate when due. Safe on several replicas: the conditional
        transitions let exactly one replica apply a given rotation."""
        now = self._clock.now()
        plan = lifecycle.tick(self._store.load(), now, self.policy)
        if plan.empty:
            return None
        try:
            self.apply(plan, _system(), at=now)
        except RotationConflict:
            return None  # another replica rotated first
        self.refresh()
        return plan

    def describe(self) -> list[dict[str, Any]]:
        return [key.describe() for key in self._store.load()]


def _system() -> Actor:
    return Actor(id=None, name="cairn (scheduler)")
