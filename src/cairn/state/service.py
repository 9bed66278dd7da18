"""State versions: the rules of who may write state, and in what order.

Rules (each enforced again by the database, because replicas run at once):
* only the holder of the workspace lock creates a version (409 naming the holder otherwise);
* the serial never goes backwards; the same serial again is accepted only with the same MD5
  (an idempotent retry); the lineage must match unless ``force``;
* ``md5`` must match the bytes; the blob is written and verified before the row commits, and
  the workspace's current-version pointer moves with one conditional UPDATE.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, principal_actor, record
from cairn.auth.model import User
from cairn.authz.permissions import WORKSPACE_READ, WORKSPACE_WRITE
from cairn.authz.subject import Subject
from cairn.blobs.store import BlobRef, BlobStore, BlobWriter
from cairn.clock import Clock
from cairn.config import Settings
from cairn.crypto import Keyring
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.state import inspect
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.workspaces.model import Workspace
from cairn.workspaces.service import WorkspaceService

log = logging.getLogger("cairn.state")

# Versions at most this large are fully processed (resource count) before the response.
SYNC_PROCESS_LIMIT = 8 * 1024 * 1024


class LostRace(Conflict):
    """Another request changed the workspace's state between our checks and our write."""


@dataclass
class NewVersion:
    serial: int
    md5: str
    lineage: str
    force: bool
    state: bytes | None  # None: two-step hosted upload
    json_state: bytes | None = None


@dataclass
class Upload:
    """An upload URL's body on its way into the blob store."""

    sv_id: str
    kind: str
    nonce: str
    sv: StateVersion
    writer: BlobWriter


@dataclass
class VersionView:
    sv: StateVersion
    org: Organization
    ws: Workspace
    outputs: list[StateVersionOutput]


