"""State versions: reading history and bytes, creating versions (inline, or pending for a
hosted upload), rolling back. The rules are in ``state.store``, the hosted upload in
``state.uploads``, resource counting in ``state.processing``."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, update

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.permissions import STATE_READ, STATE_READ_OUTPUTS
from cairn.authz.subject import Subject, creator_of, holder_of, run_of
from cairn.blobs.store import BlobRef, BlobStore
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Invalid, NotFound
from cairn.paging import Page
from cairn.state import inspect, store
from cairn.state.intake import Kind, Staged, staged_bytes
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.state.processing import UNPROCESSABLE, ResourceCounter
from cairn.state.store import LostRace, NewVersion, VersionView
from cairn.workspaces import consumers
from cairn.workspaces import store as workspaces

__all__ = [
    "LostRace",
    "NewVersion",
    "StateService",
    "VersionView",
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

    def get(self, caller: Subject, sv_id: str, *, need: str = STATE_READ) -> VersionView:
        """A version (``need``: ``state:read``, or ``state:read-outputs`` to show only its
        outputs)."""
        with self._db.unit_of_work() as s:
            org, ws, sv = store.find(s, caller, sv_id)
            store.require_state(caller, org, ws, need)
            consumers.require_consumable(s, caller, org, ws)
            return store.view(s, org, ws, sv)

    def current(self, caller: Subject, ws_id: str, *, need: str = STATE_READ) -> VersionView:
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            store.require_state(caller, org, ws, need)
            consumers.require_consumable(s, caller, org, ws)
            if ws.current_state_version_id is None:
                raise NotFound(f"workspace {org.name}/{ws.name} has no state yet")
            sv = s.get(StateVersion, ws.current_state_version_id)
            assert sv is not None
            return store.view(s, org, ws, sv)

    def history(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[VersionView], int]:
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            store.require_state(caller, org, ws, STATE_READ)
            consumers.require_consumable(s, caller, org, ws)
            rows, total = store.history(s, ws, page)
            outs = store.outputs(s, [r.id for r in rows])
            return [VersionView(r, org, ws, outs[r.id]) for r in rows], total

    def output(self, caller: Subject, output_id: str) -> tuple[StateVersionOutput, VersionView]:
        with self._db.unit_of_work() as s:
            out = s.get(StateVersionOutput, output_id)
            if out is None:
                raise authz.not_found("state version output", repr(output_id))
            org, ws, sv = store.find(s, caller, out.state_version_id)
            store.require_state(caller, org, ws, STATE_READ_OUTPUTS)
            consumers.require_consumable(s, caller, org, ws)
            return out, VersionView(sv, org, ws, [])

    def download(
        self, caller: Subject, sv_id: str, *, json_state: bool = False
    ) -> tuple[str, int, Path | None]:
        """(sha256, size, local path or None) of a finalized version's bytes."""
        with self._db.unit_of_work() as s:
            org, ws, sv = store.find(s, caller, sv_id)
            store.require_state(caller, org, ws, STATE_READ)
            consumers.require_consumable(s, caller, org, ws)
        digest, size = (sv.json_sha256, sv.json_size) if json_state else (sv.sha256, sv.size)
        if sv.status != "finalized" or digest is None:
            raise NotFound(
                f"state version {sv_id} has no {'JSON ' if json_state else ''}state uploaded"
            )
        return digest, size, self._blobs.local_path(digest)

    def iter_blob(self, sha256: str) -> Iterator[bytes]:
        return self._blobs.iter_chunks(sha256)

    # ---- writing ------------------------------------------------------------------------------

    def stage(self, kind: Kind) -> Staged:
        """An uncommitted, checked blob for a state (``"state"``) or JSON state (``"json"``)
        that arrives in a request body."""
        return Staged(self._blobs, kind, max_size=self._max)

    def create(self, caller: Subject, ws_id: str, new: NewVersion, source: str) -> VersionView:
        """Create a version: inline (``state`` given: finalized at once) or pending (upload
        URLs follow). ``source``: the client address, for the audit event. Staged bytes that
        are not committed (refused, or an idempotent repeat) are thrown away."""
        try:
            return self._create(caller, ws_id, new, source)
        finally:
            for staged in (new.state, new.json_state):
                if staged is not None:
                    staged.abort()  # a no-op once committed

    def _create(self, caller: Subject, ws_id: str, new: NewVersion, source: str) -> VersionView:
        if not new.lineage:
            if new.state is None:
                raise Invalid(
                    "attribute 'lineage' is required (it may be left out only when the state "
                    "is sent inline, in 'state', and carries its lineage)",
                    pointer="/data/attributes/lineage",
                )
            # HCP Terraform takes the lineage from the state itself.
            new.lineage = _close_state(new.state).lineage or ""
            if len(new.lineage) > 64:
                raise Invalid(
                    "the state's lineage is longer than 64 characters; Terraform writes a UUID",
                    pointer="/data/attributes/state",
                )
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)
            same = store.check_writable(s, caller, org, ws, new)
            if same is not None:
                return store.view(s, org, ws, same)
        if new.state is None:
            return self._create_pending(caller, ws_id, new)
        # The whole file was checked (and its resources counted) while it arrived, before
        # anything is committed: a state cairn cannot process is never stored.
        header = _close_state(new.state)
        if new.state.md5 != new.md5:
            raise Invalid(
                f"md5 {new.md5} does not match the uploaded state (its MD5 is {new.state.md5})",
                pointer="/data/attributes/md5",
            )
        store.check_header(header, new)
        if new.json_state is not None:
            try:
                new.json_state.close()
            except Invalid as exc:
                raise Invalid(exc.detail, pointer="/data/attributes/json-state") from None
        # Blobs are written and verified before the row's transaction.
        ref = new.state.commit()
        json_ref = new.json_state.commit() if new.json_state is not None else None
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
                created_by_id=creator_of(caller),
                run_id=run_of(caller),
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
                created_by_id=creator_of(caller),
                run_id=run_of(caller),
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
            state=staged_bytes(self._blobs, "state", raw, max_size=self._max),
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


def _close_state(staged: Staged) -> inspect.StateHeader:
    """The checked header of a staged state; Invalid pointing at the ``state`` attribute."""
    try:
        staged.close()
    except Invalid as exc:
        raise Invalid(exc.detail, pointer="/data/attributes/state") from None
    assert staged.header is not None
    return staged.header
