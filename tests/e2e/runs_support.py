"""Helpers for the end-to-end tests of remote runs with real `cairn agent` processes: an agent
pool and its token through the TFE API, agent-mode workspaces, configuration versions uploaded
through their upload URL, runs created through the TFE API, agent subprocesses, and raw reads
of the server's database (SQLite file or PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support import api as tfe_api
from tests.support import processes
from tests.support.configtar import file, targz
from tests.support.identity import postgres_rows, sqlite_rows
from tests.support.server import CairnServer, cairn_executable
from tests.support.terraform import NULL_PROVIDER_ADDRESS, terraform_binary

JSONAPI = {"Content-Type": "application/vnd.api+json"}

# A configuration without providers: `terraform init` and `plan` take about half a second.
OUTPUTS_ONLY = b'output "hello" {\n  value = "world"\n}\n'

T = TypeVar("T")


def server_env(**extra: str) -> dict[str, str]:
    """A server without built-in workers (only the agents run jobs) that knows Terraform."""
    return {"CAIRN_WORKERS": "0", "CAIRN_TERRAFORM_PATH": str(terraform_binary().parent), **extra}


def run_cli_config(path: Path, mirror: Path) -> Path:
    """A Terraform CLI configuration installing hashicorp/null from the offline mirror."""
    path.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n'
        f'    include = ["{NULL_PROVIDER_ADDRESS}"]\n  }}\n'
        f'  direct {{\n    exclude = ["{NULL_PROVIDER_ADDRESS}"]\n  }}\n'
        "}\n"
    )
    return path


def wait_until(
    check: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str
) -> T:
    """Call `check` until it returns something other than None, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- TFE API --------------------------------------------------------------------------------


def create_pool(api: httpx.Client, org: str, name: str = "builders") -> tuple[str, str]:
    """An organization-scoped agent pool and one agent token: (pool ID, token value)."""
    body = {"data": {"type": "agent-pools", "attributes": {"name": name}}}
    pool = tfe_api.document(
        api.post(f"/api/v2/organizations/{org}/agent-pools", json=body, headers=JSONAPI), 201
    )
    pool_id: str = pool["data"]["id"]
    body = {"data": {"type": "authentication-tokens", "attributes": {"description": "e2e"}}}
    token = tfe_api.document(
        api.post(
            f"/api/v2/agent-pools/{pool_id}/authentication-tokens", json=body, headers=JSONAPI
        ),
        201,
    )
    value: str = token["data"]["attributes"]["token"]
    return pool_id, value


def agent_workspace(api: httpx.Client, org: str, pool_id: str, name: str, **attrs: Any) -> str:
    """A workspace whose runs go to the agents of `pool_id`."""
    return tfe_api.create_workspace(
        api, org, name, **{"execution-mode": "agent", "agent-pool-id": pool_id, **attrs}
    )


