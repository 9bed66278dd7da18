"""Two real `cairn agent` processes share 100 queued jobs: each job is claimed exactly once.

A cairn server without built-in workers (`CAIRN_WORKERS=0`), on SQLite and on PostgreSQL; an
agent pool and its token made through the TFE API; four agent-mode workspaces, each with one
uploaded speculative configuration of outputs only (no providers: a plan takes about half a
second); 25 speculative plans per workspace created through the TFE API before any agent runs.
Then two agents start together. Every run must end `planned_and_finished` with exactly one job
of attempt 1 and one job token, both agents must have done some, and the agents' own logs must
name each job exactly once between them (no job ran twice, none was lost).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.runs_support import (
    OUTPUTS_ONLY,
    AgentProcess,
    agent_workspace,
    create_pool,
    create_run,
    db_rows,
    server_env,
    start_agent,
    stop_all,
    upload_config,
    wait_registered,
    wait_until,
)
from tests.support import api as tfe_api
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e

WORKSPACES = 4
RUNS_PER_WORKSPACE = 25
JOBS = WORKSPACES * RUNS_PER_WORKSPACE


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    try:
        yield started
    finally:
        stop_all(started, now=True)


def claimed_by(agent: AgentProcess) -> list[str]:
    """The job IDs this agent's log says it claimed (its JSON log lines)."""
    ids = []
    for line in agent.log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("msg") == "job claimed":
            ids.append(record["job_id"])
    return ids


def test_two_agents_claim_each_of_100_jobs_exactly_once(
    backend: str,
    server_factory: Callable[..., CairnServer],
    admin_token: str,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    server = server_factory(backend, env=server_env())
    with server.client(admin_token) as api:
        org = tfe_api.create_organization(api, tfe_api.unique_name("agents"))
        pool_id, token = create_pool(api, org)
        run_ids = []
        for w in range(WORKSPACES):
            ws_id = agent_workspace(api, org, pool_id, f"ws-{w}")
            cv_id = upload_config(api, ws_id, OUTPUTS_ONLY, speculative=True)
            run_ids += [create_run(api, ws_id, cv_id) for _ in range(RUNS_PER_WORKSPACE)]
        assert len(set(run_ids)) == JOBS

        placeholders = ",".join("?" * JOBS)
        queued = db_rows(
            server,
            f"SELECT status, agent_id FROM jobs WHERE run_id IN ({placeholders})",
            run_ids,
        )
        assert Counter(queued) == Counter({("queued", None): JOBS}), "queued before any agent"

        agents.append(start_agent(server, token, "agent-a", tmp_path / "a"))
        agents.append(start_agent(server, token, "agent-b", tmp_path / "b"))
        wait_registered(api, pool_id, 2, agents)

        def all_done() -> bool | None:
            for agent in agents:
                assert agent.proc.poll() is None, f"{agent.name} exited:\n{agent.output()}"
            rows = db_rows(
                server,
                f"SELECT COUNT(*) FROM jobs WHERE run_id IN ({placeholders}) "
                "AND status IN ('finished', 'errored', 'canceled')",
                run_ids,
            )
            return True if rows[0][0] == JOBS else None

        wait_until(all_done, timeout=600, interval=1.0, what=f"{JOBS} jobs to finish")

        statuses: Counter[str] = Counter()
        for run_id in run_ids:
            attrs = tfe_api.document(api.get(f"/api/v2/runs/{run_id}"), 200)["data"]["attributes"]
            statuses[attrs["status"]] += 1
        assert statuses == Counter({"planned_and_finished": JOBS}), statuses

        jobs = db_rows(
            server,
            f"SELECT id, run_id, kind, status, attempt, agent_id FROM jobs "
            f"WHERE run_id IN ({placeholders})",
            run_ids,
        )
        assert len(jobs) == JOBS
        assert Counter(run for _, run, *_ in jobs) == Counter({r: 1 for r in run_ids})
        assert {(kind, status, attempt) for _, _, kind, status, attempt, _ in jobs} == {
            ("plan", "finished", 1)
        }
        job_ids = [job_id for job_id, *_ in jobs]
        tokens = db_rows(
            server,
            f"SELECT job_id, attempt, revoked_at IS NOT NULL FROM job_tokens "
            f"WHERE job_id IN ({placeholders})",
            job_ids,
        )
        assert sorted(tokens) == sorted((j, 1, True) for j in job_ids), "one token, revoked"

        agent_ids = {agent_id for *_, agent_id in jobs}
        registered = {
            a["id"]: a["attributes"]["name"]
            for a in tfe_api.document(api.get(f"/api/v2/agent-pools/{pool_id}/agents"), 200)["data"]
        }
        assert agent_ids <= set(registered), (agent_ids, registered)
        per_agent = Counter(registered[agent_id] for *_, agent_id in jobs)
        assert set(per_agent) == {"agent-a", "agent-b"}, f"both agents work: {per_agent}"

    # The agents' own account: every job claimed once, by the agent the server recorded.
    claims = {agent.name: claimed_by(agent) for agent in agents}
    everything = claims["agent-a"] + claims["agent-b"]
    assert sorted(everything) == sorted(job_ids), "each job claimed exactly once"
    recorded = {job_id: registered[agent_id] for job_id, *_, agent_id in jobs}
    for name, ids in claims.items():
        assert {recorded[j] for j in ids} <= {name}
    assert stop_all(agents) == [0, 0], [agent.output() for agent in agents]
    for agent in agents:
        assert f"{len(claims[agent.name])} job(s), {len(claims[agent.name])} finished" in (
            agent.output()
        )


def test_a_graceful_stop_ends_waiting_claims_at_once(
    backend: str, server_factory: Callable[..., CairnServer], admin_token: str
) -> None:
    """SIGTERM while an agent long-polls for a job: the claim is answered 204 at once and the
    server exits promptly (not after the 25 s wait, nor with a 500 when it is cut short)."""
    server = server_factory(backend, env=server_env())
    with server.client(admin_token) as api:
        org = tfe_api.create_organization(api, tfe_api.unique_name("stop"))
        _, token = create_pool(api, org)
        registered = api.post(
            "/api/agent/v1/register",
            json={"name": "waiting", "version": "0.1", "accept": ["plan", "apply"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert registered.status_code == 201, registered.text
        session = registered.json()["session_token"]
    answers: list[int] = []

    def claim() -> None:
        with server.client() as http:
            answer = http.post(
                "/api/agent/v1/jobs/claim?wait=25",
                headers={"Authorization": f"Bearer {session}"},
                timeout=60,
            )
            answers.append(answer.status_code)

    waiting = threading.Thread(target=claim)
    waiting.start()
    time.sleep(1.0)  # the claim is in its long-poll
    started = time.monotonic()
    assert server.stop(timeout=30) == 0
    took = time.monotonic() - started
    waiting.join(timeout=30)
    assert answers == [204]
    assert took < 10, f"the server took {took:.1f}s to stop"
