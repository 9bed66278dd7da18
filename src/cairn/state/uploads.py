"""The hosted (two-step) state upload: a pending version gets signed, single-use upload URLs
(``tfeapi.signed``); a PUT to one streams the bytes into the blob store, checks them against
the version's MD5 and reads the whole state (header, depth, resource count), then finalizes
the version in one transaction with the same rules as an inline upload
(``state.store.finalize``). A JSON state is checked (well-formed, bounded depth) the same way.

A URL is bound to its version (the signature covers the version's ID), its kind (``state`` or
``json``) and a random nonce stored on the row and cleared when used, so it works once; it
expires after ``CAIRN_UPLOAD_URL_TTL`` on the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update

from cairn.audit.log import Actor
from cairn.auth.model import User
from cairn.authz.subject import user_holder
from cairn.blobs.store import BlobStore, BlobWriter
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Invalid, NotFound, Unauthorized
from cairn.organizations.model import Organization
from cairn.state import inspect, store
from cairn.state.model import StateVersion
from cairn.tfeapi.signed import Signer
from cairn.workspaces.model import Workspace

PURPOSE = "state-upload"
KINDS = ("state", "json")
_REFUSED = "this upload URL is not valid or has expired; create a new state version"
_USED = "this upload URL has already been used; create a new state version"


@dataclass
class Upload:
    """An upload URL's body on its way into the blob store."""

    sv_id: str
    kind: str
    nonce: str
    sv: StateVersion
    writer: BlobWriter


class HostedUploads:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        signer: Signer,
        clock: Clock,
        *,
        ttl: timedelta,
        max_state_bytes: int,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._signer = signer
        self._clock = clock
        self._ttl = ttl
        self._max = max_state_bytes

    def token(self, sv: StateVersion, kind: str) -> str | None:
        """The signed path segment of a pending version's upload URL of ``kind``, or None
        when there is nothing (more) to upload."""
        nonce = sv.upload_nonce if kind == "state" else sv.json_upload_nonce
        if sv.status != "pending" or not nonce:
            return None
        return self._signer.sign(PURPOSE, sv.id, [kind, nonce], self._ttl)

    def check(self, sv_id: str, token: str) -> tuple[str, str]:
        """(kind, nonce) of a valid upload token; Unauthorized otherwise."""
        kind, nonce = self._signer.verify(PURPOSE, sv_id, token, fields=2, refused=_REFUSED)
        if kind not in KINDS:  # only ever signed for a known kind; checked all the same
            raise Unauthorized(_REFUSED)
        return kind, nonce

    def start(self, sv_id: str, token: str) -> Upload:
        """Check an upload URL and open a blob writer for its body."""
        kind, nonce = self.check(sv_id, token)
        with self._db.unit_of_work() as s:
            sv = s.get(StateVersion, sv_id)
            expected = (
                None
                if sv is None
                else (sv.upload_nonce if kind == "state" else sv.json_upload_nonce)
            )
            if sv is None or expected != nonce:
                raise Conflict(_USED)
        return Upload(sv_id, kind, nonce, sv, self._blobs.writer(max_size=self._max))

    def finish(self, upload: Upload, source: str) -> int:
        """Commit the uploaded bytes and finalize the version; returns the size. ``source``:
        the client address, for the audit event."""
        sv_id, kind, nonce, sv = upload.sv_id, upload.kind, upload.nonce, upload.sv
        ref = upload.writer.commit()
        if kind == "json":
            inspect.check_json(self._blobs.iter_chunks(ref.sha256))
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
        # The whole file is checked (and its resources counted) before the version is
        # finalized: a state cairn cannot process is never committed.
        header = inspect.read_state(self._blobs.iter_chunks(ref.sha256))
        store.check_header(header, store.NewVersion(sv.serial, sv.md5, sv.lineage, sv.force, None))
        with self._db.unit_of_work(write=True) as s:
            fresh = s.get(StateVersion, sv_id)
            if fresh is None:
                raise NotFound("the state version was deleted during its upload")
            sv = fresh
            creator_id = sv.created_by_id
            assert creator_id is not None
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
            now = self._clock.now()
            # The creator took the lock as a user holder (``authz.subject.holder_of``).
            holder = user_holder(creator_id)
            store.finalize(s, org, ws, sv, holder, ref, header, None, now=now, nonce=nonce)
            creator = s.get(User, creator_id)
            actor = Actor(creator_id, creator.username if creator else "", source)
            store.audit_version(s, now, actor, org, ws, sv)
            s.commit()
        return ref.size
