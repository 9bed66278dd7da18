"""Terraform's ``http`` backend on cairn's workspaces: reading the current state, writing a new
state version, and the workspace lock under the ID Terraform gives it.

The backend is a thin client (Terraform 1.0.3, ``internal/backend/remote-state/http``): ``GET``
the state (200 with the bytes; 204/404 mean "no state yet"), ``LOCK`` with a lock info JSON
(200: taken; 409/423 with the holder's lock info: refused), ``POST ?ID=<lock ID>`` the whole
state file, ``UNLOCK`` with the lock info (``terraform force-unlock`` in 1.0.3 sends an empty
body). Nothing here is a second set of rules: the lock is the workspace lock (one conditional
UPDATE, ``workspaces.locks.write_lock``; a lock taken through the TFE API or by a run refuses
this backend and the other way round), and a state is written by ``StateService.create`` (lock
holder only, serial never backwards, lineage, blob committed before its row). What this module
adds:

* the lock's client ID: ``?ID=`` on POST and the ID on UNLOCK must name the held lock, so a
  second Terraform process of the same user (same token, same lock holder) cannot write or
  release a lock it did not take;
* a POST to an unlocked workspace (a backend configured without ``lock_address``) takes the
  lock for the write and releases it after, under an ID of its own; a crash in between leaves a
  lock that ``terraform force-unlock`` (or the TFE API) releases;
* the workspace must exist: a typo in ``address`` must not create a new, empty workspace whose
  next plan proposes to create every resource again (GitLab creates on first POST; cairn does
  not, see README "Terraform's http backend").
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import select, update

from cairn import authz
from cairn.audit.log import Actor, record
from cairn.auth.model import User
from cairn.authz.permissions import STATE_READ, STATE_WRITE, WORKSPACE_LOCK, WORKSPACE_MANAGE
from cairn.authz.subject import Holder, Subject, holder_of
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import ApiError, BadRequest, Conflict, Invalid
from cairn.organizations.model import Organization
from cairn.state import store as states_store
from cairn.state.intake import Kind, Staged
from cairn.state.model import StateVersion
from cairn.state.service import NewVersion, StateService, VersionView
from cairn.workspaces import consumers, locks
from cairn.workspaces import store as workspaces
from cairn.workspaces.events import WorkspaceHooks
from cairn.workspaces.model import LockChange, LockRefused, Workspace

MAX_LOCK_ID = 64
MAX_SERIAL = 2**63 - 1  # a signed 64-bit column on every database
# The members of Terraform's lock info (``statemgr.LockInfo``), each a string.
LOCK_INFO_FIELDS = ("ID", "Operation", "Info", "Who", "Version", "Created", "Path")
MAX_LOCK_FIELD = 2000


class Locked(ApiError):
    """The workspace is locked by someone else: answered 423 with the holder's lock info as
    Terraform's http backend expects it (``statemgr.LockInfo`` JSON), not as an error
    document, so that Terraform can print who holds the lock."""

    status, title, code = 423, "Locked", "locked"

    def __init__(self, detail: str, info: dict[str, object]) -> None:
        super().__init__(detail)
        self.info = info


@dataclass(frozen=True)
class LockRequest:
    """A lock info JSON sent with LOCK: its ID and the members kept (strings, bounded)."""

    id: str
    info: dict[str, object]

    @classmethod
    def parse(cls, body: Any) -> LockRequest:
        if not isinstance(body, dict):
            raise BadRequest("the lock request body must be Terraform's lock info JSON object")
        info: dict[str, object] = {}
        for name in LOCK_INFO_FIELDS:
            value = body.get(name)
            if value is None:
                continue
            if not isinstance(value, str) or len(value) > MAX_LOCK_FIELD:
                raise BadRequest(
                    f"lock info member {name!r} must be a string of at most "
                    f"{MAX_LOCK_FIELD} characters"
                )
            info[name] = value
        return cls(check_lock_id(info.get("ID")), info)


def check_lock_id(value: object) -> str:
    """A client's lock ID: a non-empty string of at most ``MAX_LOCK_ID`` characters
    (Terraform sends a UUID)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("the lock ID ('ID') is missing; Terraform sends one with every lock")
    if len(value) > MAX_LOCK_ID:
        raise BadRequest(f"the lock ID is longer than {MAX_LOCK_ID} characters")
    return value


