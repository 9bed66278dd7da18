"""The hosted (two-step) state upload: a pending version gets signed, single-use upload URLs
(``tfeapi.signed``); a PUT to one streams the bytes into an uncommitted blob while their MD5 is
computed and the state is read (header, depth, resource count); only when all of that holds is
the blob committed and the version finalized, in one transaction with the same rules as an
inline upload (``state.store.finalize``). A JSON state is checked (well-formed, bounded depth)
the same way. A refused upload is aborted: it leaves no blob behind.

The rules of a URL:

* it is handed only to a caller who may write the state: ``workspace:write`` on the workspace
  and holding its lock (readers see ``null``); it is bound to its version and kind (the
  signature covers the version's ID, ``state`` or ``json``, a random nonce stored on the row,
  and the ID of the caller it was handed to, *the uploader*); it expires after
  ``upload_url_ttl_seconds`` on the injected clock;
* it is used once whatever the outcome: the first PUT clears the nonce (one conditional
  UPDATE, committed before the body is read), so a second PUT is a 409 even when the first
  was refused (wrong MD5, not a state, too large);
* the uploader's rights are checked again when the PUT starts and when it finishes (in the
  finalizing transaction): still ``workspace:write``, still holding the lock; otherwise
  404/403/409 and nothing is stored;
* the JSON-state URL works while its version is pending, and after the state is finalized
  only while that version is still current and the uploader still holds the lock (go-tfe
  sends both PUTs at once); after that it is dead, so ``json-download`` serves only bytes
  uploaded by a writer during the upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from cairn import authz
from cairn.audit.log import Actor
from cairn.auth.model import User
from cairn.auth.subjects import subject_now
from cairn.authz.permissions import STATE_WRITE
from cairn.authz.subject import Subject, holder_of, user_holder
from cairn.blobs.store import BlobStore
from cairn.clock import Clock
from cairn.db.engine import Database, affected
from cairn.errors import Conflict, Invalid, NotFound, Unauthorized
from cairn.organizations.model import Organization
from cairn.state import store
from cairn.state.intake import Kind, Staged
from cairn.state.model import StateVersion
from cairn.state.store import VersionView
from cairn.tfeapi.signed import Signer
from cairn.workspaces import store as workspaces
from cairn.workspaces.model import Workspace

PURPOSE = "state-upload"
KINDS: tuple[Kind, ...] = ("state", "json")
_REFUSED = "this upload URL is not valid or has expired; create a new state version"
_USED = (
    "this upload URL has already been used (an upload URL works once, whatever the outcome); "
    "create a new state version to upload again"
)


@dataclass
class Upload:
    """An upload URL's body on its way into the blob store."""

    sv_id: str
    kind: Kind
    uploader_id: str
    sv: StateVersion
    staged: Staged


