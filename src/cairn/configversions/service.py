"""Configuration versions: creating them, their one upload, reading and downloading them.

The upload follows the state's hosted upload (``state.uploads``), for a ``.tar.gz``:

* ``create`` makes a ``pending`` row with a random nonce and hands the creator (who may queue
  plans: ``run:plan``) an upload URL signed over the version's ID and that nonce, valid for
  ``ttl`` on the injected clock (``tfeapi.signed``). As in HCP Terraform the URL is shown
  only in the create answer;
* ``start_upload``: the first PUT clears the nonce in one conditional UPDATE, committed before
  the body is read, so the URL works once whatever the outcome;
* the body streams into an uncommitted blob while ``configversions.archive`` checks it (size,
  gzip, tar, paths, links, inflated size); ``finish_upload`` then commits the blob, checks that
  the store holds it, and only then flips the row to ``uploaded`` — in that transaction the
  ``after_upload`` hooks run (the runs domain queues a run for ``auto-queue-runs``);
* a refused or broken-off upload is aborted (no blob left behind) and the row is marked
  ``errored`` with the reason, which the PUT also answers.

A workspace's deletion deletes its configuration versions (foreign key cascade); their blobs
are then unreferenced (``configversions.references``) and the sweep reclaims them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.authz.permissions import RUN_PLAN
from cairn.authz.subject import ServiceAccount, Subject
from cairn.blobs.store import BlobStore, BlobWriter
from cairn.clock import Clock, iso8601
from cairn.configversions.archive import ArchiveChecker, ArchiveError, Summary, size_text
from cairn.configversions.model import (
    SOURCE_API,
    VCS_SOURCES,
    ConfigurationVersion,
    ConfigurationVersionIngress,
)
from cairn.db.engine import Database, affected
from cairn.errors import ApiError, Conflict, Forbidden, NotFound, PayloadTooLarge
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.tfeapi.signed import Signer
from cairn.workspaces import store as workspaces
from cairn.workspaces.model import Workspace

PURPOSE = "configuration-upload"
# Inflated, an archive may be this many times its limit (then it is a decompression bomb).
UNPACK_FACTOR = 10
_REFUSED = (
    "this upload URL is not valid or has expired; create a new configuration version and "
    "upload to its URL"
)
_USED = (
    "this upload URL has already been used (an upload URL works once, whatever the outcome); "
    "create a new configuration version to upload again"
)

AfterUpload = Callable[[Session, ConfigurationVersion], None]
"""Runs in the transaction that makes an ``auto-queue-runs`` version ``uploaded``."""


@dataclass(frozen=True)
class NewConfig:
    auto_queue_runs: bool = True  # HCP Terraform's default
    speculative: bool = False
    provisional: bool = False
    source: str = SOURCE_API


@dataclass
class CvView:
    cv: ConfigurationVersion
    org: Organization
    ws: Workspace


class ConfigUpload:
    """An upload URL's body on its way into the blob store, checked as it streams in.

    ``feed`` raises PayloadTooLarge past the limit at once; an archive error is kept (the rest
    of the body is read and thrown away, so the client gets the answer, not a reset
    connection) and raised by ``close``."""

    def __init__(self, cv_id: str, blobs: BlobStore, *, max_bytes: int) -> None:
        self.cv_id = cv_id
        self._max = max_bytes
        self._writer: BlobWriter = blobs.writer(max_size=max_bytes)
        self._checker = ArchiveChecker(max_unpacked=max_bytes * UNPACK_FACTOR)
        self.size = 0
        self.error: ArchiveError | None = None
        self.committed = False
        self.aborted = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self._max:
            self.abort()
            raise PayloadTooLarge(too_large(self._max))
        if self.error is not None:
            return
        try:
            self._checker.feed(data)
        except ArchiveError as exc:
            self.error = exc
            self.abort()
            return
        self._writer.write(data)

    def close(self) -> Summary:
        if self.error is not None:
            raise self.error
        try:
            return self._checker.close()
        except ArchiveError as exc:
            self.error = exc
            self.abort()
            raise

    def commit(self) -> tuple[str, int]:
        assert not self.aborted and self.error is None
        ref = self._writer.commit()
        self.committed = True
        return ref.sha256, ref.size

    def abort(self) -> None:
        if self.committed or self.aborted:
            return
        self.aborted = True
        self._writer.abort()


def too_large(limit: int) -> str:
    return (
        f"the configuration archive is larger than {size_text(limit)} "
        "(CAIRN_MAX_CONFIG_MB); nothing was stored and this upload URL is used up. Leave "
        "large files out of the configuration (.terraformignore) and create a new "
        "configuration version"
    )


class ConfigVersions:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        signer: Signer,
        clock: Clock,
        *,
        ttl: timedelta,
        max_bytes: int,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._signer = signer
        self._clock = clock
        self._ttl = ttl
        self.max_bytes = max_bytes
        # Registered by the runs domain in app.py: queue a run when an auto-queue-runs
        # version becomes uploaded (called in that transaction).
        self.after_upload: list[AfterUpload] = []

    # ---- for other domains (runs, jobs) --------------------------------------------------------

    def get(self, s: Session, cv_id: str) -> ConfigurationVersion | None:
        """The row in the caller's session, whoever the caller is (the caller decides who may
        see it), or None."""
        return s.get(ConfigurationVersion, cv_id)

    def latest_uploaded(self, s: Session, workspace_id: str) -> ConfigurationVersion | None:
        """The workspace's newest ``uploaded`` configuration version, if any (a run created
        without one uses it, as in HCP Terraform)."""
        return s.scalars(
            select(ConfigurationVersion)
            .where(
                ConfigurationVersion.workspace_id == workspace_id,
                ConfigurationVersion.status == "uploaded",
            )
            .order_by(ConfigurationVersion.created_at.desc(), ConfigurationVersion.id.desc())
            .limit(1)
        ).first()

    def create_from_commit(
        self,
        s: Session,
        ws: Workspace,
        *,
        source: str,
        blob_sha256: str,
        size: int,
        speculative: bool,
        ingress: ConfigurationVersionIngress,
    ) -> ConfigurationVersion:
        """An ``uploaded`` version of a commit's archive already in the blob store (fetched and
        checked by ``webhooks.archives``), with its ingress attributes, in the caller's
        transaction (``webhooks.ingest``; the run is queued by the caller, not by
        ``after_upload``). The ingress row is flushed at once: its unique
        (workspace, commit, speculative) raises ``IntegrityError`` here when that commit
        already has a version of this kind in the workspace."""
        assert source in VCS_SOURCES, source
        now = self._clock.now()
        cv = ConfigurationVersion(
            id=ids.new_id("configuration_version"),
            workspace_id=ws.id,
            status="uploaded",
            source=source,
            speculative=speculative,
            auto_queue_runs=False,
            provisional=False,
            blob_sha256=blob_sha256,
            size=size,
            upload_nonce=None,
            status_timestamps={"uploaded-at": iso8601(now)},
            created_at=now,
            created_by_id=None,
        )
        s.add(cv)
        s.flush()
        ingress.configuration_version_id = cv.id
        ingress.workspace_id = ws.id
        ingress.speculative = speculative
        ingress.created_at = now
        s.add(ingress)
        s.flush()
        return cv

    def ingress(
        self, caller: Subject, cv_id: str
    ) -> tuple[CvView, ConfigurationVersionIngress | None]:
        """A version and its ingress attributes (``workspace:read``); None for a version not
        made from a commit."""
        with self._db.unit_of_work() as s:
            view = self._find(s, caller, cv_id)
            row = s.get(ConfigurationVersionIngress, cv_id)
            if row is not None:
                s.expunge(row)
            return view, row

    # ---- reading -------------------------------------------------------------------------------

    def show(self, caller: Subject, cv_id: str) -> CvView:
        with self._db.unit_of_work() as s:
            return self._find(s, caller, cv_id)

    def list(self, caller: Subject, ws_id: str, page: Page) -> tuple[list[CvView], int]:
        """One page of a workspace's configuration versions, newest first, and their total."""
        with self._db.unit_of_work() as s:
            org, ws = workspaces.find(s, caller, ws_id)  # workspace:read
            base = select(ConfigurationVersion).where(ConfigurationVersion.workspace_id == ws.id)
            total = s.scalar(select(func.count()).select_from(base.subquery())) or 0
            rows = s.scalars(
                base.order_by(
                    ConfigurationVersion.created_at.desc(), ConfigurationVersion.id.desc()
                )
                .offset(page.offset)
                .limit(page.size)
            )
            return [CvView(cv, org, ws) for cv in rows], total

    def download(self, caller: Subject, cv_id: str) -> tuple[str, int]:
        """(sha256, size) of an uploaded version's ``.tar.gz``."""
        with self._db.unit_of_work() as s:
            view = self._find(s, caller, cv_id)
        cv = view.cv
        if cv.status != "uploaded" or cv.blob_sha256 is None:
            raise NotFound(
                f"configuration version {cv_id} has no configuration to download (its status "
                f"is {cv.status}; only an uploaded one has)"
            )
        return cv.blob_sha256, cv.size

    def iter_blob(self, sha256: str) -> Iterator[bytes]:
        return self._blobs.iter_chunks(sha256)

    def _find(self, s: Session, caller: Subject, cv_id: str) -> CvView:
        cv = s.get(ConfigurationVersion, cv_id)
        if cv is None:
            raise authz.not_found("configuration version", repr(cv_id))
        try:  # workspace:read (HCP Terraform: read runs)
            org, ws = workspaces.find(s, caller, cv.workspace_id)
        except NotFound:
            raise authz.not_found("configuration version", repr(cv_id)) from None
        return CvView(cv, org, ws)

    # ---- creating ------------------------------------------------------------------------------

    def create(self, caller: Subject, ws_id: str, new: NewConfig) -> tuple[CvView, str]:
        """A pending version and the signed segment of its upload URL. Needs ``run:plan``
        (HCP Terraform: queue plans); an organization token may not (as there)."""
        with self._db.unit_of_work(write=True) as s:
            org, ws = workspaces.find(s, caller, ws_id)
            authz.require(
                caller, RUN_PLAN, workspaces.target(org, ws), doing="upload configurations to"
            )
            if isinstance(caller, ServiceAccount) and caller.team_id is None:
                raise Forbidden(
                    "an organization token may not create configuration versions (as in HCP "
                    "Terraform); use a user or team token"
                )
            nonce = secrets.token_hex(16)
            cv = ConfigurationVersion(
                id=ids.new_id("configuration_version"),
                workspace_id=ws.id,
                status="pending",
                source=new.source,
                speculative=new.speculative,
                auto_queue_runs=new.auto_queue_runs,
                provisional=new.provisional,
                upload_nonce=nonce,
                status_timestamps={},
                created_at=self._clock.now(),
                created_by_id=caller.id,
            )
            s.add(cv)
            s.commit()
            token = self._signer.sign(PURPOSE, cv.id, [nonce], self._ttl)
            return CvView(cv, org, ws), token

    # ---- the upload ----------------------------------------------------------------------------

    def start_upload(self, cv_id: str, token: str) -> ConfigUpload:
        """Use up an upload URL (committed at once: it never works again, whatever happens
        next) and stage a blob for its body."""
        (nonce,) = self._signer.verify(PURPOSE, cv_id, token, fields=1, refused=_REFUSED)
        with self._db.unit_of_work(write=True) as s:
            used = affected(
                s.execute(
                    update(ConfigurationVersion)
                    .where(
                        ConfigurationVersion.id == cv_id,
                        ConfigurationVersion.upload_nonce == nonce,
                        ConfigurationVersion.status == "pending",
                    )
                    .values(upload_nonce=None)
                    .execution_options(synchronize_session=False)
                )
            )
            exists = used == 1 or s.get(ConfigurationVersion, cv_id) is not None
            s.commit()
        if not exists:
            raise NotFound("the configuration version of this upload URL was deleted")
        if used != 1:
            raise Conflict(_USED)
        return ConfigUpload(cv_id, self._blobs, max_bytes=self.max_bytes)

    def finish_upload(self, upload: ConfigUpload) -> ConfigurationVersion:
        """Finish the checks, commit and verify the blob, then flip the row to ``uploaded``
        and run the ``after_upload`` hooks, in one transaction. On any error the caller
        aborts the upload and calls ``fail_upload``."""
        upload.close()  # ArchiveError (422): the archive is refused
        sha256, size = upload.commit()
        if size != upload.size or not self._blobs.exists(sha256):
            raise ApiError(
                "the blob store did not keep the configuration archive; nothing was stored. "
                "Create a new configuration version and upload again"
            )
        with self._db.unit_of_work(write=True) as s:
            cv = s.get(ConfigurationVersion, upload.cv_id)
            if cv is None:
                raise NotFound("the configuration version was deleted during its upload")
            if cv.status != "pending":
                raise Conflict(f"the configuration version is {cv.status}, no longer pending")
            stamps = {**(cv.status_timestamps or {}), "uploaded-at": iso8601(self._clock.now())}
            flipped = affected(
                s.execute(
                    update(ConfigurationVersion)
                    .where(
                        ConfigurationVersion.id == cv.id, ConfigurationVersion.status == "pending"
                    )
                    .values(
                        status="uploaded", blob_sha256=sha256, size=size, status_timestamps=stamps
                    )
                    .execution_options(synchronize_session=False)
                )
            )
            if flipped != 1:
                raise Conflict("the configuration version stopped being pending meanwhile")
            s.refresh(cv)
            if cv.auto_queue_runs:
                for hook in self.after_upload:
                    hook(s, cv)
            s.commit()
            s.expunge(cv)
            return cv

    def fail_upload(self, cv_id: str, message: str) -> None:
        """Mark a pending version ``errored`` with ``message`` (its upload was refused or
        broke off); a version no longer pending is left alone."""
        now = iso8601(self._clock.now())
        with self._db.unit_of_work(write=True) as s:
            cv = s.get(ConfigurationVersion, cv_id)
            if cv is None or cv.status != "pending":
                return
            s.execute(
                update(ConfigurationVersion)
                .where(ConfigurationVersion.id == cv_id, ConfigurationVersion.status == "pending")
                .values(
                    status="errored",
                    error_message=message[:4000],
                    upload_nonce=None,
                    status_timestamps={**(cv.status_timestamps or {}), "errored-at": now},
                )
                .execution_options(synchronize_session=False)
            )
            s.commit()

    # ---- housekeeping ---------------------------------------------------------------------------

    def expire_stale_pending(self, older_than: datetime) -> int:
        """Mark ``errored`` the pending versions created before ``older_than`` (their upload
        URL has expired, or their upload broke off with the process)."""
        with self._db.unit_of_work(write=True) as s:
            n = affected(
                s.execute(
                    update(ConfigurationVersion)
                    .where(
                        ConfigurationVersion.status == "pending",
                        ConfigurationVersion.created_at < older_than,
                    )
                    .values(
                        status="errored",
                        upload_nonce=None,
                        error_message=(
                            "no configuration was uploaded before the upload URL expired; "
                            "create a new configuration version"
                        ),
                    )
                    .execution_options(synchronize_session=False)
                )
            )
            s.commit()
            return n