@dataclass(frozen=True)
class Current:
    """The bytes of a workspace's current state."""

    sha256: str
    size: int
    md5: str


def _who(s: Any, holder: Holder) -> str:
    if holder.is_user:
        name = s.scalar(select(User.username).where(User.id == holder.id))
        return f"User {name!r}" if name else f"user {holder.id}"
    return f"{holder.kind} {holder.id}"


def _rfc3339(at: datetime | None) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%SZ}" if at is not None else "0001-01-01T00:00:00Z"


def lock_info(s: Any, org: Organization, ws: Workspace) -> dict[str, object]:
    """The held lock as Terraform's lock info: what its client sent, or, for a lock taken
    through the TFE API or by a run, one made from the row (its ID is the holder's ID)."""
    holder = ws.holder
    if holder is None:
        return {}
    if ws.lock_info is not None:
        return dict(ws.lock_info)
    reason = f": {ws.lock_reason}" if ws.lock_reason else ""
    return {
        "ID": holder.id,
        "Operation": "cairn workspace lock",
        "Info": f"workspace {org.name}/{ws.name} locked through cairn{reason}",
        "Who": _who(s, holder),
        "Version": "",
        "Created": _rfc3339(ws.locked_at),
        "Path": f"{org.name}/{ws.name}",
    }


def _locked(s: Any, org: Organization, ws_id: str) -> Locked:
    fresh = s.get(Workspace, ws_id, populate_existing=True)
    assert fresh is not None
    info = lock_info(s, org, fresh)
    return Locked(
        locks.held_message(s, org, ws_id, "is locked") + f" (lock ID {info.get('ID')})", info
    )


