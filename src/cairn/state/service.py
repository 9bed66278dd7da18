"""State versions: reading history and bytes, creating versions (inline, or pending for a
hosted upload), rolling back. The rules are in ``state.store``, the hosted upload in
``state.uploads``, resource counting in ``state.processing``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, update

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.subject import Subject, holder_of
from cairn.blobs.store import BlobRef, BlobStore
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Invalid, NotFound
from cairn.paging import Page
from cairn.state import inspect, store
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.state.processing import SYNC_PROCESS_LIMIT, UNPROCESSABLE, ResourceCounter
from cairn.state.store import LostRace, NewVersion, VersionView
from cairn.workspaces import store as workspaces

__all__ = [
    "SYNC_PROCESS_LIMIT",
    "LostRace",
    "NewVersion",
    "StateService",
    "VersionView",
    "decode_base64",
]


class StateService:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        clock: Clock,
        counter: ResourceCounter,
        *,
        max_state_bytes: int,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._counter = counter
        self._max = max_state_bytes

    # ---- reading ------------------------------------------------------------------------------

    def get(self, caller: Subject, sv_id: str) -> VersionView:
        with self._db.unit_of_work() as s:
            org, ws, sv = store.find(s, caller, sv_id)
            return store.view(s, org, ws, sv)

    def current(self, caller: Subject, ws_id: str) -> VersionView:
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            if ws.current_state_version_id is None:
                raise NotFound(f"workspace {org.name}/{ws.name} has no state yet")
            sv = s.get(StateVersion, ws.current_state_version_id)
            assert sv is not None
            return store.view(s, org, ws, sv)

    def history(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[VersionView], int]:
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            rows, total = store.history(s, ws, page)
            outs = store.outputs(s, [r.id for r in rows])
            return [VersionView(r, org, ws, outs[r.id]) for r in rows], total

    def output(self, caller: Subject, output_id: str) -> tuple[StateVersionOutput, VersionView]:
        with self._db.unit_of_work() as s:
            out = s.get(StateVersionOutput, output_id)
            if out is None:
                raise authz.not_found("state version output", repr(output_id))
            org, ws, sv = store.find(s, caller, out.state_version_id)
            return out, VersionView(sv, org, ws, [])

    def download(
        self, caller: Subject, sv_id: str, *, json_state: bool = False
    ) -> tuple[str, int, Path | None]:
        """(sha256, size, local path or None) of a finalized version's bytes."""
        with self._db.unit_of_work() as s:
            _, _, sv = store.find(s, caller, sv_id)
        digest, size = (sv.json_sha256, sv.json_size) if json_state else (sv.sha256, sv.size)
        if sv.status != "finalized" or digest is None:
            raise NotFound(
                f"state version {sv_id} has no {'JSON ' if json_state else ''}state uploaded"
            )
        return digest, size, self._blobs.local_path(digest)

    def iter_blob(self, sha256: str) -> Iterator[bytes]:
        return self._blobs.iter_chunks(sha256)

    # ---- writing ------------------------------------------------------------------------------

    def create(self, caller: Subject, ws_id: str, new: NewVersion, source: str) -> VersionView:
        """Create a version: inline (``state`` given: finalized at once) or pending (upload
        URLs follow). ``source``: the client address, for the audit event."""
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            same = store.check_writable(s, caller, org, ws, new)
            if same is not None:
                return store.view(s, org, ws, same)
        if new.state is None:
            return self._create_pending(caller, ws_id, new)
        md5 = _md5(new.state)
        if md5 != new.md5:
            raise Invalid(
                f"md5 {new.md5} does not match the uploaded state (its MD5 is {md5})",
                pointer="/data/attributes/md5",
            )
        # The whole file is checked (and its resources counted) before anything is stored: a
        # state cairn cannot process is never committed.
        try:
            header = inspect.read_state(new.state)
        except Invalid as exc:
            raise Invalid(exc.detail, pointer="/data/attributes/state") from None
        store.check_header(header, new)
        if new.json_state is not None:
            try:
                inspect.check_json(new.json_state)
            except Invalid as exc:
                raise Invalid(exc.detail, pointer="/data/attributes/json-state") from None
        # Blobs are written and verified before the row's transaction.
        writer = self._blobs.writer(max_size=self._max)
        writer.write(new.state)
        ref = writer.commit()
        json_ref = None
        if new.json_state:
            jw = self._blobs.writer(max_size=self._max)
            jw.write(new.json_state)
            json_ref = jw.commit()
        sv_id = ids.new_id("state_version")
        actor = Actor(caller.id, caller.name, source)
        try:
            same_view = self._insert_finalized(
                caller, actor, ws_id, sv_id, new, ref, header, json_ref
            )
        except LostRace:
            # Another request committed first: an identical retry returns its version.
            with self._db.unit_of_work() as s:
                org, ws = workspaces.find(s, caller, ws_id)
                same = store.check_writable(s, caller, org, ws, new)
                if same is None:
                    raise
                return store.view(s, org, ws, same)
        if same_view is not None:
            return same_view
        return self.get(caller, sv_id)

    def _insert_finalized(
        self,
        caller: Subject,
        actor: Actor,
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
            org, ws = workspaces.find(s, caller, ws_id)
            same = store.check_writable(s, caller, org, ws, new)
            if same is not None:
                return store.view(s, org, ws, same)
            now = self._clock.now()
            sv = StateVersion(
                id=sv_id,
                workspace_id=ws.id,
                serial=new.serial,
                lineage=new.lineage,
                md5=new.md5,
                force=new.force,
                status="pending",
                created_by_id=caller.id,
                created_at=now,
            )
            s.add(sv)
            s.flush()
            store.finalize(s, org, ws, sv, holder_of(caller), ref, header, json_ref, now=now)
            store.audit_version(s, now, actor, org, ws, sv)
            s.commit()
        return None

    def _create_pending(self, caller: Subject, ws_id: str, new: NewVersion) -> VersionView:
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find(s, caller, ws_id)
            same = store.check_writable(s, caller, org, ws, new)
            if same is not None:
                return store.view(s, org, ws, same)
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

    # ---- rollback -----------------------------------------------------------------------------

    def rollback(self, caller: Subject, ws_id: str, target_id: str, source: str) -> VersionView:
        """A new version with the content of an earlier one, its serial raised above current."""
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
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
            unprocessable = target.resource_count == UNPROCESSABLE
        # Checked (bounded) before it is loaded: a version committed before cairn checked
        # whole states may nest too deeply to load.
        try:
            if unprocessable:
                raise Invalid("its state could not be processed")
            inspect.check_json(self._blobs.iter_chunks(digest), what="state")
        except Invalid as exc:
            raise Invalid(
                f"state version {target_id} cannot be rolled back to: {exc.detail}",
                pointer="/data/relationships/rollback-state-version",
            ) from None
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
        view = self.create(caller, ws_id, new, source)
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
                actor=Actor(caller.id, caller.name, source),
                action="state.version.rollback",
                subject=f"{view.org.name}/{view.ws.name}",
                state_version_id=view.sv.id,
                rolled_back_to=target_id,
            )
            s.commit()
        view.sv.rolled_back_from_id = target_id
        return view

    # ---- housekeeping -------------------------------------------------------------------------

    def process(self, sv_id: str) -> None:
        self._counter.process(sv_id)

    def process_current(self, ws_id: str) -> None:
        self._counter.process_current(ws_id)

    def process_pending(self) -> int:
        return self._counter.process_pending()

    def discard_stale_pending(self, older_than_seconds: int) -> int:
        """Drop pending versions whose upload URLs can no longer be used."""
        cutoff = self._clock.now() - timedelta(seconds=older_than_seconds)
        with self._db.unit_of_work(write=True) as s:
            gone = affected(
                s.execute(
                    delete(StateVersion).where(
                        StateVersion.status == "pending", StateVersion.created_at < cutoff
                    )
                )
            )
            s.commit()
            return gone


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def decode_base64(value: str, pointer: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("the value is not valid base64", pointer=pointer) from None