def may_upload(caller: Subject, view: VersionView) -> bool:
    """Whether ``caller`` may receive the upload URLs of ``view``'s version: write access to
    its workspace and holding its lock."""
    target = workspaces.target(view.org, view.ws)
    return authz.allowed(caller, STATE_WRITE, target) and view.ws.held_by(holder_of(caller))


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

    def token(self, view: VersionView, kind: str, caller: Subject) -> str | None:
        """The signed path segment of a pending version's upload URL of ``kind`` for
        ``caller``, or None when there is nothing (more) to upload or the caller may not."""
        sv = view.sv
        nonce = sv.upload_nonce if kind == "state" else sv.json_upload_nonce
        if sv.status != "pending" or not nonce or not may_upload(caller, view):
            return None
        return self._signer.sign(PURPOSE, sv.id, [kind, nonce, caller.id], self._ttl)

    def check(self, sv_id: str, token: str) -> tuple[Kind, str, str]:
        """(kind, nonce, uploader ID) of a valid upload token; Unauthorized otherwise."""
        kind, nonce, uploader = self._signer.verify(
            PURPOSE, sv_id, token, fields=3, refused=_REFUSED
        )
        if kind == "state":
            return "state", nonce, uploader
        if kind == "json":
            return "json", nonce, uploader
        raise Unauthorized(_REFUSED)  # only ever signed for a known kind; checked all the same

    def start(self, sv_id: str, token: str) -> Upload:
        """Use up an upload URL (committed at once: it never works again, whatever happens
        next), check its uploader may still write, and stage a blob for its body."""
        kind, nonce, uploader = self.check(sv_id, token)
        column = StateVersion.upload_nonce if kind == "state" else StateVersion.json_upload_nonce
        with self._db.unit_of_work(write=True) as s:
            used = affected(
                s.execute(
                    update(StateVersion)
                    .where(StateVersion.id == sv_id, column == nonce)
                    .values({column: None})
                    .execution_options(synchronize_session=False)
                )
            )
            s.commit()
        if used != 1:
            raise Conflict(_USED)
        with self._db.unit_of_work() as s:
            sv, _, _ = self._writable(s, sv_id, kind, uploader)
            s.expunge(sv)
        return Upload(sv_id, kind, uploader, sv, Staged(self._blobs, kind, max_size=self._max))

    def _writable(
        self, s: Session, sv_id: str, kind: Kind, uploader_id: str
    ) -> tuple[StateVersion, Organization, Workspace]:
        """The version, its organization and workspace, if the uploader may still write there:
        ``workspace:write`` (404/403), the lock (409), and for a JSON state a version still
        pending, or current (409)."""
        sv = s.get(StateVersion, sv_id)
        if sv is None:
            raise NotFound("the state version was deleted during its upload")
        ws = s.get(Workspace, sv.workspace_id)
        if ws is None:
            raise NotFound("the workspace of this state version was deleted")
        org = s.get(Organization, ws.organization_id)
        assert org is not None
        subject = subject_now(s, uploader_id)
        if subject is None:
            raise authz.not_found("workspace", repr(ws.id))
        authz.require(subject, STATE_WRITE, workspaces.target(org, ws), doing="write state to")
        if not ws.held_by(user_holder(uploader_id)):
            raise Conflict(
                f"workspace {org.name}/{ws.name} is no longer locked by the uploader; only the "
                "lock holder may upload state: lock it and create a new state version"
            )
        if kind == "json" and sv.status != "pending":
            if ws.current_state_version_id != sv.id:
                raise Conflict(
                    "a newer state version is current; this JSON state belongs to an older "
                    "one and is no longer accepted"
                )
            if sv.json_sha256 is not None:
                raise Conflict(_USED)
        return sv, org, ws

    def finish(self, upload: Upload, source: str) -> int:
        """Check the staged bytes, commit them and finalize the version (or attach the JSON
        state); returns the size. ``source``: the client address, for the audit event. On any
        error the caller aborts ``upload.staged``."""
        staged, sv = upload.staged, upload.sv
        staged.close()  # Invalid: not a state (or not JSON) cairn can process
        if upload.kind == "json":
            return self._finish_json(upload)
        if staged.md5 != sv.md5:
            raise Invalid(
                f"the uploaded bytes have MD5 {staged.md5}, but the state version was created "
                f"with md5 {sv.md5}; nothing was stored. This upload URL is used up: create a "
                "new state version"
            )
        assert staged.header is not None
        header = staged.header
        store.check_header(header, store.NewVersion(sv.serial, sv.md5, sv.lineage, sv.force, None))
        with self._db.unit_of_work() as s:  # refused before anything is committed
            self._writable(s, upload.sv_id, "state", upload.uploader_id)
        ref = staged.commit()
        with self._db.unit_of_work(write=True) as s:
            fresh, org, ws = self._writable(s, upload.sv_id, "state", upload.uploader_id)
            if ws.current_state_version_id is not None:
                cur = s.get(StateVersion, ws.current_state_version_id)
                if cur is not None and cur.serial >= fresh.serial:
                    raise Conflict(
                        f"a version with serial {cur.serial} became current meanwhile; "
                        "serials never go backwards"
                    )
            now = self._clock.now()
            holder = user_holder(upload.uploader_id)
            store.finalize(s, org, ws, fresh, holder, ref, header, None, now=now)
            uploader = s.get(User, upload.uploader_id)
            actor = Actor(upload.uploader_id, uploader.username if uploader else "", source)
            store.audit_version(s, now, actor, org, ws, fresh)
            s.commit()
        return ref.size

    def _finish_json(self, upload: Upload) -> int:
        with self._db.unit_of_work() as s:  # refused before anything is committed
            self._writable(s, upload.sv_id, "json", upload.uploader_id)
        ref = upload.staged.commit()
        with self._db.unit_of_work(write=True) as s:
            self._writable(s, upload.sv_id, "json", upload.uploader_id)
            n = affected(
                s.execute(
                    update(StateVersion)
                    .where(StateVersion.id == upload.sv_id, StateVersion.json_sha256.is_(None))
                    .values(json_sha256=ref.sha256, json_size=ref.size)
                    .execution_options(synchronize_session=False)
                )
            )
            if n != 1:
                raise Conflict(_USED)
            s.commit()
        return ref.size
