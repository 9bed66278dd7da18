"""Runs wired into an in-process cairn with the real job side; the test plays the executor
over the agent protocol (claim, start, heartbeat, finish). Configuration versions are rows
made directly (uploaded or not): their API is tested in ``tests/api/configversions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from cairn import ids
from cairn.configversions.model import ConfigurationVersion
from cairn.runs.jobs_model import Job
from cairn.runs.lifecycle import PhaseOutcome
from cairn.runs.service import RunService
from tests.api.jobs.conftest import JobSide, install
from tests.support.app import CT, InProcessCairn, document

AGENT = "/api/agent/v1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class RunsRig:
    """Runs on the real job side; the test plays a built-in worker over the agent protocol."""

    app: InProcessCairn
    side: JobSide
    service: RunService
    claimed: dict[str, dict[str, Any]] = field(default_factory=dict)  # run ID → its live job
    _session: str | None = None

    def jobs_of(self, run_id: str) -> list[Job]:
        with self.app.ctx.db.unit_of_work() as s:
            rows = s.scalars(select(Job).where(Job.run_id == run_id).order_by(Job.queued_at))
            return list(rows)

    async def start(self, run_id: str) -> dict[str, Any]:
        """Claim the next job (it must be ``run_id``'s) and start it."""
        if self._session is None:
            self._session = self.side.register()
        async with self.app.client() as c:
            answer = await c.post(f"{AGENT}/jobs/claim?wait=0", headers=bearer(self._session))
            job = document(answer, 200)
            assert job["run_id"] == run_id, (job["run_id"], run_id)
            started = await c.post(
                job["urls"]["start"],
                json={"attempt": job["attempt"]},
                headers=bearer(job["job_token"]),
            )
            document(started, 200)
        self.claimed[run_id] = job
        return job

    async def heartbeat(self, run_id: str) -> str:
        """The cancel signal the run's job hears at its heartbeat."""
        job = self.claimed[run_id]
        async with self.app.client() as c:
            beat = await c.post(
                job["urls"]["heartbeat"],
                json={"attempt": job["attempt"], "log_offset": 0},
                headers=bearer(job["job_token"]),
            )
        return str(document(beat, 200)["cancel"])

    async def finish(
        self, run_id: str, outcome: PhaseOutcome, *, expect: int | None = 200
    ) -> httpx.Response:
        """Finish the run's started job with ``outcome`` (the answer must be ``expect``)."""
        job = self.claimed.pop(run_id)
        body = {
            "attempt": job["attempt"],
            "status": outcome.status,
            "has_changes": outcome.has_changes,
            "resource_additions": outcome.additions,
            "resource_changes": outcome.changes,
            "resource_destructions": outcome.destructions,
            "resource_imports": outcome.imports,
            "error": outcome.error,
        }
        async with self.app.client() as c:
            answer = await c.post(
                job["urls"]["finish"], json=body, headers=bearer(job["job_token"])
            )
        if expect is not None:
            document(answer, expect)
        return answer

    def configuration_version(
        self, ws_id: str, *, status: str = "uploaded", speculative: bool = False
    ) -> str:
        cv_id = ids.new_id("configuration_version")
        now = self.app.clock.now()
        with self.app.ctx.db.unit_of_work(write=True) as s:
            s.add(
                ConfigurationVersion(
                    id=cv_id,
                    workspace_id=ws_id,
                    status=status,
                    speculative=speculative,
                    status_timestamps={},
                    created_at=now,
                )
            )
            s.commit()
        # Later ones are newer (the latest uploaded one is the default of a run).
        self.app.advance(timedelta(seconds=1))
        return cv_id


def wire_runs(app: InProcessCairn) -> RunsRig:
    """The job side and runs as ``app.py`` wires them."""
    return RunsRig(app, install(app), app.ctx.runs)


async def create_run(
    client: httpx.AsyncClient, ws_id: str, cv_id: str | None = None, **attributes: Any
) -> dict[str, Any]:
    rels: dict[str, Any] = {"workspace": {"data": {"type": "workspaces", "id": ws_id}}}
    if cv_id is not None:
        rels["configuration-version"] = {"data": {"type": "configuration-versions", "id": cv_id}}
    body = {"data": {"type": "runs", "attributes": attributes, "relationships": rels}}
    data: dict[str, Any] = document(await client.post("/api/v2/runs", json=body, headers=CT), 201)[
        "data"
    ]
    return data


async def read_run(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = document(await client.get(f"/api/v2/runs/{run_id}"), 200)["data"]
    return data


async def status(client: httpx.AsyncClient, run_id: str) -> str:
    return str((await read_run(client, run_id))["attributes"]["status"])
