"""The S3 endpoint's operations on cairn's workspaces, state history and locks.

Every state write goes through ``state.StateService.create`` (lock holder only, serial never
backwards, lineage, blob before row, history, audit). What S3 adds:

* a state put on an **unlocked** workspace (Terraform 1.0.3's s3 backend without DynamoDB never
  locks) takes the lock for the write and releases it after, as the http backend does; a
  workspace locked by someone else refuses the write (409 ``OperationAborted``);
* conditional puts — ``If-None-Match: *`` (no state yet) and ``If-Match: "<md5>"`` (the
  current state's ETag) — are decided inside the transaction that took the lock: the lock's
  conditional UPDATE serialises racing writers (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the
  row lock), so of two racing conditional puts exactly one is stored and the other gets 412;
* ``<key>.tflock`` objects are the workspace lock: put with ``If-None-Match: *`` takes it
  (the body, Terraform's lock info, kept as the lock's info and its ``ID`` as the lock's ID),
  get answers the lock info, delete releases it (only its holder).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz
from cairn.audit.log import Actor, record
from cairn.auth.model import User
from cairn.authz.permissions import STATE_READ, STATE_WRITE, WORKSPACE_LOCK
from cairn.authz.subject import Subject, holder_of, user_holder
from cairn.clock import Clock
from cairn.db.engine import Database
from cairn.errors import Conflict, Forbidden, Invalid, NotFound
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.s3api import keys
from cairn.s3api.errors import S3Error, no_such_bucket, no_such_key
from cairn.s3api.model import S3Object
from cairn.state.intake import Staged
from cairn.state.model import StateVersion
from cairn.state.service import StateService
from cairn.state.store import NewVersion
from cairn.workspaces import locks
from cairn.workspaces import store as workspaces
from cairn.workspaces.model import LockChange, Workspace
from cairn.workspaces.service import WorkspaceService, WorkspaceSettings

MAX_LOCK_INFO = 16 * 1024
MAX_SERIAL = 2**62
_TRANSIENT = "cairn-s3-write-"
# A write that finds another S3 write's short lock waits for it (it is released right after
# its version commits): up to _BUSY_TRIES * _BUSY_WAIT seconds.
_BUSY_TRIES = 100
_BUSY_WAIT = 0.05


class _Busy(Exception):
    """Another S3 write holds its short lock on the workspace."""


@dataclass(frozen=True)
class Condition:
    """A conditional put: ``absent`` (If-None-Match: *) and/or ``etag`` (If-Match)."""

    absent: bool = False
    etag: str | None = None


@dataclass(frozen=True)
class StateObject:
    sha256: str
    size: int
    md5: str
    last_modified: datetime


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    md5: str
    last_modified: datetime


def _precondition(detail: str) -> S3Error:
    return S3Error("PreconditionFailed", detail, 412)


class S3Objects:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        states: StateService,
        workspaces_service: WorkspaceService,
        lock_service: locks.LockService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._states = states
        self._workspaces = workspaces_service
        self._locks = lock_service

    # ---- resolving ----------------------------------------------------------------------------

    def _org(self, s: Session, caller: Subject, bucket: str) -> Organization:
        try:
            return orgs.readable(s, caller, bucket)
        except NotFound:
            raise no_such_bucket(bucket) from None

    def _find(
        self, s: Session, caller: Subject, org: Organization, state_key: str
    ) -> Workspace | None:
        ws_id = s.scalar(
            select(S3Object.workspace_id).where(
                S3Object.organization_id == org.id, S3Object.key == state_key
            )
        )
        if ws_id is None:
            try:
                name = keys.workspace_name(state_key)
            except keys.BadKey:
                return None
            ws_id = s.scalar(
                select(Workspace.id).where(
                    Workspace.organization_id == org.id, Workspace.name == name
                )
            )
            if ws_id is None:
                return None
        try:
            _, ws = workspaces.find(s, caller, ws_id)
        except NotFound:
            return None
        return ws

    def check_bucket(self, caller: Subject, bucket: str) -> None:
        """HeadBucket: the organization exists and the caller may see it."""
        with self._db.unit_of_work() as s:
            self._org(s, caller, bucket)

    # ---- reading ------------------------------------------------------------------------------

    def get_state(self, caller: Subject, bucket: str, state_key: str) -> StateObject:
        with self._db.unit_of_work() as s:
            org = self._org(s, caller, bucket)
            ws = self._find(s, caller, org, state_key)
            if ws is None or ws.current_state_version_id is None:
                raise no_such_key(state_key)
            if not authz.allowed(caller, STATE_READ, workspaces.target(org, ws)):
                raise S3Error(
                    "AccessDenied",
                    f"reading the state of workspace {org.name}/{ws.name} needs the "
                    f"{STATE_READ} permission",
                    403,
                    state_key,
                )
            sv = s.get(StateVersion, ws.current_state_version_id)
            if sv is None or sv.sha256 is None:
                raise no_such_key(state_key)
            return StateObject(sv.sha256, sv.size, sv.md5, sv.created_at)

    def iter_blob(self, sha256: str) -> Iterator[bytes]:
        return self._states.iter_blob(sha256)

    def list(
        self, caller: Subject, bucket: str, prefix: str, after: str, limit: int
    ) -> tuple[list[Listed], str | None]:
        """Up to ``limit`` recorded keys under ``prefix`` after ``after`` whose workspace the
        caller may read and that have a state, in key order; and the key to continue after
        when more may follow (None: the listing is complete)."""
        found: list[Listed] = []
        batch = limit * 4 + 1
        last = after
        with self._db.unit_of_work() as s:
            org = self._org(s, caller, bucket)
            stmt = (
                select(S3Object.key, Workspace, StateVersion)
                .join(Workspace, Workspace.id == S3Object.workspace_id)
                .join(StateVersion, StateVersion.id == Workspace.current_state_version_id)
                .where(S3Object.organization_id == org.id, S3Object.key > after)
                .order_by(S3Object.key)
            )
            if prefix:
                stmt = stmt.where(S3Object.key.startswith(prefix, autoescape=True))
            rows = s.execute(stmt.limit(batch)).all()
            for key, ws, sv in rows:
                if not authz.allowed(caller, STATE_READ, workspaces.target(org, ws)):
                    last = key
                    continue
                if len(found) == limit:
                    return found, found[-1].key
                found.append(Listed(key, sv.size, sv.md5, sv.created_at))
                last = key
        # A full batch (of keys partly hidden from the caller) may have more after it.
        return found, (last if len(rows) == batch else None)

    # ---- writing state ------------------------------------------------------------------------

    def stage(self) -> Staged:
        return self._states.stage("state")

    def put_state(
        self,
        caller: Subject,
        bucket: str,
        state_key: str,
        staged: Staged,
        condition: Condition,
        source: str,
    ) -> str:
        """Store the state in ``staged`` as the workspace's new version; its MD5 (the ETag)."""
        try:
            staged.close()
            header = staged.header
            assert header is not None
            if not header.lineage:
                raise Invalid("the state file has no lineage; Terraform writes one")
            if header.serial is None or not 0 <= header.serial <= MAX_SERIAL:
                raise Invalid(f"the state's serial must be a number from 0 to {MAX_SERIAL}")
            new = NewVersion(
                serial=header.serial,
                md5=staged.md5,
                lineage=header.lineage,
                force=False,
                state=staged,
            )
            ws_id = self._workspace_for_write(caller, bucket, state_key)
            for _ in range(_BUSY_TRIES):
                try:
                    self._write(caller, ws_id, new, condition, source)
                    return staged.md5
                except _Busy:
                    time.sleep(_BUSY_WAIT)
            raise S3Error(
                "OperationAborted",
                "another write to this state is in progress and did not finish; try again",
                409,
                state_key,
            )
        finally:
            staged.abort()

    def _write(
        self, caller: Subject, ws_id: str, new: NewVersion, condition: Condition, source: str
    ) -> None:
        """One try: lock (or, when the caller holds the lock, lock the row), check the
        condition, write, release. ``_Busy`` while another S3 write holds its short lock."""
        transient: str | None = None
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find(s, caller, ws_id)
            if ws.locked:
                # The row lock (PostgreSQL; SQLite's writer lock is already held) makes the
                # condition below the database's decision among writers of one lock holder.
                s.execute(select(Workspace.id).where(Workspace.id == ws.id).with_for_update())
                s.refresh(ws)
                if (ws.lock_client_id or "").startswith(_TRANSIENT):
                    raise _Busy
            if not ws.locked:
                transient = self._take_transient(s, caller, org, ws, source)
            self._check_condition(s, ws, condition)
            try:
                self._states.create(caller, ws_id, new, source)  # commits
            finally:
                if transient is not None:
                    self._release_transient(caller, ws_id, transient)

    def _workspace_for_write(self, caller: Subject, bucket: str, state_key: str) -> str:
        """The workspace the key names, recorded; created (execution mode local) when the
        caller may create workspaces and none has the derived name."""
        with self._db.unit_of_work() as s:
            org = self._org(s, caller, bucket)
            ws = self._find(s, caller, org, state_key)
            org_name = org.name
            if ws is not None:
                recorded = s.get(S3Object, (org.id, state_key))
                if recorded is not None:
                    return ws.id
        try:
            name = keys.workspace_name(state_key)
        except keys.BadKey as exc:
            raise S3Error("InvalidArgument", str(exc), 400, state_key) from None
        if ws is None:
            try:
                view = self._workspaces.create(
                    caller, org_name, WorkspaceSettings(name=name, execution_mode="local")
                )
                ws_id = view.ws.id
            except (Invalid, Conflict):
                # Created meanwhile by another writer (or the name is taken by a workspace the
                # caller cannot read): use it if readable.
                with self._db.unit_of_work() as s:
                    org = self._org(s, caller, bucket)
                    found = self._find(s, caller, org, state_key)
                    if found is None:
                        raise
                    ws_id = found.id
            except (Forbidden, NotFound):
                raise S3Error(
                    "AccessDenied",
                    f"there is no workspace {org_name}/{name} for this key, and you may not "
                    "create workspaces in this organization; ask an owner to create it",
                    403,
                    state_key,
                ) from None
        else:
            ws_id = ws.id
        with self._db.unit_of_work(write=True) as s:
            org = self._org(s, caller, bucket)
            s.add(
                S3Object(
                    organization_id=org.id,
                    key=state_key,
                    workspace_id=ws_id,
                    created_at=self._clock.now(),
                )
            )
            try:
                s.commit()
            except IntegrityError:  # recorded meanwhile: the first record wins
                s.rollback()
                recorded_id = s.scalar(
                    select(S3Object.workspace_id).where(
                        S3Object.organization_id == org.id, S3Object.key == state_key
                    )
                )
                assert recorded_id is not None
                return recorded_id
        return ws_id

    def _check_condition(self, s: Session, ws: Workspace, condition: Condition) -> None:
        s.refresh(ws)  # read after the lock was taken: what the winner committed
        current = (
            s.get(StateVersion, ws.current_state_version_id, populate_existing=True)
            if ws.current_state_version_id is not None
            else None
        )
        if condition.absent and current is not None:
            raise _precondition(
                "At least one of the pre-conditions you specified did not hold: the object "
                "exists (If-None-Match: *)"
            )
        if condition.etag is not None and (
            current is None or condition.etag not in ("*", current.md5)
        ):
            raise _precondition(
                "At least one of the pre-conditions you specified did not hold: the "
                "object's ETag is not the one in If-Match"
            )

    def _take_transient(
        self, s: Session, caller: Subject, org: Organization, ws: Workspace, source: str
    ) -> str:
        # The short lock is part of the write: writing state is what it needs.
        authz.require(caller, STATE_WRITE, workspaces.target(org, ws), doing="write state to")
        transient = _TRANSIENT + secrets.token_hex(8)
        if not locks.write_lock(
            s,
            ws,
            LockChange(expected=None, holder=holder_of(caller)),
            now=self._clock.now(),
            reason="a state written through the S3 endpoint without a lock",
            client_id=transient,
        ):
            s.refresh(ws)
            if not ws.locked or (ws.lock_client_id or "").startswith(_TRANSIENT):
                raise _Busy  # released meanwhile, or another S3 write's short lock
            raise Conflict(locks.held_message(s, org, ws.id, "is locked"))
        s.refresh(ws)
        return transient

    def _release_transient(self, caller: Subject, ws_id: str, transient: str) -> None:
        with self._db.unit_of_work(write=True) as s:
            s.execute(
                update(Workspace)
                .where(
                    Workspace.id == ws_id,
                    Workspace.lock_is(holder_of(caller)),
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
            s.commit()

    def delete_state(self, caller: Subject, bucket: str, state_key: str) -> None:
        """DeleteObject of a state key (``terraform workspace delete``): the workspace is
        deleted, safely (refused while it manages resources or someone else holds its lock).
        S3 answers a delete of a missing key with success."""
        with self._db.unit_of_work() as s:
            org = self._org(s, caller, bucket)
            ws = self._find(s, caller, org, state_key)
        if ws is None:
            return
        self._workspaces.delete(caller, ws.id, safe=True)

    # ---- the lock object ----------------------------------------------------------------------

    def lock(self, caller: Subject, bucket: str, state_key: str, body: bytes, source: str) -> str:
        """PutObject ``<key>.tflock`` with ``If-None-Match: *``: take the workspace lock."""
        info = _lock_info(body)
        ws_id = self._workspace_for_write(caller, bucket, state_key)
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find(s, caller, ws_id)
            authz.require(caller, WORKSPACE_LOCK, workspaces.target(org, ws), doing="lock")
            if ws.locked or not locks.write_lock(
                s,
                ws,
                LockChange(expected=None, holder=holder_of(caller)),
                now=now,
                reason=str(info.get("Operation", ""))[:200] or "locked through the S3 endpoint",
                client_id=str(info.get("ID", ""))[:64] or None,
                info=info,
            ):
                raise _precondition(
                    locks.held_message(s, org, ws.id, "is locked")
                    + " (the lock object exists: If-None-Match: *)"
                )
            record(
                s,
                at=now,
                actor=Actor(caller.id, caller.name, source),
                action="workspace.lock",
                subject=f"{org.name}/{ws.name}",
                workspace_id=ws.id,
                reason="lock object put through the S3 endpoint",
                via="s3",
            )
            s.commit()
        return _md5(body)

    def lock_object(self, caller: Subject, bucket: str, state_key: str) -> bytes:
        """GetObject ``<key>.tflock``: the lock's info, as Terraform wrote it."""
        with self._db.unit_of_work() as s:
            org = self._org(s, caller, bucket)
            ws = self._find(s, caller, org, state_key)
            if ws is None or not ws.locked:
                raise no_such_key(state_key + keys.LOCK_SUFFIX)
            info = ws.lock_info
            if info is None:
                holder = ws.holder
                assert holder is not None
                who = holder.id
                if holder == user_holder(holder.id):
                    who = s.scalar(select(User.username).where(User.id == holder.id)) or who
                info = {
                    "ID": ws.lock_client_id or holder.id,
                    "Operation": "cairn workspace lock",
                    "Info": ws.lock_reason,
                    "Who": who,
                    "Version": "",
                    "Created": f"{ws.locked_at:%Y-%m-%dT%H:%M:%SZ}" if ws.locked_at else "",
                    "Path": f"{org.name}/{ws.name}",
                }
            return json.dumps(info).encode()

    def unlock(self, caller: Subject, bucket: str, state_key: str, source: str) -> None:
        """DeleteObject ``<key>.tflock``: release the lock (its holder only)."""
        with self._db.unit_of_work() as s:
            org = self._org(s, caller, bucket)
            ws = self._find(s, caller, org, state_key)
            if ws is None or not ws.locked:
                return  # S3: deleting a missing key succeeds
            ws_id = ws.id
        try:
            self._locks.unlock(caller, ws_id, source)
        except Conflict as exc:
            raise S3Error("AccessDenied", exc.detail, 403, state_key + keys.LOCK_SUFFIX) from None


def _lock_info(body: bytes) -> dict[str, object]:
    if len(body) > MAX_LOCK_INFO:
        raise S3Error("EntityTooLarge", f"a lock object is at most {MAX_LOCK_INFO} bytes", 400)
    try:
        info = json.loads(body) if body else {}
    except ValueError:
        raise S3Error(
            "InvalidArgument", "a lock object must be JSON (Terraform's lock info)", 400
        ) from None
    if not isinstance(info, dict):
        raise S3Error("InvalidArgument", "a lock object must be a JSON object", 400)
    return info


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
