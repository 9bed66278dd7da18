"""Crashes under a running job, with real `cairn agent` processes and the real Terraform 1.0.3
(hashicorp/null from the offline mirror), on SQLite and on PostgreSQL.

- The agent is killed (SIGKILL of it and its Terraform) in the middle of an apply: the server
  stops hearing heartbeats, and within the lease (60 s) plus a sweep (10 s) the run is errored
  with "agent lost", the apply is not run again, the workspace lock is released and the run
  queued behind it goes on, on a freshly registered agent.
- The server is killed (SIGKILL) in the middle of an apply and started again: the agent's
  heartbeats and log chunks resume through their retries, the run is applied, the log holds every
  line once and in order, and the state is written once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.runs_support import (
    OUTPUTS_ONLY,
    AgentProcess,
    agent_workspace,
    agents_of_pool,
    alive,
    commands_below,
    create_pool,
    create_run,
    db_rows,
    descendants,
    phase_log,
    run_cli_config,
    server_env,
    start_agent,
    status_of,
    stop_all,
    upload_config,
    wait_registered,
    wait_status,
    wait_until,
    workspace_of,
)
from tests.support import api as tfe_api
from tests.support.server import CairnServer

pytestmark = pytest.mark.e2e

LEASE_S = 60  # cairn.runs.jobs.LEASE
SWEEP_S = 10  # cairn.runs.sweep.INTERVAL
TICKS = 15


def slow_apply(command: str) -> bytes:
    """A configuration whose apply runs `command` (a null_resource's local-exec)."""
    return (
        "terraform {\n"
        '  required_providers {\n    null = {\n      source  = "hashicorp/null"\n'
        '      version = "2.1.2"\n    }\n  }\n}\n'
        'resource "null_resource" "slow" {\n'
        f'  provisioner "local-exec" {{\n    command = "{command}"\n  }}\n'
        "}\n"
    ).encode()


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    try:
        yield started
    finally:
        stop_all(started, now=True)


@pytest.fixture
def cli_config(provider_mirror: Path, tmp_path: Path) -> Path:
    return run_cli_config(tmp_path / "run.tfrc", provider_mirror)


def log_has(api: httpx.Client, run_id: str, kind: str, needle: bytes) -> Callable[[], bool | None]:
    def check() -> bool | None:
        return True if needle in phase_log(api, run_id, kind) else None

    return check


@pytest.mark.slow
def test_an_agent_killed_mid_apply_errors_the_run_and_releases_the_lock(
    backend: str,
    server_factory: Callable[..., CairnServer],
    admin_token: str,
    agents: list[AgentProcess],
    cli_config: Path,
    tmp_path: Path,
) -> None:
    server = server_factory(backend, env=server_env())
    with server.client(admin_token) as api:
        org = tfe_api.create_organization(api, tfe_api.unique_name("crash"))
        pool_id, token = create_pool(api, org)
        ws_id = agent_workspace(api, org, pool_id, "app", **{"auto-apply": True})
        slow_cv = upload_config(api, ws_id, slow_apply("echo sleeping; sleep 600"))
        agents.append(
            start_agent(server, token, "doomed", tmp_path / "a1", tf_cli_config=cli_config)
        )
        wait_registered(api, pool_id, 1, agents)
        doomed_id = agents_of_pool(api, pool_id)[0]["id"]

        run_a = create_run(api, ws_id, slow_cv)
        wait_status(api, run_a, ["applying"], timeout=120)
        wait_until(log_has(api, run_a, "apply", b"sleeping"), timeout=60, what="the apply to sleep")
        later_cv = upload_config(api, ws_id, OUTPUTS_ONLY)
        run_b = create_run(api, ws_id, later_cv)
        assert status_of(api, run_b) == "pending"  # behind run A, which holds the lock
        assert workspace_of(api, ws_id)["attributes"]["locked"] is True

        assert "sleep 600" in commands_below(agents[0].pid), "Terraform's apply is running"
        below = descendants(agents[0].pid)
        agents[0].kill_hard()
        wait_until(lambda: True if not alive(below) else None, timeout=10, what="Terraform to die")
        killed_at = time.monotonic()
        # A restarted agent registers again; it must not get run A's job (still running as far
        # as the server knows) and takes run B once A is errored and the lock released.
        agents.append(
            start_agent(server, token, "reborn", tmp_path / "a2", tf_cli_config=cli_config)
        )

        wait_status(api, run_a, ["errored"], timeout=LEASE_S + SWEEP_S + 30)
        elapsed = time.monotonic() - killed_at
        assert elapsed <= LEASE_S + SWEEP_S + 10, f"errored {elapsed:.0f}s after the kill"
        assert b"agent lost" in phase_log(api, run_a, "apply")
        apply = tfe_api.document(api.get(f"/api/v2/runs/{run_a}/apply"), 200)["data"]
        assert apply["attributes"]["status"] == "errored"

        # Run B goes on: the lock was released and the next run scheduled.
        final = wait_status(api, run_b, ["applied", "planned_and_finished"], timeout=120)
        assert final == "applied"
        ws = workspace_of(api, ws_id)
        assert ws["attributes"]["locked"] is False
        assert b"Apply complete!" in phase_log(api, run_b, "apply")

        # The apply was never run again by itself; run B ran on the new agent.
        jobs = db_rows(
            server, "SELECT kind, status, attempt, agent_id FROM jobs WHERE run_id = ?", [run_a]
        )
        assert sorted(jobs) == [
            ("apply", "errored", 1, doomed_id),
            ("plan", "finished", 1, doomed_id),
        ]
        b_agents = {
            row[0] for row in db_rows(server, "SELECT agent_id FROM jobs WHERE run_id = ?", [run_b])
        }
        assert len(b_agents) == 1 and doomed_id not in b_agents
        assert agents[1].proc.poll() is None
        states = {a["id"]: a["attributes"]["status"] for a in agents_of_pool(api, pool_id)}
        assert states[doomed_id] in ("unknown", "errored"), states
        assert states[b_agents.pop()] in ("idle", "busy"), states
        # The killed apply's token is revoked: nothing can write state with it any more.
        assert db_rows(
            server,
            "SELECT COUNT(*) FROM job_tokens t JOIN jobs j ON j.id = t.job_id "
            "WHERE j.run_id = ? AND t.revoked_at IS NULL",
            [run_a],
        ) == [(0,)]


def test_a_killed_server_loses_nothing_of_a_running_apply(
    backend: str,
    server_factory: Callable[..., CairnServer],
    admin_token: str,
    agents: list[AgentProcess],
    cli_config: Path,
    tmp_path: Path,
) -> None:
    server = server_factory(backend, env=server_env())
    ticks = f"for i in $(seq 1 {TICKS}); do echo tick-$i; sleep 1; done"
    with server.client(admin_token) as api:
        org = tfe_api.create_organization(api, tfe_api.unique_name("crash"))
        pool_id, token = create_pool(api, org)
        ws_id = agent_workspace(api, org, pool_id, "app", **{"auto-apply": True})
        cv = upload_config(api, ws_id, slow_apply(ticks))
        agents.append(
            start_agent(server, token, "steady", tmp_path / "a", tf_cli_config=cli_config)
        )
        wait_registered(api, pool_id, 1, agents)
        run_id = create_run(api, ws_id, cv)
        wait_status(api, run_id, ["applying"], timeout=120)
        wait_until(log_has(api, run_id, "apply", b"tick-3"), timeout=60, what="tick-3")
        before = phase_log(api, run_id, "apply")
        assert f"tick-{TICKS}".encode() not in before

    server.kill9()
    time.sleep(3)  # down long enough for log chunks and a heartbeat to fail at least once
    server.start()

    with server.client(admin_token) as api:
        wait_status(api, run_id, ["applied"], timeout=120)
        log = phase_log(api, run_id, "apply")
        assert log.startswith(b"\x02") and log.endswith(b"\x03")
        assert log.startswith(before.rstrip(b"\x03")), "what was acknowledged is kept as is"
        text = log.decode()
        assert [int(n) for n in re.findall(r"\btick-(\d+)\b", text)] == list(range(1, TICKS + 1)), (
            text
        )
        assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in text
        assert "Plan: 1 to add" in phase_log(api, run_id, "plan").decode()

        jobs = db_rows(
            server,
            "SELECT kind, status, attempt, phase_id, log_offset FROM jobs WHERE run_id = ?",
            [run_id],
        )
        assert sorted((k, st, a) for k, st, a, _, _ in jobs) == [
            ("apply", "finished", 1),
            ("plan", "finished", 1),
        ]
        for _, _, _, phase_id, log_offset in jobs:
            chunks = db_rows(
                server,
                'SELECT "offset", LENGTH(data) FROM log_chunks WHERE phase_id = ? '
                'ORDER BY "offset"',
                [phase_id],
            )
            at = 0
            for offset, size in chunks:
                assert offset == at, f"log of {phase_id}: a gap or overlap at {at}"
                at += size
            assert at == log_offset
        assert db_rows(
            server, "SELECT COUNT(*) FROM state_versions WHERE workspace_id = ?", [ws_id]
        ) == [(1,)]
        ws = workspace_of(api, ws_id)
        assert ws["attributes"]["locked"] is False
        assert ws["attributes"]["resource-count"] == 1

    agent = agents[0]
    assert agent.proc.poll() is None, agent.output()
    assert "agent protocol call failed, retrying" in agent.log_path.read_text(), (
        "the outage was seen by the agent"
    )