def upload_config(
    api: httpx.Client, ws_id: str, main_tf: bytes, *, speculative: bool = False
) -> str:
    """A configuration version holding `main.tf`, uploaded (no run queued by the upload)."""
    body = {
        "data": {
            "type": "configuration-versions",
            "attributes": {"auto-queue-runs": False, "speculative": speculative},
        }
    }
    doc = tfe_api.document(
        api.post(f"/api/v2/workspaces/{ws_id}/configuration-versions", json=body, headers=JSONAPI),
        201,
    )
    cv_id: str = doc["data"]["id"]
    url = doc["data"]["attributes"]["upload-url"]
    put = api.put(
        url,
        content=targz([file("main.tf", main_tf)]),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert put.status_code == 200, put.text
    status = tfe_api.document(api.get(f"/api/v2/configuration-versions/{cv_id}"), 200)
    assert status["data"]["attributes"]["status"] == "uploaded", status
    return cv_id


def create_run(api: httpx.Client, ws_id: str, cv_id: str, **attrs: Any) -> str:
    body = {
        "data": {
            "type": "runs",
            "attributes": attrs,
            "relationships": {
                "workspace": {"data": {"type": "workspaces", "id": ws_id}},
                "configuration-version": {"data": {"type": "configuration-versions", "id": cv_id}},
            },
        }
    }
    doc = tfe_api.document(api.post("/api/v2/runs", json=body, headers=JSONAPI), 201)
    run_id: str = doc["data"]["id"]
    return run_id


def run_of(api: httpx.Client, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = tfe_api.document(api.get(f"/api/v2/runs/{run_id}"), 200)["data"]
    return data


def status_of(api: httpx.Client, run_id: str) -> str:
    return str(run_of(api, run_id)["attributes"]["status"])


def wait_status(api: httpx.Client, run_id: str, wanted: Sequence[str], *, timeout: float) -> str:
    """Wait for the run to reach one of `wanted`; fail early on another final status."""
    final = {"planned_and_finished", "applied", "errored", "canceled", "discarded"}
    seen: list[str] = []

    def check() -> str | None:
        status = status_of(api, run_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in wanted:
            return status
        assert status not in final, f"run {run_id} ended {status} (went {seen}), not {wanted}"
        return None

    return wait_until(check, timeout=timeout, what=f"run {run_id} to be {wanted} (went {seen})")


def workspace_of(api: httpx.Client, ws_id: str) -> dict[str, Any]:
    data: dict[str, Any] = tfe_api.document(api.get(f"/api/v2/workspaces/{ws_id}"), 200)["data"]
    return data


def phase_log(api: httpx.Client, run_id: str, kind: str) -> bytes:
    """The whole log of the run's plan or apply, as served at its `log-read-url`."""
    phase = tfe_api.document(api.get(f"/api/v2/runs/{run_id}/{kind}"), 200)["data"]
    url = phase["attributes"]["log-read-url"]
    out = bytearray()
    while True:
        answer = api.get(url, params={"offset": len(out), "limit": 65536})
        assert answer.status_code == 200, answer.text
        if not answer.content:
            return bytes(out)
        out += answer.content


# --- the database ---------------------------------------------------------------------------


def db_rows(server: CairnServer, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the server's metadata database (SQL with `?` placeholders)."""
    if server.database_url:
        return postgres_rows(server.database_url, sql.replace("?", "%s"), params)
    return sqlite_rows(server.data_dir / "cairn.db", sql, params)


# --- agents ---------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children, their children, …), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def commands_below(pid: int) -> list[str]:
    """The command lines of the processes below `pid`."""
    commands = []
    for child in descendants(pid):
        try:
            raw = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        commands.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
    return commands


def alive(pids: Sequence[int]) -> list[int]:
    """Those of `pids` still running (zombies waiting to be reaped do not count)."""
    running = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            running.append(pid)
    return running


@dataclass
class AgentProcess:
    """One `cairn agent` subprocess, in its own process group (Terraform included)."""

    name: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    killed: bool = field(default=False)
    signals: int = field(default=0)  # SIGTERMs sent: a second one means "stop now"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return processes.tail(self.log_path)

    def kill_hard(self) -> None:
        """SIGKILL the agent and everything it started: the machine is gone. The executor
        runs Terraform in a session of its own, so its process groups are killed too."""
        self.killed = True
        groups = {self.proc.pid}
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def signal_stop(self) -> None:
        """SIGTERM: finish the current job, deregister, exit (within a claim long-poll)."""
        if self.proc.poll() is None:
            self.signals += 1
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM (finish, deregister, exit); SIGKILL of the group when it does not exit."""
        if self.proc.poll() is None:
            if not self.signals:  # a second SIGTERM would mean "stop now", not "stop"
                self.signal_stop()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_hard()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a Terraform left behind by a killed agent
        return self.proc.returncode


def start_agent(
    server: CairnServer,
    token: str,
    name: str,
    workdir: Path,
    *,
    tf_cli_config: Path | None = None,
) -> AgentProcess:
    """`cairn agent --url … --name …` with the pool token in CAIRN_AGENT_TOKEN."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "TF_"))}
    env.update(
        {
            "CAIRN_AGENT_TOKEN": token,
            "CAIRN_TERRAFORM_PATH": str(terraform_binary().parent),
            "CAIRN_LOG_FORMAT": "json",
            "TMPDIR": str(workdir),
        }
    )
    args = [str(cairn_executable()), "agent", "--url", server.url, "--name", name]
    if server.ca_bundle is not None:
        args += ["--ca-file", str(server.ca_bundle)]
    if tf_cli_config is not None:
        args += ["--tf-cli-config", str(tf_cli_config)]
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes.register(proc)
    return AgentProcess(name, log_path, proc)


def agents_of_pool(api: httpx.Client, pool_id: str) -> list[dict[str, Any]]:
    doc = tfe_api.document(api.get(f"/api/v2/agent-pools/{pool_id}/agents"), 200)
    data: list[dict[str, Any]] = doc["data"]
    return data


def wait_registered(
    api: httpx.Client, pool_id: str, count: int, agents: Sequence[AgentProcess]
) -> None:
    """Wait until `count` agents of the pool are idle or busy."""

    def check() -> bool | None:
        for agent in agents:
            assert agent.proc.poll() is None, f"agent {agent.name} exited:\n{agent.output()}"
        live = [
            a for a in agents_of_pool(api, pool_id) if a["attributes"]["status"] in ("idle", "busy")
        ]
        return True if len(live) >= count else None

    wait_until(check, timeout=30, what=f"{count} registered agents in {pool_id}")


def stop_all(agents: Sequence[AgentProcess], *, now: bool = False) -> list[int]:
    """Stop every agent at once; their exit statuses. One SIGTERM lets an idle agent finish
    its claim long-poll (up to 25 s); `now` sends a second one, which makes an idle agent
    deregister and exit at once (and kills a running Terraform)."""
    for agent in agents:
        agent.signal_stop()
    if now:
        time.sleep(0.3)
        for agent in agents:
            agent.signal_stop()
    return [agent.stop() for agent in agents]