class StateService:
    def __init__(
        self, db: Database, blobs: BlobStore, keyring: Keyring, clock: Clock, settings: Settings
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._keys = keyring
        self._clock = clock
        self._settings = settings

    # ---- lookups ------------------------------------------------------------------------------

    def _find(
        self, s: Session, caller: Subject, sv_id: str
    ) -> tuple[Organization, Workspace, StateVersion]:
        sv = s.get(StateVersion, sv_id)
        if sv is None:
            raise NotFound(f"state version {sv_id!r} not found, or you are not allowed to see it")
        org, ws = WorkspaceService.find(s, caller, sv.workspace_id)
        return org, ws, sv

    @staticmethod
    def _outputs(s: Session, sv_ids: list[str]) -> dict[str, list[StateVersionOutput]]:
        found: dict[str, list[StateVersionOutput]] = {i: [] for i in sv_ids}
        if sv_ids:
            for o in s.scalars(
                select(StateVersionOutput)
                .where(StateVersionOutput.state_version_id.in_(sv_ids))
                .order_by(StateVersionOutput.name)
            ):
                found[o.state_version_id].append(o)
        return found

    def get(self, caller: Subject, sv_id: str) -> VersionView:
        with self._db.unit_of_work() as s:
            org, ws, sv = self._find(s, caller, sv_id)
            return VersionView(sv, org, ws, self._outputs(s, [sv.id])[sv.id])

    def current(self, caller: Subject, ws_id: str) -> VersionView:
        with self._db.unit_of_work() as s:
            org, ws = WorkspaceService.find(s, caller, ws_id)
            if ws.current_state_version_id is None:
                raise NotFound(f"workspace {org.name}/{ws.name} has no state yet")
            sv = s.get(StateVersion, ws.current_state_version_id)
            assert sv is not None
            return VersionView(sv, org, ws, self._outputs(s, [sv.id])[sv.id])

    def history(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[VersionView], int]:
        with self._db.unit_of_work() as s:
            org, ws = WorkspaceService.find(s, caller, ws_id)
            base = select(StateVersion).where(
                StateVersion.workspace_id == ws.id, StateVersion.status == "finalized"
            )
            total = s.scalar(select(func.count()).select_from(base.subquery())) or 0
            rows = list(
                s.scalars(
                    base.order_by(StateVersion.serial.desc(), StateVersion.created_at.desc())
                    .offset(page.offset)
                    .limit(page.size)
                )
            )
            outs = self._outputs(s, [r.id for r in rows])
            return [VersionView(r, org, ws, outs[r.id]) for r in rows], total

    def output(self, caller: Subject, output_id: str) -> tuple[StateVersionOutput, VersionView]:
        with self._db.unit_of_work() as s:
            out = s.get(StateVersionOutput, output_id)
            if out is None:
                raise NotFound(f"state version output {output_id!r} not found")
            org, ws, sv = self._find(s, caller, out.state_version_id)
            return out, VersionView(sv, org, ws, [])

    # ---- downloads ----------------------------------------------------------------------------

    def download(
        self, caller: Subject, sv_id: str, *, json_state: bool = False
    ) -> tuple[str, int, Path | None]:
        """(sha256, size, local path or None) of a finalized version's bytes."""
        with self._db.unit_of_work() as s:
            _, _, sv = self._find(s, caller, sv_id)
        digest, size = (sv.json_sha256, sv.json_size) if json_state else (sv.sha256, sv.size)
        if sv.status != "finalized" or digest is None:
            raise NotFound(
                f"state version {sv_id} has no {'JSON ' if json_state else ''}state uploaded"
            )
        return digest, size, self._blobs.local_path(digest)

    def iter_blob(self, sha256: str) -> Iterator[bytes]:
        return self._blobs.iter_chunks(sha256)

    # ---- writing ------------------------------------------------------------------------------

    def _check_writable(
        self, s: Session, caller: Subject, org: Organization, ws: Workspace, new: NewVersion
    ) -> StateVersion | None:
        """Apply the rules against the current version; returns the current version when the
        request is an idempotent repeat of it."""
        if not authz.can(caller, WORKSPACE_WRITE, org.id, ws.name, ws.id):
            raise Forbidden(f"you may not write state to workspace {org.name}/{ws.name}")
        if ws.locked_by_id is None:
            raise Conflict(
                f"workspace {org.name}/{ws.name} is not locked and will only accept state "
                "uploads when locked; lock it first (Terraform does this itself)"
            )
        if not (ws.locked_by_kind == "users" and ws.locked_by_id == caller.id):
            raise Conflict(
                WorkspaceService._held_message(s, org, ws.id, "is locked")
                + "; only the lock holder may upload state"
            )
        if ws.current_state_version_id is None:
            return None
        cur = s.get(StateVersion, ws.current_state_version_id)
        assert cur is not None
        if cur.lineage != new.lineage and not new.force:
            raise Conflict(
                f"The lineage provided in the state file ({new.lineage}) does not match the value "
                f"currently known ({cur.lineage}) for workspace {org.name}/{ws.name}; "
                "use 'terraform state push -force' to replace unrelated state"
            )
        if new.serial < cur.serial:
            raise Conflict(
                f"serial {new.serial} is older than the current serial {cur.serial} of "
                f"{org.name}/{ws.name}; state serials never go backwards"
            )
        if new.serial == cur.serial:
            if new.md5 == cur.md5 and new.lineage == cur.lineage:
                return cur
            raise Conflict(
                "The MD5 hash of the state provided does not match what is currently "
                f"known for the same serial number ({cur.serial})"
            )
        return None

    def create(self, caller: Subject, ws_id: str, new: NewVersion) -> VersionView:
        """Create a version: inline (``state`` given: finalized at once) or pending (upload
        URLs follow)."""
        with self._db.unit_of_work() as s:
            org, ws = WorkspaceService.find(s, caller, ws_id)
            same = self._check_writable(s, caller, org, ws, new)
            if same is not None:
                return VersionView(same, org, ws, self._outputs(s, [same.id])[same.id])
        if new.state is None:
            return self._create_pending(caller, ws_id, new)
        md5 = _md5(new.state)
        if md5 != new.md5:
            raise Invalid(
                f"md5 {new.md5} does not match the uploaded state (its MD5 is {md5})",
                pointer="/data/attributes/md5",
            )
        header = inspect.read_header(new.state)
        _check_header(header, new)
        writer = self._blobs.writer(max_size=self._settings.max_state_bytes)
        writer.write(new.state)
        ref = writer.commit()
        json_ref = None
        if new.json_state:
            jw = self._blobs.writer(max_size=self._settings.max_state_bytes)
            jw.write(new.json_state)
            json_ref = jw.commit()
        sv_id = ids.new_id("state_version")
        try:
            same_view = self._insert_finalized(caller, ws_id, sv_id, new, ref, header, json_ref)
        except LostRace:
            # Another request committed first: an identical retry returns its version.
            with self._db.unit_of_work() as s:
                org, ws = WorkspaceService.find(s, caller, ws_id)
                same = self._check_writable(s, caller, org, ws, new)
                if same is None:
                    raise
                return VersionView(same, org, ws, self._outputs(s, [same.id])[same.id])
        if same_view is not None:
            return same_view
        if ref.size <= SYNC_PROCESS_LIMIT:
            self.process(sv_id)
        return self.get(caller, sv_id)

    def _insert_finalized(
        self,
        caller: Subject,
        ws_id: str,
        sv_id: str,
        new: NewVersion,
        ref: BlobRef,
        header: inspect.StateHeader,
        json_ref: BlobRef | None,
    ) -> VersionView | None:
        """One transaction: re-check the rules, insert the version and make it current.
        Returns the existing version when the request repeats it."""
        with self._db.unit_of_work(write=True) as s:
            org, ws = WorkspaceService.find(s, caller, ws_id)
            same = self._check_writable(s, caller, org, ws, new)
            if same is not None:
                return VersionView(same, org, ws, self._outputs(s, [same.id])[same.id])
            sv = StateVersion(
                id=sv_id,
                workspace_id=ws.id,
                serial=new.serial,
                lineage=new.lineage,
                md5=new.md5,
                force=new.force,
                status="pending",
                created_by_id=caller.id,
                created_at=self._clock.now(),
            )
            s.add(sv)
            s.flush()
            self._finalize(s, org, ws, sv, caller.id, ref, header, json_ref)
            self._audit(s, principal_actor(caller.id, caller.name), org, ws, sv)
            s.commit()
        return None

    def _create_pending(self, caller: Subject, ws_id: str, new: NewVersion) -> VersionView:
        with self._db.unit_of_work(write=True) as s:
            org, ws = WorkspaceService.find(s, caller, ws_id)
            same = self._check_writable(s, caller, org, ws, new)
            if same is not None:
                return VersionView(same, org, ws, self._outputs(s, [same.id])[same.id])
            sv = StateVersion(
                id=ids.new_id("state_version"),
                workspace_id=ws.id,
                serial=new.serial,
                lineage=new.lineage,
                md5=new.md5,
                force=new.force,
                status="pending",
                created_by_id=caller.id,
                created_at=self._clock.now(),
                upload_nonce=secrets.token_hex(16),
                json_upload_nonce=secrets.token_hex(16),
            )
            s.add(sv)
            s.commit()
            return VersionView(sv, org, ws, [])

    def _finalize(
        self,
        s: Session,
        org: Organization,
        ws: Workspace,
        sv: StateVersion,
        holder: str,
        ref: BlobRef,
        header: inspect.StateHeader,
        json_ref: BlobRef | None,
        nonce: str | None = None,
    ) -> None:
        """Inside the caller's transaction: mark ``sv`` finalized and make it current, both
        conditionally, so a lost race changes nothing (raises LostRace)."""
        where, serial = f"{org.name}/{ws.name}", sv.serial  # before a failed flush
        try:
            self._finalize_rows(s, ws, sv, holder, ref, header, json_ref, nonce)
        except IntegrityError:
            raise LostRace(
                f"another version with serial {serial} was committed to {where} at the same "
                "moment; nothing was changed"
            ) from None
        except LostRace as exc:
            raise LostRace(f"workspace {where} {exc.detail}") from None

    def _finalize_rows(
        self,
        s: Session,
        ws: Workspace,
        sv: StateVersion,
        holder: str,
        ref: BlobRef,
        header: inspect.StateHeader,
        json_ref: BlobRef | None,
        nonce: str | None,
    ) -> None:
        now = self._clock.now()
        cond = [StateVersion.id == sv.id, StateVersion.status == "pending"]
        if nonce is not None:
            cond.append(StateVersion.upload_nonce == nonce)
        values: dict[str, object] = dict(
            status="finalized",
            sha256=ref.sha256,
            size=ref.size,
            terraform_version=header.terraform_version,
            finalized_at=now,
            upload_nonce=None,
        )
        if json_ref is not None:
            values.update(json_sha256=json_ref.sha256, json_size=json_ref.size)
        if (
            affected(
                s.execute(
                    update(StateVersion)
                    .where(*cond)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
            )
            != 1
        ):
            raise Conflict("this upload URL has already been used; create a new state version")
        prev = ws.current_state_version_id
        moved = affected(
            s.execute(
                update(Workspace)
                .where(
                    Workspace.id == ws.id,
                    Workspace.locked_by_kind == "users",
                    Workspace.locked_by_id == holder,
                    Workspace.current_state_version_id.is_(None)
                    if prev is None
                    else Workspace.current_state_version_id == prev,
                )
                .values(current_state_version_id=sv.id, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        if moved != 1:
            raise LostRace(
                "changed while the state was uploaded (lock released or another version "
                "committed); nothing was changed"
            )
        for o in header.outputs:
            s.add(
                StateVersionOutput(
                    id=ids.new_id("state_version_output"),
                    state_version_id=sv.id,
                    name=o.name[:255],
                    sensitive=o.sensitive,
                    type_json=inspect.dumps(o.type),
                    value_json=inspect.dumps(o.value),
                )
            )
        s.flush()

    def _audit(
        self, s: Session, actor: Actor, org: Organization, ws: Workspace, sv: StateVersion
    ) -> None:
        record(
            s,
            at=self._clock.now(),
            actor=actor,
            action="state.version.create",
            subject=f"{org.name}/{ws.name}",
            state_version_id=sv.id,
            serial=sv.serial,
            md5=sv.md5,
            forced=sv.force,
        )

    # ---- the hosted (two-step) upload ----------------------------------------------------------

    def upload_token(self, sv: StateVersion, kind: str) -> str | None:
        nonce = sv.upload_nonce if kind == "state" else sv.json_upload_nonce
        if sv.status != "pending" or not nonce:
            return None
        expires = int(time.time()) + self._settings.upload_url_ttl_seconds
        message = f"{sv.id}.{kind}.{expires}.{nonce}"
        return f"{kind}.{expires}.{nonce}.{self._keys.sign('state-upload', message)}"

    def check_upload_token(self, sv_id: str, token: str) -> tuple[str, str]:
        """(kind, nonce) of a valid upload token; Unauthorized otherwise."""
        parts = token.split(".")
        bad = Unauthorized(
            "this upload URL is not valid or has expired; create a new state version"
        )
        if len(parts) != 4 or parts[0] not in ("state", "json") or not parts[1].isdigit():
            raise bad
        kind, expires, nonce, sig = parts
        if not self._keys.verify("state-upload", f"{sv_id}.{kind}.{expires}.{nonce}", sig):
            raise bad
        if int(expires) < time.time():
            raise bad
        return kind, nonce

    def start_upload(self, sv_id: str, token: str) -> Upload:
        """Check an upload URL and open a blob writer for its body."""
        kind, nonce = self.check_upload_token(sv_id, token)
        with self._db.unit_of_work() as s:
            sv = s.get(StateVersion, sv_id)
            expected = (
                None
                if sv is None
                else (sv.upload_nonce if kind == "state" else sv.json_upload_nonce)
            )
            if sv is None or expected != nonce:
                raise Conflict("this upload URL has already been used; create a new state version")
        return Upload(
            sv_id, kind, nonce, sv, self._blobs.writer(max_size=self._settings.max_state_bytes)
        )

    def finish_upload(self, upload: Upload) -> int:
        """Commit the uploaded bytes and finalize the version; returns the size."""
        sv_id, kind, nonce, sv = upload.sv_id, upload.kind, upload.nonce, upload.sv
        ref = upload.writer.commit()
        if kind == "json":
            with self._db.unit_of_work(write=True) as s:
                n = affected(
                    s.execute(
                        update(StateVersion)
                        .where(StateVersion.id == sv_id, StateVersion.json_upload_nonce == nonce)
                        .values(json_sha256=ref.sha256, json_size=ref.size, json_upload_nonce=None)
                        .execution_options(synchronize_session=False)
                    )
                )
                if n != 1:
                    raise Conflict("this upload URL has already been used")
                s.commit()
            return ref.size
        if ref.md5 != sv.md5:
            raise Invalid(
                f"the uploaded bytes have MD5 {ref.md5}, but the state version was created "
                f"with md5 {sv.md5}; nothing was changed"
            )
        header = inspect.read_header(self._blobs.iter_chunks(ref.sha256))
        _check_header(header, NewVersion(sv.serial, sv.md5, sv.lineage, sv.force, None))
        with self._db.unit_of_work(write=True) as s:
            fresh = s.get(StateVersion, sv_id)
            if fresh is None:
                raise NotFound("the state version was deleted during its upload")
            sv = fresh
            assert sv.created_by_id is not None
            ws = s.get(Workspace, sv.workspace_id)
            if ws is None:
                raise NotFound("the workspace of this state version was deleted")
            org = s.get(Organization, ws.organization_id)
            assert org is not None
            if ws.current_state_version_id is not None:
                cur = s.get(StateVersion, ws.current_state_version_id)
                if cur is not None and cur.serial >= sv.serial:
                    raise Conflict(
                        f"a version with serial {cur.serial} became current meanwhile; "
                        "serials never go backwards"
                    )
            self._finalize(s, org, ws, sv, sv.created_by_id, ref, header, None, nonce=nonce)
            creator = s.get(User, sv.created_by_id)
            self._audit(
                s, Actor(sv.created_by_id, creator.username if creator else "", ""), org, ws, sv
            )
            s.commit()
        if ref.size <= SYNC_PROCESS_LIMIT:
            self.process(sv_id)
        return ref.size

    # ---- after commit: resource count ----------------------------------------------------------

    def process(self, sv_id: str) -> None:
        """Count resources of a finalized version (idempotent; safe on several replicas)."""
        with self._db.unit_of_work() as s:
            sv = s.get(StateVersion, sv_id)
            if (
                sv is None
                or sv.status != "finalized"
                or sv.sha256 is None
                or sv.resource_count >= 0
            ):
                return
            digest = sv.sha256
        try:
            count = inspect.count_resources(self._blobs.iter_chunks(digest))
        except Invalid as exc:
            log.warning(
                "state version could not be processed",
                extra={"state_version": sv_id, "error": str(exc)},
            )
            count = 0
        with self._db.unit_of_work(write=True) as s:
            s.execute(
                update(StateVersion)
                .where(StateVersion.id == sv_id, StateVersion.resource_count < 0)
                .values(resource_count=count)
                .execution_options(synchronize_session=False)
            )
            s.execute(
                update(Workspace)
                .where(Workspace.current_state_version_id == sv_id)
                .values(resource_count=count)
                .execution_options(synchronize_session=False)
            )
            s.commit()

    def process_current(self, ws_id: str) -> None:
        """Count the current version's resources now if that has not happened yet."""
        with self._db.unit_of_work() as s:
            ws = s.get(Workspace, ws_id)
            current = ws.current_state_version_id if ws is not None else None
        if current is not None:
            self.process(current)

    def process_pending(self) -> int:
        """Process every finalized version not yet counted (after a crash or restart)."""
        with self._db.unit_of_work() as s:
            todo = list(
                s.scalars(
                    select(StateVersion.id).where(
                        StateVersion.status == "finalized", StateVersion.resource_count < 0
                    )
                )
            )
        for sv_id in todo:
            self.process(sv_id)
        return len(todo)

    # ---- rollback -----------------------------------------------------------------------------

    def rollback(self, caller: Subject, ws_id: str, target_id: str) -> VersionView:
        """A new version with the content of an earlier one, its serial raised above current."""
        with self._db.unit_of_work() as s:
            org, ws = WorkspaceService.find(s, caller, ws_id)
            target = s.get(StateVersion, target_id)
            if target is None or target.workspace_id != ws.id or target.status != "finalized":
                raise NotFound(
                    f"state version {target_id!r} is not a version of {org.name}/{ws.name}",
                    pointer="/data/relationships/rollback-state-version",
                )
            if ws.current_state_version_id is None:
                raise Conflict("the workspace has no current state to roll back")
            cur = s.get(StateVersion, ws.current_state_version_id)
            assert cur is not None and target.sha256 is not None
            digest = target.sha256
        # A state file carries its own serial; Terraform would refuse a file older than the
        # server's, so the rolled-back content gets the next serial.
        state = json.loads(b"".join(self._blobs.iter_chunks(digest)))
        state["serial"] = cur.serial + 1
        state["lineage"] = cur.lineage if not state.get("lineage") else state["lineage"]
        raw = (json.dumps(state, indent=2) + "\n").encode()
        new = NewVersion(
            serial=cur.serial + 1,
            md5=_md5(raw),
            lineage=str(state["lineage"]),
            force=True,
            state=raw,
        )
        view = self.create(caller, ws_id, new)
        with self._db.unit_of_work(write=True) as s:
            s.execute(
                update(StateVersion)
                .where(StateVersion.id == view.sv.id)
                .values(rolled_back_from_id=target_id)
                .execution_options(synchronize_session=False)
            )
            record(
                s,
                at=self._clock.now(),
                actor=principal_actor(caller.id, caller.name),
                action="state.version.rollback",
                subject=f"{view.org.name}/{view.ws.name}",
                state_version_id=view.sv.id,
                rolled_back_to=target_id,
            )
            s.commit()
        view.sv.rolled_back_from_id = target_id
        return view

    def discard_stale_pending(self, older_than_seconds: int) -> int:
        """Drop pending versions whose upload URLs can no longer be used."""
        cutoff = self._clock.now().timestamp() - older_than_seconds
        with self._db.unit_of_work(write=True) as s:
            rows = [
                r
                for r in s.scalars(select(StateVersion).where(StateVersion.status == "pending"))
                if r.created_at.timestamp() < cutoff
            ]
            if rows:
                s.execute(delete(StateVersion).where(StateVersion.id.in_([r.id for r in rows])))
            s.commit()
            return len(rows)

    def readable(self, caller: Subject, ws_id: str) -> None:
        with self._db.unit_of_work() as s:
            org, ws = WorkspaceService.find(s, caller, ws_id)
            if not authz.can(caller, WORKSPACE_READ, org.id, ws.name, ws.id):
                raise NotFound("workspace not found")


def _md5(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _check_header(header: inspect.StateHeader, new: NewVersion) -> None:
    if header.lineage != new.lineage:
        raise Invalid(
            f"the state file's lineage {header.lineage} differs from the lineage attribute "
            f"{new.lineage}",
            pointer="/data/attributes/lineage",
        )
    if header.serial != new.serial:
        raise Invalid(
            f"the state file's serial {header.serial} differs from the serial attribute "
            f"{new.serial}",
            pointer="/data/attributes/serial",
        )


def decode_base64(value: str, pointer: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("the value is not valid base64", pointer=pointer) from None
