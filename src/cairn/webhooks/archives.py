"""A commit's configuration archive, fetched from the forge once per (connection, repository,
commit) and kept as a blob (table ``vcs_commit_archives``).

One push can start runs in many workspaces on the same repository (one per working
directory, say); they all get the same archive. The forge's archive (GitLab
``/repository/archive.tar.gz``, GitHub ``/tarball``) puts every path under one top directory
(``project-<sha>/``, ``owner-repo-<sha>/``); cairn re-packs it without that prefix, so the
configuration version holds the repository as its root — as HCP does — and the executor enters
the workspace's ``working-directory`` inside it (``executor/job.py``), exactly as for an
uploaded configuration. The re-packed archive goes through the same checks as an upload
(``configversions.service.ConfigUpload``: size, paths, links, inflated size) on its way into
the blob store.

Two workers fetching the same commit at once both write a blob; the first row inserted wins
(primary key), the other blob is left unreferenced and swept (``blobs/collector.py``).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Final

from sqlalchemy import BigInteger, ForeignKey, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from cairn.blobs.references import ColumnReferences
from cairn.blobs.store import BlobStore
from cairn.configversions.service import ConfigUpload
from cairn.db.base import Base, UTCDateTime
from cairn.db.engine import Database
from cairn.webhooks.model import DeliveryFailed

# A forge archive may inflate to this many times the configuration limit before re-packing
# stops (the checker enforces the same factor on the result).
UNPACK_FACTOR: Final = 10


class VcsCommitArchive(Base):
    __tablename__ = "vcs_commit_archives"
    oauth_client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE"), primary_key=True
    )
    repo: Mapped[str] = mapped_column(String(255), primary_key=True)
    sha: Mapped[str] = mapped_column(String(64), primary_key=True)
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


def archive_blob_references(db: Database) -> ColumnReferences:
    """The blobs the archive cache holds (registered with the blob collector in ``app.py``)."""
    return ColumnReferences(db, VcsCommitArchive.blob_sha256)


def cached(db: Database, oauth_client_id: str, repo: str, sha: str) -> tuple[str, int] | None:
    with db.unit_of_work() as s:
        row = s.get(VcsCommitArchive, (oauth_client_id, repo, sha))
        return (row.blob_sha256, row.size) if row is not None else None


def store_archive(
    db: Database,
    blobs: BlobStore,
    chunks: Iterable[bytes],
    *,
    oauth_client_id: str,
    repo: str,
    sha: str,
    max_bytes: int,
    now: datetime,
) -> tuple[str, int]:
    """Re-pack the forge's archive ``chunks`` into the blob store and remember it; (sha256,
    size) of the blob the row points at (another worker's, if it was faster)."""
    upload = ConfigUpload(f"{repo}@{sha[:12]}", blobs, max_bytes=max_bytes)
    try:
        repack(chunks, upload, max_in=max_bytes, max_unpacked=max_bytes * UNPACK_FACTOR)
        upload.close()
        blob_sha256, size = upload.commit()
    finally:
        upload.abort()  # no-op once committed
    if not blobs.exists(blob_sha256):
        raise RuntimeError("the blob store did not keep the commit's archive")
    try:
        with db.unit_of_work(write=True) as s:
            s.add(
                VcsCommitArchive(
                    oauth_client_id=oauth_client_id,
                    repo=repo,
                    sha=sha,
                    blob_sha256=blob_sha256,
                    size=size,
                    created_at=now,
                )
            )
            s.commit()
    except IntegrityError:
        with db.unit_of_work() as s:
            won = s.scalar(
                select(VcsCommitArchive).where(
                    VcsCommitArchive.oauth_client_id == oauth_client_id,
                    VcsCommitArchive.repo == repo,
                    VcsCommitArchive.sha == sha,
                )
            )
            if won is None:
                raise
            return won.blob_sha256, won.size
    return blob_sha256, size


class _Sink(io.RawIOBase):
    """What ``tarfile`` writes the new archive to: straight into the checked upload."""

    def __init__(self, upload: ConfigUpload) -> None:
        self._upload = upload

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._upload.feed(bytes(data))
        return len(data)


class _Source(io.RawIOBase):
    """The forge's chunks as a readable stream, refusing more than ``limit`` bytes."""

    def __init__(self, chunks: Iterable[bytes], limit: int) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""
        self._seen = 0
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._seen += len(chunk)
            if self._seen > self._limit:
                raise DeliveryFailed(
                    f"the commit's archive is larger than {self._limit} bytes "
                    "(CAIRN_MAX_CONFIG_MB); no run was started"
                )
            self._buf = chunk
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def repack(
    chunks: Iterable[bytes], upload: ConfigUpload, *, max_in: int, max_unpacked: int
) -> None:
    """Copy a forge's ``.tar.gz`` into ``upload`` without its top directory."""
    unpacked = 0
    prefix: str | None = None
    source = io.BufferedReader(_Source(chunks, max_in))
    sink = _Sink(upload)
    try:
        with (
            tarfile.open(fileobj=source, mode="r|gz") as src,
            tarfile.open(fileobj=sink, mode="w|gz", format=tarfile.PAX_FORMAT) as out,
        ):
            for member in src:
                top, _, rest = member.name.lstrip("./").partition("/")
                if prefix is None:
                    prefix = top
                if top != prefix:
                    raise DeliveryFailed(
                        "the forge's archive does not hold one top directory; cannot tell the "
                        "repository's root"
                    )
                if not rest.strip("/"):
                    continue  # the top directory itself
                if not (member.isfile() or member.isdir() or member.issym()):
                    continue  # devices, fifos, hard links: not configuration
                unpacked += member.size
                if unpacked > max_unpacked:
                    raise DeliveryFailed(
                        "the commit's files are too large once unpacked (CAIRN_MAX_CONFIG_MB); "
                        "no run was started"
                    )
                member.name = rest
                member.pax_headers = {}
                data = src.extractfile(member) if member.isfile() else None
                out.addfile(member, data)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DeliveryFailed(f"the forge's archive of the commit is unreadable: {exc}") from None
