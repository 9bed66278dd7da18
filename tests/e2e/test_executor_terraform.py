"""The executor against a fake cairn: the agent protocol and the few TFE calls Terraform's
remote backend makes, served by a small threaded HTTP server written here, with the real
Terraform 1.0.3 and the offline null provider mirror.

A plan job, then an apply job of that plan (state written through the remote backend with the
job token); a graceful cancel (SIGINT), a force cancel (SIGKILL) and a lost lease, each in the
middle of an apply that runs ``sleep``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cairn.executor.job import ExecutorSettings, JobRun
from cairn.executor.protocol import AgentClient, Finish
from cairn.executor.worker import Worker
from tests.support.terraform import NULL_PROVIDER_ADDRESS, hcl_string, terraform_binary

pytestmark = pytest.mark.e2e

ORG = "acme"
WS = "app"
WS_ID = "ws-fake1"
HOST = "cairn.test"
SECRET = "hunter2-sensitive-value"


@dataclass
class FakeJob:
    job_id: str
    phase: str
    token: str
    config: bytes
    run_id: str = "run-fake1"
    attempt: int = 1
    operation: dict[str, Any] = field(default_factory=dict)
    log: bytearray = field(default_factory=bytearray)
    started: bool = False
    finish: dict[str, Any] | None = None
    cancel: str = "none"
    lease_lost: bool = False
    heartbeats: int = 0
    log_conflicts: int = 0
    log_failed: bool = False
    timeout_s: int = 120


@dataclass
class FakeCairn:
    """State of the fake server, shared with the handler threads."""

    url: str = ""
    session: str = "cairn_session_fake"
    agent_token: str = "cairn_agent_fake"
    queue: list[FakeJob] = field(default_factory=list)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    plans: dict[str, bytes] = field(default_factory=dict)
    state: bytes | None = None
    state_serial: int = -1
    state_posts: list[dict[str, Any]] = field(default_factory=list)
    tfe_tokens: set[str] = field(default_factory=set)
    registered: int = 0
    deregistered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_first_log_chunk: bool = False

    def add(self, job: FakeJob) -> FakeJob:
        with self.lock:
            self.jobs[job.job_id] = job
            self.queue.append(job)
        return job

    def claim_body(self, job: FakeJob) -> dict[str, Any]:
        base = f"{self.url}/api/agent/v1/jobs/{job.job_id}"
        return {
            "job_id": job.job_id,
            "attempt": job.attempt,
            "run_id": job.run_id,
            "workspace_id": WS_ID,
            "workspace_name": WS,
            "organization_name": ORG,
            "phase": job.phase,
            "job_token": job.token,
            "lease_expires_at": "2030-01-01T00:00:00Z",
            "timeout_s": job.timeout_s,
            "terraform_version": "1.0.3",
            "operation": {
                "is_destroy": False,
                "refresh": True,
                "refresh_only": False,
                "plan_only": False,
                "speculative": False,
                "target_addrs": [],
                "replace_addrs": [],
                **job.operation,
            },
            "hostname": HOST,
            "urls": {
                "configuration": f"{base}/configuration",
                "variables": f"{base}/variables",
                "plan": f"{base}/plan",
                "logs": f"{base}/logs",
                "heartbeat": f"{base}/heartbeat",
                "start": f"{base}/start",
                "finish": f"{base}/finish",
            },
        }


def _handler(fake: FakeCairn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: Any = None, ctype: str = "application/json") -> None:
            data = b""
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("TFP-API-Version", "2.5")
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _token(self) -> str:
            auth = self.headers.get("Authorization", "")
            return auth.removeprefix("Bearer ")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            body = self._body()
            path = parts.path
            if path.startswith("/api/agent/v1/"):
                self._agent(method, path.removeprefix("/api/agent/v1/"), query, body)
            elif path.startswith("/api/v2/"):
                self._tfe(method, path.removeprefix("/api/v2/"), body)
            else:
                self._send(404, {"error": "not_found"})

        def _agent(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
            if path == "register":
                if self._token() != fake.agent_token:
                    return self._send(401, {"error": "unauthorized", "detail": "bad token"})
                fake.registered += 1
                return self._send(
                    201,
                    {
                        "agent_id": "agent-fake1",
                        "session_token": fake.session,
                        "heartbeat_s": 10,
                        "claim_wait_s": 1,
                        "lease_s": 60,
                    },
                )
            if path == "deregister":
                fake.deregistered += 1
                return self._send(204)
            if path == "jobs/claim":
                if self._token() != fake.session:
                    return self._send(401, {"error": "unauthorized"})
                deadline = time.monotonic() + min(float(query.get("wait", "0")), 2.0)
                while True:
                    with fake.lock:
                        job = fake.queue.pop(0) if fake.queue else None
                    if job is not None:
                        return self._send(200, fake.claim_body(job))
                    if time.monotonic() >= deadline:
                        return self._send(204)
                    time.sleep(0.05)
            _, job_id, action = path.split("/", 2)
            job = fake.jobs.get(job_id)
            if job is None or self._token() != job.token:
                return self._send(401, {"error": "unauthorized"})
            if job.finish is not None:
                return self._send(401, {"error": "unauthorized", "detail": "job finished"})
            if action == "start":
                job.started = True
                return self._send(200, {})
            if action == "heartbeat":
                job.heartbeats += 1
                if job.lease_lost:
                    return self._send(409, {"error": "lease_lost"})
                return self._send(
                    200, {"lease_expires_at": "2030-01-01T00:00:00Z", "cancel": job.cancel}
                )
            if action == "logs":
                offset = int(query["offset"])
                if fake.fail_first_log_chunk and not job.log_failed:
                    # A server error on the first chunk: the agent must retry it.
                    job.log_failed = True
                    return self._send(500, {"error": "internal"})
                if offset != len(job.log):
                    job.log_conflicts += 1
                    return self._send(409, {"error": "offset", "offset": len(job.log)})
                job.log += body
                return self._send(204)
            if action == "configuration":
                return self._send(200, job.config, "application/octet-stream")
            if action == "workload-identity":  # the workspace asks for no dynamic credentials
                return self._send(200, {"expires_at": "2030-01-01T00:00:00Z", "configs": []})
            if action == "variables":
                return self._send(
                    200,
                    {
                        "terraform": [
                            {"key": "greeting", "value": SECRET, "hcl": False},
                            {"key": "tricky", "value": 'a "b" \\ ${c} %{d}\nline', "hcl": False},
                            {"key": "numbers", "value": "[1, 2, 3]", "hcl": True},
                        ],
                        "env": [{"key": "CAIRN_TEST_ENV", "value": "from-env"}],
                        "sensitive": [SECRET],
                    },
                )
            if action == "plan":
                if method == "PUT":
                    fake.plans[f"{job.run_id}:{query['format']}"] = body
                    return self._send(204)
                data = fake.plans.get(f"{job.run_id}:binary")
                if data is None:
                    return self._send(404, {"error": "not_found"})
                return self._send(200, data, "application/octet-stream")
            if action == "finish":
                job.finish = json.loads(body)
                return self._send(200, {})
            return self._send(404, {"error": "not_found"})

        def _tfe(self, method: str, path: str, body: bytes) -> None:
            fake.tfe_tokens.add(self._token())
            jsonapi = "application/vnd.api+json"
            if path == "ping":
                return self._send(204)
            if path == f"organizations/{ORG}/entitlement-set":
                return self._send(
                    200,
                    {
                        "data": {
                            "type": "entitlement-sets",
                            "id": ORG,
                            "attributes": {"operations": True, "state-storage": True},
                        }
                    },
                    jsonapi,
                )
            if path == f"organizations/{ORG}/workspaces/{WS}":
                perms = {
                    k: True
                    for k in (
                        "can-update",
                        "can-destroy",
                        "can-queue-run",
                        "can-queue-apply",
                        "can-lock",
                        "can-unlock",
                    )
                }
                return self._send(
                    200,
                    {
                        "data": {
                            "type": "workspaces",
                            "id": WS_ID,
                            "attributes": {
                                "name": WS,
                                "operations": True,
                                "execution-mode": "remote",
                                "locked": True,
                                "terraform-version": "1.0.3",
                                "auto-apply": False,
                                "vcs-repo": None,
                                "working-directory": "",
                                "created-at": "2026-01-01T00:00:00Z",
                                "permissions": perms,
                                "actions": {"is-destroyable": True},
                            },
                            "relationships": {
                                "organization": {"data": {"type": "organizations", "id": ORG}}
                            },
                        }
                    },
                    jsonapi,
                )
            if path == f"workspaces/{WS_ID}/current-state-version":
                if fake.state is None:
                    return self._send(404, {"errors": [{"status": "404"}]}, jsonapi)
                return self._send(200, self._sv(), jsonapi)
            if path == "state-download":
                return self._send(200, fake.state or b"", "application/json")
            if path == f"workspaces/{WS_ID}/state-versions" and method == "POST":
                attrs = json.loads(body)["data"]["attributes"]
                raw = base64.b64decode(attrs["state"])
                assert hashlib.md5(raw).hexdigest() == attrs["md5"]  # TFE sends an md5
                fake.state, fake.state_serial = raw, int(attrs["serial"])
                fake.state_posts.append(json.loads(body))
                return self._send(201, self._sv(), jsonapi)
            return self._send(404, {"errors": [{"status": "404"}]}, jsonapi)

        def _sv(self) -> dict[str, Any]:
            return {
                "data": {
                    "type": "state-versions",
                    "id": f"sv-{fake.state_serial}",
                    "attributes": {
                        "serial": fake.state_serial,
                        "hosted-state-download-url": f"{fake.url}/api/v2/state-download",
                    },
                }
            }

    return Handler


@pytest.fixture
def fake() -> Iterator[FakeCairn]:
    state = FakeCairn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _tarball(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MAIN_TF = """
