"""Workers and jobs against a scripted server (httpx.MockTransport) and a fake ``terraform``
shell script: the binary missing, a failing command, the phase timeout, graceful and forced
stops, and a pool that stops promptly when idle."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.executor.job import ExecutorSettings
from cairn.executor.protocol import AgentClient
from cairn.executor.worker import Worker, WorkerPool

URL = "https://cairn.test"

FAKE_TERRAFORM = r"""#!/bin/sh
case "$1" in
  version) echo '{"terraform_version":"9.9.9"}' ;;
  init) echo "init ok"; if [ -n "$FAKE_INIT_FAIL" ]; then echo "init broke" >&2; exit 1; fi ;;
  plan)
    echo "planning with TOKEN=$(grep -o 'cairn_job_[A-Za-z0-9]*' "$TF_CLI_CONFIG_FILE")"
    trap 'echo "Interrupt received"; exit 1' INT
    i=0; while [ $i -lt ${FAKE_SLEEP:-0} ]; do sleep 0.1; i=$((i+1)); done
    if [ -n "$FAKE_PLAN_FAIL" ]; then echo "Error: broken" >&2; exit 1; fi
    echo "plan" > tfplan ;;
  show) echo '{"resource_changes":[{"change":{"actions":["create"]}}]}' ;;
  apply) echo "applied" ;;
