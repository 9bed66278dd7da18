"""Counting a finalized version's resources after its transaction (HCP Terraform's
"resources-processed").

Versions are counted before they commit (``inspect.read_state`` checks the whole file), so
this is for versions committed before that was so: counted by housekeeping, or right away when
safe-delete needs the count. A version that cannot be processed is marked ``UNPROCESSABLE``
and never retried; any other failure is logged and the pass moves on to the next version.
Idempotent, so several replicas may count the same version."""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from cairn.blobs.store import BlobStore
from cairn.db.engine import Database
from cairn.errors import Invalid
from cairn.state import inspect
from cairn.state.model import StateVersion
from cairn.workspaces.model import Workspace

log = logging.getLogger("cairn.state")

# StateVersion.resource_count before counting, and once counting has failed for good.
UNCOUNTED = -1
UNPROCESSABLE = -2


class ResourceCounter:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    def process(self, sv_id: str) -> None:
        """Count resources of a finalized version (idempotent; safe on several replicas)."""
        with self._db.unit_of_work() as s:
            sv = s.get(StateVersion, sv_id)
            if (
                sv is None
                or sv.status != "finalized"
                or sv.sha256 is None
                or sv.resource_count != UNCOUNTED
            ):
                return
            digest = sv.sha256
        try:
            count = inspect.count_resources(self._blobs.iter_chunks(digest))
        except Invalid as exc:
            log.warning(
                "state version cannot be processed; marked and skipped from now on",
                extra={"state_version": sv_id, "error": exc.detail},
            )
            self._store(sv_id, UNPROCESSABLE)
            return
        self._store(sv_id, count)

    def _store(self, sv_id: str, count: int) -> None:
        with self._db.unit_of_work(write=True) as s:
            s.execute(
                update(StateVersion)
                .where(StateVersion.id == sv_id, StateVersion.resource_count == UNCOUNTED)
                .values(resource_count=count)
                .execution_options(synchronize_session=False)
            )
            if count >= 0:  # an unprocessable version leaves the workspace's count as it was
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
        """Process every finalized version not yet counted (after a crash or restart). One
        version that fails is logged and skipped: it never stops the pass (or the server)."""
        with self._db.unit_of_work() as s:
            todo = list(
                s.scalars(
                    select(StateVersion.id).where(
                        StateVersion.status == "finalized",
                        StateVersion.resource_count == UNCOUNTED,
                    )
                )
            )
        for sv_id in todo:
            try:
                self.process(sv_id)
            except Exception:
                log.exception(
                    "state version could not be processed", extra={"state_version": sv_id}
                )
        return len(todo)