terraform {
  backend "remote" {
    hostname     = "elsewhere.example"
    organization = "not-this-one"
    workspaces { name = "not-this-either" }
  }
}

variable "greeting" {}
variable "tricky" {}
variable "numbers" {}

resource "null_resource" "hello" {
  triggers = { greeting = var.greeting }
  provisioner "local-exec" {
    command = "echo greeting=$GREETING env=$CAIRN_TEST_ENV; sleep ${var.sleep}"
    environment = { GREETING = var.greeting }
  }
}

variable "sleep" { default = 0 }

output "tricky" { value = var.tricky }
output "numbers" { value = var.numbers }
"""


def _settings(tmp_path: Path, mirror: Path, fake: FakeCairn) -> ExecutorSettings:
    include = f"[{hcl_string(NULL_PROVIDER_ADDRESS)}]"
    api = f"{fake.url}/api/v2/"
    config = tmp_path / "run.tfrc"
    config.write_text(
        "provider_installation {\n"
        f"  filesystem_mirror {{\n    path = {hcl_string(str(mirror))}\n"
        f"    include = {include}\n  }}\n"
        f"  direct {{\n    exclude = {include}\n  }}\n}}\n"
        f'host "{HOST}" {{\n  services = {{\n    "tfe.v2" = "{api}"\n'
        f'    "tfe.v2.1" = "{api}"\n    "state.v2" = "{api}"\n  }}\n}}\n',
        encoding="utf-8",
    )
    tfdir = tmp_path / "bin"
    tfdir.mkdir()
    (tfdir / "terraform-1.0.3").symlink_to(terraform_binary())
    return ExecutorSettings(
        terraform_path=tfdir,
        tf_cli_config=config,
        work_root=tmp_path,
        heartbeat_s=0.3,
        log_interval=0.2,
        inherited_env={"PATH": "/usr/bin:/bin"},
    )


def _client(fake: FakeCairn) -> AgentClient:
    return AgentClient(
        fake.url, fake.agent_token, name="test-agent", version="test", retries=3, backoff=0.05
    )


def _plan_then_apply(
    fake: FakeCairn, settings: ExecutorSettings, sleep: int = 0
) -> tuple[FakeJob, FakeJob]:
    files = {"main.tf": MAIN_TF, "sleep.auto.tfvars": f"sleep = {sleep}\n"}
    config = _tarball(files)
    plan = fake.add(FakeJob("job-plan1", "plan", "cairn_job_plantoken", config))
    client = _client(fake)
    try:
        Worker(client, settings, single=True, claim_wait=1).run()
    finally:
        client.close()
    apply = FakeJob("job-apply1", "apply", "cairn_job_applytoken", config)
    return plan, apply


def test_plan_then_apply_through_the_protocol(
    fake: FakeCairn, provider_mirror: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, provider_mirror, fake)
    fake.fail_first_log_chunk = True  # the first log PUT fails with a 500: retried
    plan, apply = _plan_then_apply(fake, settings)

    assert plan.started and plan.finish is not None, plan.log.decode()
    assert plan.finish == {
        "attempt": 1,
        "status": "finished",
        "has_changes": True,
        "resource_additions": 1,
        "resource_changes": 0,
        "resource_destructions": 0,
        "resource_imports": 0,
        "error": "",
    }, plan.log.decode()
    log = plan.log.decode()
    assert log.startswith("Terraform v1.0.3\n\nInitializing plugins and modules...\n")
    assert "null_resource.hello will be created" in log
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in log
    assert SECRET not in log and "***" in log  # the sensitive value in the plan is masked
    assert plan.token not in log
    assert fake.plans["run-fake1:binary"][:2] == b"PK"  # a saved plan is a zip file
    plan_json = json.loads(fake.plans["run-fake1:json"])
    assert plan_json["output_changes"]["tricky"]["after"] == 'a "b" \\ ${c} %{d}\nline'
    assert plan_json["output_changes"]["numbers"]["after"] == [1, 2, 3]
    assert fake.registered == 1 and fake.deregistered == 1
    assert plan.log_failed  # the failed first chunk was sent again
    assert fake.tfe_tokens == {plan.token}  # Terraform used the job token, nothing else
    assert fake.state is None

    fake.add(apply)
    client = _client(fake)
    try:
        Worker(client, settings, single=True, claim_wait=1).run()
    finally:
        client.close()
    log = apply.log.decode()
    assert apply.finish is not None and apply.finish["status"] == "finished", log
    assert apply.finish["resource_additions"] == 1
    assert log.startswith("Terraform v1.0.3\n\nInitializing plugins and modules...\n")
    assert "greeting=*** env=from-env" in log
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in log
    assert SECRET not in log
    state = json.loads(fake.state or b"{}")
    assert [r["type"] for r in state["resources"]] == ["null_resource"]
    assert fake.state_posts[0]["data"]["relationships"]["run"]["data"]["id"] == "run-fake1"
    assert apply.token in fake.tfe_tokens
    assert not list(tmp_path.glob("cairn-job-*"))  # job directories removed


def _apply_in_background(
    fake: FakeCairn, settings: ExecutorSettings, apply: FakeJob
) -> tuple[threading.Thread, list[Finish | None]]:
    fake.add(apply)
    client = _client(fake)
    client.register()
    job = client.claim(1)
    assert job is not None
    result: list[Finish | None] = []

    def run() -> None:
        try:
            result.append(JobRun(client, job, settings).run())
        finally:
            client.close()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while b"Provisioning with 'local-exec'" not in apply.log:
        assert time.monotonic() < deadline, apply.log.decode()
        assert thread.is_alive(), apply.log.decode()
        time.sleep(0.1)
    return thread, result


@pytest.mark.parametrize("cancel", ["graceful", "force"])
def test_cancel_signals_terraform(
    fake: FakeCairn, provider_mirror: Path, tmp_path: Path, cancel: str
) -> None:
    settings = _settings(tmp_path, provider_mirror, fake)
    plan, apply = _plan_then_apply(fake, settings, sleep=60)
    assert plan.finish is not None and plan.finish["status"] == "finished", plan.log.decode()
    thread, result = _apply_in_background(fake, settings, apply)
    started = time.monotonic()
    apply.cancel = cancel
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - started < 15  # not the 60 s sleep
    log = apply.log.decode()
    assert apply.finish is not None and apply.finish["status"] == "canceled", log
    assert result[0] is not None and result[0].status == "canceled"
    assert log.rstrip("\n").endswith("the run was canceled")
    if cancel == "graceful":
        assert "Interrupt received" in log  # Terraform saw SIGINT
    else:
        assert "Interrupt received" not in log  # SIGKILL: no goodbye


def test_lease_lost_kills_terraform_and_drops_the_job(
    fake: FakeCairn, provider_mirror: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, provider_mirror, fake)
    plan, apply = _plan_then_apply(fake, settings, sleep=60)
    assert plan.finish is not None, plan.log.decode()
    thread, result = _apply_in_background(fake, settings, apply)
    apply.lease_lost = True
    thread.join(30)
    assert not thread.is_alive()
    assert result == [None]
    assert apply.finish is None  # no finish from an agent that lost the job


def test_the_phase_timeout_kills_terraform(
    fake: FakeCairn, provider_mirror: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, provider_mirror, fake)
    plan, apply = _plan_then_apply(fake, settings, sleep=60)
    assert plan.finish is not None and plan.finish["status"] == "finished", plan.log.decode()
    apply.timeout_s = 5
    fake.add(apply)
    client = _client(fake)
    started = time.monotonic()
    try:
        Worker(client, settings, single=True, claim_wait=1).run()
    finally:
        client.close()
    assert time.monotonic() - started < 40  # killed at the deadline, not after the 60 s sleep
    log = apply.log.decode()
    assert apply.finish is not None and apply.finish["status"] == "errored", log
    assert apply.finish["error"] == "Error: the apply timed out after 5s", apply.finish
    assert log.rstrip("\n").endswith("the apply timed out after 5s")


# -- `cairn agent` ----------------------------------------------------------------------------


def _agent_env(settings: ExecutorSettings, fake: FakeCairn) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "TF_"))}
    env.update(
        CAIRN_AGENT_TOKEN=fake.agent_token,
        CAIRN_TERRAFORM_PATH=str(settings.terraform_path),
        CAIRN_RUN_TF_CLI_CONFIG=str(settings.tf_cli_config),
        CAIRN_LOG_FORMAT="json",
        TMPDIR=str(settings.work_root),
    )
    return env


def _cairn() -> str:
    return str(Path(sys.executable).parent / "cairn")


def test_cairn_agent_single_runs_one_job(
    fake: FakeCairn, provider_mirror: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, provider_mirror, fake)
    job = fake.add(FakeJob("job-cli", "plan", "cairn_job_clitoken", _tarball({"main.tf": MAIN_TF})))
    proc = subprocess.run(
        [_cairn(), "agent", "--url", fake.url, "--single", "--name", "laptop"],
        env=_agent_env(settings, fake),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert job.finish is not None and job.finish["status"] == "finished", job.log.decode()
    assert "registered as agent-fake1" in proc.stderr
    assert "finished plan run-fake1 (+1 ~0 -0)" in proc.stderr
    assert fake.agent_token not in proc.stderr + proc.stdout
    assert job.token not in proc.stderr + proc.stdout
    assert fake.deregistered == 1


def test_cairn_agent_stops_on_sigint_when_idle(
    fake: FakeCairn, provider_mirror: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, provider_mirror, fake)
    proc = subprocess.Popen(
        [_cairn(), "agent", "--url", fake.url],
        env=_agent_env(settings, fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while fake.registered == 0:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopping:" in err and "agent stopped: 0 job(s)" in err
    assert fake.deregistered == 1


def test_cairn_agent_refuses_a_bad_accept_list() -> None:
    proc = subprocess.run(
        [_cairn(), "agent", "--url", "https://x", "--token", "t", "--accept", "plan,destroy"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--accept" in proc.stderr and "plan, apply" in proc.stderr


def test_cairn_agent_with_a_wrong_token_says_so_and_exits(
    fake: FakeCairn, provider_mirror: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, provider_mirror, fake)
    env = {**_agent_env(settings, fake), "CAIRN_AGENT_TOKEN": "wrong-token-value"}
    proc = subprocess.run(
        [_cairn(), "agent", "--url", fake.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "cairn refused the agent: register: cairn refused the credential (401)" in proc.stderr
    assert "wrong-token-value" not in proc.stderr
    assert "Traceback" not in proc.stderr