esac
exit 0
"""


def _tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("main.tf")
        data = b"# nothing\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    """Scripted agent protocol: hands out ``jobs`` in order, records everything."""

    def __init__(self, jobs: int = 1, timeout_s: int = 60, env: dict[str, str] | None = None):
        self.pending = [f"job-{i}" for i in range(jobs)]
        self.timeout_s = timeout_s
        self.env = env or {}
        self.logs: dict[str, bytearray] = {}
        self.finishes: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/agent/v1/")
        with self.lock:
            self.calls.append(path)
        if path == "register":
            return httpx.Response(201, json={"agent_id": "agent-1", "session_token": "s"})
        if path == "deregister":
            return httpx.Response(204)
        if path == "jobs/claim":
            with self.lock:
                job_id = self.pending.pop(0) if self.pending else None
            if job_id is None:
                time.sleep(min(float(request.url.params["wait"]), 0.5))
                return httpx.Response(204)
            base = f"{URL}/api/agent/v1/jobs/{job_id}"
            return httpx.Response(
                200,
                json={
                    "job_id": job_id,
                    "attempt": 1,
                    "run_id": "run-1",
                    "workspace_name": "w",
                    "organization_name": "o",
                    "phase": "plan",
                    "job_token": "cairn_job_abc123",
                    "timeout_s": self.timeout_s,
                    "terraform_version": "1.0.3",
                    "hostname": "h",
                    "urls": {
                        k: f"{base}/{k}"
                        for k in (
                            "configuration",
                            "variables",
                            "plan",
                            "logs",
                            "heartbeat",
                            "start",
                            "finish",
                        )
                    },
                },
            )
        _, job_id, action = path.split("/")
        if action == "configuration":
            return httpx.Response(200, content=_tarball())
        if action == "variables":
            env = [{"key": k, "value": v} for k, v in self.env.items()]
            return httpx.Response(200, json={"terraform": [], "env": env, "sensitive": []})
        if action == "logs":
            log = self.logs.setdefault(job_id, bytearray())
            if int(request.url.params["offset"]) != len(log):
                return httpx.Response(409, json={"error": "offset", "offset": len(log)})
            log += request.content
            return httpx.Response(204)
        if action == "finish":
            self.finishes[job_id] = json.loads(request.content)
            return httpx.Response(200, json={})
        if action == "heartbeat":
            return httpx.Response(200, json={"lease_expires_at": "x", "cancel": "none"})
        return httpx.Response(204) if request.method == "PUT" else httpx.Response(200, json={})

    def log(self, job_id: str = "job-0") -> str:
        return self.logs.get(job_id, bytearray()).decode()


def _settings(tmp_path: Path, *, binary: bool = True) -> ExecutorSettings:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if binary:
        script = bindir / "terraform"
        script.write_text(FAKE_TERRAFORM)
        script.chmod(0o755)
    return ExecutorSettings(
        terraform_path=bindir,
        work_root=tmp_path,
        heartbeat_s=0.2,
        log_interval=0.1,
        inherited_env={"PATH": "/usr/bin:/bin"},
    )


def _worker(server: Server, settings: ExecutorSettings, **kw: Any) -> Worker:
    client = AgentClient(
        URL,
        "agent-token",
        name="w1",
        version="t",
        transport=httpx.MockTransport(server.handler),
        retries=1,
        backoff=0.01,
    )
    return Worker(client, settings, claim_wait=1, **kw)


def test_a_plan_job_finishes_with_counts_and_masks_the_job_token(tmp_path: Path) -> None:
    server = Server()
    _worker(server, _settings(tmp_path), single=True).run()
    assert server.finishes["job-0"]["status"] == "finished", server.log()
    assert server.finishes["job-0"]["resource_additions"] == 1
    log = server.log()
    assert log.startswith("Terraform v9.9.9\n\nInitializing plugins and modules...\n")
    assert "planning with TOKEN=***" in log and "cairn_job_abc123" not in log
    assert "init ok" not in log  # init output only shows when init fails
    assert server.calls[-1] == "deregister"


def test_a_missing_binary_errors_the_job_with_a_clear_line(tmp_path: Path) -> None:
    server = Server()
    _worker(server, _settings(tmp_path, binary=False), single=True).run()
    finish = server.finishes["job-0"]
    assert finish["status"] == "errored"
    assert "no Terraform 1.0.3 binary" in finish["error"]
    lines = server.log().splitlines()
    assert lines == ["Terraform v1.0.3", "", "Initializing plugins and modules...", finish["error"]]


@pytest.mark.parametrize(
    ("env", "reason", "shown"),
    [
        ({"FAKE_INIT_FAIL": "1"}, "Error: terraform init exited with status 1", "init broke"),
        ({"FAKE_PLAN_FAIL": "1"}, "Error: terraform plan exited with status 1", "Error: broken"),
    ],
)
def test_a_failing_command_errors_the_job(
    tmp_path: Path, env: dict[str, str], reason: str, shown: str
) -> None:
    server = Server(env=env)
    _worker(server, _settings(tmp_path), single=True).run()
    assert server.finishes["job-0"]["status"] == "errored"
    assert server.finishes["job-0"]["error"] == reason
    assert shown in server.log()
    assert server.log().endswith(reason + "\n")


def test_the_phase_timeout_kills_terraform(tmp_path: Path) -> None:
    server = Server(timeout_s=1, env={"FAKE_SLEEP": "600"})
    started = time.monotonic()
    _worker(server, _settings(tmp_path), single=True).run()
    assert time.monotonic() - started < 20
    assert server.finishes["job-0"]["error"] == "Error: the plan timed out after 1s"


def test_a_first_stop_lets_the_job_finish_a_second_kills_it(tmp_path: Path) -> None:
    server = Server(jobs=3, env={"FAKE_SLEEP": "15"})
    worker = _worker(server, _settings(tmp_path))
    thread = threading.Thread(target=worker.run)
    thread.start()
    while not worker.busy:
        time.sleep(0.05)
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert list(server.finishes) == ["job-0"]  # finished, and no new claim after the stop
    assert server.finishes["job-0"]["status"] == "finished"
    assert server.calls[-1] == "deregister"

    server = Server(jobs=1, env={"FAKE_SLEEP": "600"})
    worker = _worker(server, _settings(tmp_path))
    thread = threading.Thread(target=worker.run)
    thread.start()
    while b"planning" not in server.logs.get("job-0", b""):
        time.sleep(0.05)
    worker.stop()
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert server.finishes["job-0"]["status"] == "errored"
    assert server.finishes["job-0"]["error"] == "Error: the agent was stopped while the job ran"
    assert server.calls[-1] == "deregister"


def test_an_idle_pool_stops_promptly(tmp_path: Path) -> None:
    server = Server(jobs=0)
    pool = WorkerPool(2, URL, "builtin-secret", settings=_settings(tmp_path), claim_wait=1)
    for worker in pool.workers:
        worker.client._http._transport = httpx.MockTransport(server.handler)
    pool.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert pool.stop(timeout=10)
    assert time.monotonic() - started < 3
    assert server.calls.count("register") == 2 and server.calls.count("deregister") == 2


def test_a_pool_never_started_stops_at_once(tmp_path: Path) -> None:
    pool = WorkerPool(1, URL, "secret", settings=_settings(tmp_path))
    assert pool.stop(timeout=1)
    assert "secret" not in repr(pool)


def test_a_pool_with_a_running_job_reports_it_did_not_stop_in_time(tmp_path: Path) -> None:
    server = Server(jobs=1, env={"FAKE_SLEEP": "600"})
    pool = WorkerPool(
        1,
        URL,
        "secret",
        settings=_settings(tmp_path),
        claim_wait=1,
        transport=httpx.MockTransport(server.handler),
    )
    pool.start()
    while b"planning" not in server.logs.get("job-0", b""):
        time.sleep(0.05)
    assert not pool.stop(timeout=0.5)  # the job goes on
    assert "job-0" not in server.finishes
    assert pool.stop(kill=True, timeout=20)  # now Terraform is killed and the job errors
    assert server.finishes["job-0"]["error"] == "Error: the agent was stopped while the job ran"