class HttpStates:
    """The http backend's operations, each in its own unit of work (the POST's body streams
    between the check and the write, as the state API's does)."""

    TRANSIENT_PREFIX: ClassVar[str] = "cairn-http-write-"

    def __init__(
        self, db: Database, clock: Clock, states: StateService, hooks: WorkspaceHooks
    ) -> None:
        self._db = db
        self._clock = clock
        self._states = states
        self._hooks = hooks

    # ---- reading --------------------------------------------------------------------------

    def current(self, caller: Subject, org_name: str, ws_name: str) -> Current | None:
        """The current state's blob, or None when the workspace has no state yet."""
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find_by_name(s, caller, org_name, ws_name)
            states_store.require_state(caller, org, ws, STATE_READ)
            consumers.require_consumable(s, caller, org, ws)
            if ws.current_state_version_id is None:
                return None
            sv = s.get(StateVersion, ws.current_state_version_id)
            if sv is None or sv.sha256 is None:
                return None
            return Current(sv.sha256, sv.size, sv.md5)

    def iter_blob(self, sha256: str) -> Iterator[bytes]:
        return self._states.iter_blob(sha256)

    # ---- the lock -------------------------------------------------------------------------

    def lock(
        self, caller: Subject, org_name: str, ws_name: str, req: LockRequest, source: str
    ) -> dict[str, object]:
        """Take the workspace lock under ``req.id``; Locked (423) with the holder's info when
        it is held. The same ID again by its holder is answered as taken (a retried LOCK)."""
        holder = holder_of(caller)
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find_by_name(s, caller, org_name, ws_name)
            authz.require(caller, WORKSPACE_LOCK, workspaces.target(org, ws), doing="lock")
            if ws.held_by(holder) and ws.lock_client_id == req.id:
                return lock_info(s, org, ws)
            try:
                change = ws.enlock(holder)
            except LockRefused:
                raise _locked(s, org, ws.id) from None
            operation = str(req.info.get("Operation") or "terraform")
            reason = f"{operation} through Terraform's http backend (lock ID {req.id})"
            if not locks.write_lock(
                s,
                ws,
                change,
                now=self._clock.now(),
                reason=reason,
                client_id=req.id,
                info=req.info,
            ):
                s.rollback()
                raise _locked(s, org, ws.id)
            record(
                s,
                at=self._clock.now(),
                actor=Actor(caller.id, caller.name, source),
                action="workspace.lock",
                subject=f"{org.name}/{ws.name}",
                workspace_id=ws.id,
                reason=reason,
                lock_id=req.id,
                via="http-backend",
            )
            s.commit()
            return dict(req.info)

    def unlock(
        self, caller: Subject, org_name: str, ws_name: str, lock_id: str | None, source: str
    ) -> None:
        """Release the lock. ``lock_id`` (None: not sent, as by ``terraform force-unlock`` in
        1.0.3) must name the held lock. Its holder releases it; anyone else needs the right to
        force-unlock (``workspace:manage``, as in the TFE API)."""
        holder = holder_of(caller)
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find_by_name(s, caller, org_name, ws_name)
            target = workspaces.target(org, ws)
            authz.require(caller, WORKSPACE_LOCK, target, doing="unlock")
            current = ws.holder
            if current is None:
                raise Conflict(f"workspace {org.name}/{ws.name} is already unlocked")
            held_id = ws.lock_client_id or current.id
            if lock_id is not None and lock_id != held_id:
                raise Conflict(
                    locks.held_message(s, org, ws.id, "is locked")
                    + f" under lock ID {held_id}, not {lock_id}; nothing was changed"
                )
            forced = not ws.held_by(holder)
            if forced and not authz.allowed(caller, WORKSPACE_MANAGE, target):
                raise Conflict(
                    locks.held_message(s, org, ws.id, "is locked")
                    + "; only the holder can unlock it (someone who may force-unlock the "
                    "workspace can: terraform force-unlock <lock ID>)"
                )
            change = LockChange(expected=current, holder=None)
            if not locks.write_lock(s, ws, change, now=self._clock.now()):
                s.rollback()
                raise Conflict(f"workspace {org.name}/{ws.name} changed meanwhile; try again")
            record(
                s,
                at=self._clock.now(),
                actor=Actor(caller.id, caller.name, source),
                action="workspace.force_unlock" if forced else "workspace.unlock",
                subject=f"{org.name}/{ws.name}",
                workspace_id=ws.id,
                lock_id=held_id,
                via="http-backend",
                **({"holder": current.id} if forced else {}),
            )
            s.refresh(ws)
            self._hooks.unlocked(s, org, ws)
            s.commit()

    # ---- writing --------------------------------------------------------------------------

    def stage(self) -> Staged:
        kind: Kind = "state"
        return self._states.stage(kind)

    def check_write(self, caller: Subject, org_name: str, ws_name: str, lock_id: str | None) -> str:
        """Before the body is read: the workspace's ID if the caller may write its state now
        with ``lock_id`` (Forbidden, Locked or Conflict otherwise)."""
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find_by_name(s, caller, org_name, ws_name)
            self._check_write(s, caller, org, ws, lock_id)
            return ws.id

    def _check_write(
        self, s: Any, caller: Subject, org: Organization, ws: Workspace, lock_id: str | None
    ) -> None:
        target = workspaces.target(org, ws)
        authz.require(caller, STATE_WRITE, target, doing="write state to")
        where = f"workspace {org.name}/{ws.name}"
        if not ws.locked:
            if lock_id is not None:
                raise Conflict(
                    f"{where} is not locked, so lock ID {lock_id} is not held (was it "
                    "force-unlocked?); nothing was stored: run Terraform again"
                )
            authz.require(caller, WORKSPACE_LOCK, target, doing="lock")
            return
        if not ws.held_by(holder_of(caller)):
            raise _locked(s, org, ws.id)
        if lock_id is None and ws.lock_client_id is not None:
            raise Conflict(
                f"{where} is locked by a Terraform process under lock ID {ws.lock_client_id}; "
                "only that process may write (it sends ?ID=); nothing was stored"
            )
        if lock_id is not None and lock_id != (ws.lock_client_id or ""):
            raise Conflict(
                f"{where} is locked under lock ID {ws.lock_client_id or '(none: a cairn lock)'}"
                f", not {lock_id}; nothing was stored"
            )

    def write(
        self,
        caller: Subject,
        ws_id: str,
        lock_id: str | None,
        staged: Staged,
        content_md5: str | None,
        source: str,
    ) -> VersionView:
        """Store the state in ``staged`` (fed with the whole body) as a new version. Staged
        bytes not committed are thrown away, whatever happens."""
        try:
            new = self._new_version(staged, content_md5)
            transient = self._take_transient(caller, ws_id, lock_id, source)
            try:
                return self._states.create(caller, ws_id, new, source)
            finally:
                if transient is not None:
                    self._release_transient(caller, ws_id, transient, source)
        finally:
            staged.abort()  # a no-op once committed

    def _new_version(self, staged: Staged, content_md5: str | None) -> NewVersion:
        staged.close()  # Invalid: not a state file
        header = staged.header
        assert header is not None
        if content_md5 is not None:
            try:
                sent = base64.b64decode(content_md5, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("the Content-MD5 header is not base64") from None
            if sent != bytes.fromhex(staged.md5):
                raise BadRequest(
                    "the body's MD5 does not match its Content-MD5 header (was it cut short?); "
                    "nothing was stored"
                )
        if not header.lineage:
            raise Invalid("the state file has no lineage; Terraform writes one")
        if header.serial is None or not 0 <= header.serial <= MAX_SERIAL:
            raise Invalid(f"the state's serial must be a number from 0 to {MAX_SERIAL}")
        return NewVersion(
            serial=header.serial,
            md5=staged.md5,
            lineage=header.lineage,
            force=False,
            state=staged,
        )

    def _take_transient(
        self, caller: Subject, ws_id: str, lock_id: str | None, source: str
    ) -> str | None:
        """Check again (the body took time); on an unlocked workspace, lock it for the write
        under an ID of its own and return that ID."""
        holder = holder_of(caller)
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find(s, caller, ws_id)
            self._check_write(s, caller, org, ws, lock_id)
            if ws.locked:
                return None
            transient = self.TRANSIENT_PREFIX + secrets.token_hex(8)
            change = LockChange(expected=None, holder=holder)
            if not locks.write_lock(
                s,
                ws,
                change,
                now=self._clock.now(),
                reason="a state written through Terraform's http backend without locking",
                client_id=transient,
            ):
                s.rollback()
                raise _locked(s, org, ws_id)
            record(
                s,
                at=self._clock.now(),
                actor=Actor(caller.id, caller.name, source),
                action="workspace.lock",
                subject=f"{org.name}/{ws.name}",
                workspace_id=ws.id,
                reason="state write without a lock (http backend)",
                lock_id=transient,
                via="http-backend",
            )
            s.commit()
            return transient

    def _release_transient(self, caller: Subject, ws_id: str, transient: str, source: str) -> None:
        """Release the write's own lock, only if it is still that lock."""
        holder = holder_of(caller)
        with self._db.unit_of_work(write=True) as s:
            released = s.execute(
                update(Workspace)
                .where(
                    Workspace.id == ws_id,
                    Workspace.lock_is(holder),
                    Workspace.lock_client_id == transient,
                )
                .values(
                    locked_by_kind=None,
                    locked_by_id=None,
                    lock_reason="",
                    locked_at=None,
                    lock_client_id=None,
                    lock_info=None,
                )
                .execution_options(synchronize_session=False)
            )
            if affected(released) != 1:
                return
            org, ws = workspaces.find(s, caller, ws_id)
            s.refresh(ws)
            record(
                s,
                at=self._clock.now(),
                actor=Actor(caller.id, caller.name, source),
                action="workspace.unlock",
                subject=f"{org.name}/{ws.name}",
                workspace_id=ws.id,
                lock_id=transient,
                via="http-backend",
            )
            self._hooks.unlocked(s, org, ws)
            s.commit()
