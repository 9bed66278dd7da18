"""cairn.state on SQLite in ``tmp_path`` with a clock we move: the hosted upload URL works
within its lifetime and once, is refused after it (the version stays pending), and stale
pending versions are discarded by the clock, not the wall clock. Only the lock holder uploads.
(The same through HTTP: tests/api/state/test_upload_url_expiry.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from cairn.auth.model import User as UserRow
from cairn.authz.subject import User
from cairn.blobs.filesystem import FilesystemBlobStore
from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.db.engine import Database, make_engine
from cairn.errors import Conflict, Unauthorized
from cairn.migrations.migrate import upgrade
from cairn.organizations.service import OrganizationService
from cairn.state.processing import ResourceCounter
from cairn.state.service import NewVersion, StateService
from cairn.state.uploads import HostedUploads
from cairn.tfeapi.signed import Signer
from cairn.workspaces.locks import LockService
from cairn.workspaces.service import WorkspaceService, WorkspaceSettings
from tests.support.statefile import md5_hex, new_lineage, state_file

ADMIN = User("user-admin", "admin", "t-admin", is_site_admin=True)
OTHER = User("user-other", "other", "t-other", is_site_admin=True)
TTL = timedelta(hours=1)
MAX = 16 * 1024 * 1024


@dataclass
class Cairn:
    clock: FrozenClock
    states: StateService
    uploads: HostedUploads
    locks: LockService
    ws_id: str


@pytest.fixture
def cairn(tmp_path: Path) -> Iterator[Cairn]:
    db = Database(make_engine(f"sqlite:///{tmp_path / 'cairn.db'}"))
    upgrade(db.engine)
    clock = FrozenClock()
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    blobs.check()
    counter = ResourceCounter(db, blobs)
    signer = Signer(Keyring("unit-test-master-secret-0123456789abcdef"), clock)
    with db.unit_of_work(write=True) as s:  # upload URLs re-check their uploader's row
        for who in (ADMIN, OTHER):
            s.add(UserRow(id=who.id, username=who.name, is_site_admin=True, created_at=clock.now()))
        s.commit()
    OrganizationService(db, clock).create(ADMIN, "acme", "", None)
    ws = WorkspaceService(db, clock).create(ADMIN, "acme", WorkspaceSettings(name="app"))
    try:
        yield Cairn(
            clock,
            StateService(db, blobs, clock, counter, max_state_bytes=MAX),
            HostedUploads(db, blobs, signer, clock, ttl=TTL, max_state_bytes=MAX),
            LockService(db, clock),
            ws.ws.id,
        )
    finally:
        db.dispose()


def pending(cairn: Cairn, raw: bytes, lineage: str, serial: int = 1) -> str:
    new = NewVersion(serial, md5_hex(raw), lineage, False, None)
    view = cairn.states.create(ADMIN, cairn.ws_id, new, "192.0.2.1")
    assert view.sv.status == "pending"
    return view.sv.id


def put(cairn: Cairn, sv_id: str, token: str, raw: bytes) -> int:
    upload = cairn.uploads.start(sv_id, token)
    upload.staged.feed(raw)
    return cairn.uploads.finish(upload, "192.0.2.1")


def test_an_upload_url_works_once_within_its_lifetime(cairn: Cairn) -> None:
    cairn.locks.lock(ADMIN, cairn.ws_id, "", "192.0.2.1")
    lineage = new_lineage()
    raw = state_file(1, lineage)
    sv_id = pending(cairn, raw, lineage)
    token = cairn.uploads.token(cairn.states.get(ADMIN, sv_id), "state", ADMIN)
    assert token is not None
    cairn.clock.advance(TTL - timedelta(seconds=1))
    assert put(cairn, sv_id, token, raw) == len(raw)
    assert cairn.states.current(ADMIN, cairn.ws_id).sv.id == sv_id
    assert cairn.uploads.token(cairn.states.get(ADMIN, sv_id), "state", ADMIN) is None
    with pytest.raises(Conflict, match="already been used"):
        cairn.uploads.start(sv_id, token)


def test_an_expired_upload_url_is_refused(cairn: Cairn) -> None:
    cairn.locks.lock(ADMIN, cairn.ws_id, "", "192.0.2.1")
    lineage = new_lineage()
    sv_id = pending(cairn, state_file(1, lineage), lineage)
    token = cairn.uploads.token(cairn.states.get(ADMIN, sv_id), "state", ADMIN)
    assert token is not None
    cairn.clock.advance(TTL + timedelta(seconds=1))
    with pytest.raises(Unauthorized, match="expired"):
        cairn.uploads.start(sv_id, token)
    assert cairn.states.get(ADMIN, sv_id).sv.status == "pending"
    # Housekeeping drops what can no longer be uploaded, by the same clock.
    assert cairn.states.discard_stale_pending(int(TTL.total_seconds()) + 3600) == 0
    cairn.clock.advance(timedelta(hours=1))
    assert cairn.states.discard_stale_pending(int(TTL.total_seconds()) + 3600) == 1


def test_only_the_lock_holder_writes_state(cairn: Cairn) -> None:
    lineage = new_lineage()
    with pytest.raises(Conflict, match="not locked"):
        pending(cairn, state_file(1, lineage), lineage)
    cairn.locks.lock(OTHER, cairn.ws_id, "", "192.0.2.1")
    with pytest.raises(Conflict, match="only the lock holder may upload state"):
        pending(cairn, state_file(1, lineage), lineage)
