"""Phase logs: stored as chunks while a job runs, read by the CLI as it polls ``log-read-url``.

Writing (``append``, the agent protocol's ``PUT …/logs?offset=N``): idempotent by offset. The
job row's ``log_offset`` counts the bytes the executor has sent; a chunk is taken only at that
offset (one conditional UPDATE decides, so concurrent retries store it once). A repeat of a
chunk already stored (same offset, same bytes) is answered as a success; any other offset is
a 409 naming the offset to resume from. A phase's log is bounded (``MAX_LOG``): what comes
past it is dropped, and one line says so.

Reading (``read``, go-tfe's log reader, terraform-protocol §4.3): the log as the CLI expects
it — STX (0x02) first, the bytes, and ETX (0x03) last once the phase is over (finished,
errored, canceled, unreachable) — served by byte range ``[offset, offset+limit)``. Before the
phase starts the answer is empty (200). The URL is signed, its token in the path (the reader
replaces the query string), and absolute (``read_url``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from starlette.responses import Response
from starlette.routing import BaseRoute

from cairn.blobs.references import ColumnReferences
from cairn.db.base import table_of
from cairn.db.engine import Database, affected
from cairn.errors import BadRequest, Conflict
from cairn.runs.jobs_model import Job, LogChunk
from cairn.runs.model import PHASE_FINAL, PHASE_PENDING, PHASE_QUEUED, RunPhase
from cairn.tfeapi.http import Call, route
from cairn.tfeapi.signed import Signer

STX: Final = b"\x02"
ETX: Final = b"\x03"
MAX_CHUNK: Final = 1024 * 1024  # one PUT
MAX_LOG: Final = 64 * 1024 * 1024  # one phase
MAX_READ: Final = 65536  # go-tfe reads at most this much per request
TRUNCATED: Final = (
    b"\n[cairn] this log passed its limit of 64 MiB; the rest of the output was not stored\n"
)
READ_PATH: Final = "/logs/{phase_id}/{token}"  # under /api/cairn/v1
_PURPOSE: Final = "phase-log"
_REFUSED: Final = (
    "this log URL is not valid or has expired; read the plan or apply again for a new one"
)

_phases = table_of(RunPhase)


class OffsetMismatch(Conflict):
    """A chunk that does not start where the stored log ends."""

    code = "offset"

    def __init__(self, offset: int) -> None:
        super().__init__(f"the log continues at byte {offset}: send the bytes from offset {offset}")
        self.offset = offset


class LogStore:
    """Appending to and reading phase logs (see the module docstring)."""

    def __init__(
        self, db: Database, signer: Signer, public_url: str, *, url_ttl: timedelta
    ) -> None:
        self._db = db
        self._signer = signer
        self._base = public_url.rstrip("/") + "/api/cairn/v1"
        self._ttl = url_ttl

    # ---- writing ---------------------------------------------------------------------------

    def append(self, s: Session, job: Job, offset: int, data: bytes) -> None:
        """Store ``data`` sent at ``offset`` of ``job``'s phase log, in the caller's
        transaction; OffsetMismatch unless it continues the log or repeats a stored chunk."""
        if len(data) > MAX_CHUNK:
            raise BadRequest(f"a log chunk is at most {MAX_CHUNK} bytes; send smaller chunks")
        if offset < 0:
            raise BadRequest("offset must be 0 or more", parameter="offset")
        if not data:
            current = s.scalar(select(Job.log_offset).where(Job.id == job.id)) or 0
            if offset != current:
                raise OffsetMismatch(current)
            return
        taken = s.execute(
            update(Job)
            .where(Job.id == job.id, Job.log_offset == offset)
            .values(log_offset=offset + len(data))
            .execution_options(synchronize_session=False)
        )
        if affected(taken) != 1:
            current = s.scalar(select(Job.log_offset).where(Job.id == job.id)) or 0
            if offset + len(data) <= current and self._stored_as(s, job, offset, data):
                return  # a retry of a chunk already taken
            raise OffsetMismatch(current)
        self._store(s, job.phase_id, offset, data)

    def append_line(self, s: Session, job_id: str, line: str) -> None:
        """A line of cairn's own at the end of a job's log (the sweep's "agent lost")."""
        job = s.get(Job, job_id)
        if job is None:
            return
        s.refresh(job)
        data = (line.rstrip("\n") + "\n").encode()
        if job.log_offset > 0 and not self._ends_with_newline(s, job):
            data = b"\n" + data
        offset = job.log_offset
        s.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(log_offset=offset + len(data))
            .execution_options(synchronize_session=False)
        )
        self._store(s, job.phase_id, offset, data)

    def _store(self, s: Session, phase_id: str, offset: int, data: bytes) -> None:
        if offset >= MAX_LOG:
            # Past the limit: dropped. The first chunk there (the log reached the limit
            # exactly) leaves the line saying so; chunks are contiguous, so it is at MAX_LOG.
            if offset == MAX_LOG:
                s.add(LogChunk(phase_id=phase_id, offset=MAX_LOG, data=TRUNCATED))
                s.flush()
            return
        if offset + len(data) > MAX_LOG:
            s.add(LogChunk(phase_id=phase_id, offset=offset, data=data[: MAX_LOG - offset]))
            s.add(LogChunk(phase_id=phase_id, offset=MAX_LOG, data=TRUNCATED))
        else:
            s.add(LogChunk(phase_id=phase_id, offset=offset, data=data))
        s.flush()

    @staticmethod
    def _stored_as(s: Session, job: Job, offset: int, data: bytes) -> bool:
        if offset >= MAX_LOG:
            return True  # dropped either way
        stored = s.get(LogChunk, (job.phase_id, offset))
        if stored is None:
            return False
        if offset + len(data) > MAX_LOG:
            return stored.data == data[: MAX_LOG - offset]
        return stored.data == data

    @staticmethod
    def _ends_with_newline(s: Session, job: Job) -> bool:
        last = s.scalar(
            select(LogChunk.data)
            .where(LogChunk.phase_id == job.phase_id)
            .order_by(LogChunk.offset.desc())
            .limit(1)
        )
        return last is None or last.endswith(b"\n")

    # ---- reading ---------------------------------------------------------------------------

    def read_url(self, phase_id: str) -> str:
        """The absolute, signed URL the CLI polls (no query string: the secret is in the path)."""
        token = self._signer.sign(_PURPOSE, phase_id, ["log"], self._ttl)
        return f"{self._base}/logs/{phase_id}/{token}"

    def size(self, s: Session, phase_id: str) -> int:
        """Bytes of log stored for the phase (without the framing)."""
        return int(
            s.scalar(
                select(func.coalesce(func.sum(func.length(LogChunk.data)), 0)).where(
                    LogChunk.phase_id == phase_id
                )
            )
            or 0
        )

    def read(self, s: Session, phase_id: str, offset: int, limit: int) -> bytes:
        """Bytes ``[offset, offset+limit)`` of STX + log + (ETX once the phase is over);
        empty before the phase starts (or for an unknown phase)."""
        status = s.scalar(select(_phases.c.status).where(_phases.c.id == phase_id))
        if status is None or status in (PHASE_PENDING, PHASE_QUEUED):
            return b""
        terminal = status in PHASE_FINAL
        out = bytearray()
        if offset == 0 and limit > 0:
            out += STX
        start = max(0, offset - 1)  # log byte at stream position offset (past STX)
        end = offset + limit - 1  # exclusive, in log bytes
        if end > start:
            rows = s.execute(
                select(LogChunk.offset, LogChunk.data)
                .where(
                    LogChunk.phase_id == phase_id,
                    LogChunk.offset < end,
                    LogChunk.offset + func.length(LogChunk.data) > start,
                )
                .order_by(LogChunk.offset)
            )
            for at, data in rows:
                lo = max(start, at) - at
                hi = min(end, at + len(data)) - at
                out += data[lo:hi]
        if terminal and len(out) < limit:
            total = 1 + self.size(s, phase_id)  # stream position of ETX
            if offset + len(out) == total:
                out += ETX
        return bytes(out[:limit])

    def routes(self) -> list[BaseRoute]:
        """The public read route (mount under ``/api/cairn/v1``)."""

        def read_log(call: Call) -> Response:
            phase_id = call.param("phase_id")
            self._signer.verify(_PURPOSE, phase_id, call.param("token"), fields=1, refused=_REFUSED)
            offset = _int_param(call, "offset", 0)
            limit = min(_int_param(call, "limit", MAX_READ), MAX_READ)
            with self._db.unit_of_work() as s:
                body = self.read(s, phase_id, offset, limit)
            return Response(body, media_type="text/plain", headers={"Cache-Control": "no-store"})

        return [route(READ_PATH, read_log, ["GET"], auth=None)]


def _int_param(call: Call, name: str, default: int) -> int:
    value = call.request.query_params.get(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest(f"query parameter '{name}' must be a non-negative integer", parameter=name)
    return int(value)


def plan_blob_references(db: Database) -> ColumnReferences:
    """Which blobs plan files and JSON plans reference (``run_phases``' digests): the blob
    collector's reference provider for them, registered in ``app.py``."""
    return ColumnReferences(db, _phases.c.plan_file_sha256, _phases.c.json_plan_sha256)
