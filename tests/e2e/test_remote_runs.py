"""The real Terraform 1.0.3 CLI in remote mode against a real cairn that runs the plans and
applies itself (issue 9, deliverable 7, the CLI part).

One `cairn serve` per metadata backend (SQLite, PostgreSQL) serves the whole module, with its
built-in worker (`CAIRN_WORKERS` default 1), `CAIRN_TERRAFORM_PATH` pointing at the test
Terraform and `CAIRN_RUN_TF_CLI_CONFIG` at a CLI config that installs hashicorp/null from the
offline mirror. Every test works in an organization of its own; the CLI reaches cairn over
HTTPS with real service discovery. Long-running CLIs are driven through `Popen` and their
merged output is read line by line as it comes (`Stream`), so tests can act in the middle of
a run (check its status, send Ctrl-C, unlock the workspace).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_server
from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.terraform import (
    NULL_PROVIDER_ADDRESS,
    TerraformCLI,
    TerraformProject,
    hcl_string,
    remote_backend,
    terraform_binary,
)

pytestmark = pytest.mark.e2e

CLI_TIMEOUT = 240.0
RUN_URL = re.compile(r"/runs/(run-[A-Za-z0-9]+)")
FINAL = frozenset({"applied", "planned_and_finished", "errored", "canceled", "discarded"})


# -- the server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_server(
    request: pytest.FixtureRequest,
    backend: str,
    admin_token: str,
    tmp_path_factory: pytest.TempPathFactory,
    provider_mirror: Path,
) -> Iterator[CairnServer]:
    """A cairn whose built-in worker runs the test Terraform with the offline null provider."""
    root = tmp_path_factory.mktemp(f"runs-{backend}")
    run_cli_config = root / "run.tfrc"
    include = f"[{hcl_string(NULL_PROVIDER_ADDRESS)}]"
    run_cli_config.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = {hcl_string(str(provider_mirror))}\n"
        f"    include = {include}\n"
        "  }\n"
        "  direct {\n"
        f"    exclude = {include}\n"
        "  }\n"
        "}\n",
        encoding="utf-8",
    )
    env = {
        "CAIRN_TERRAFORM_PATH": str(terraform_binary().parent),
        "CAIRN_RUN_TF_CLI_CONFIG": str(run_cli_config),
    }
    srv = start_server(request, root / "data", backend, admin_token, env=env)
    try:
        yield srv
    finally:
        srv.stop()


@dataclass(frozen=True)
class Site:
    """The module's server, an admin API client, a Terraform configured for it, and an org."""

    server: CairnServer
    api: httpx.Client
    cli: TerraformCLI
    org: str

    def workspace(self, name: str, **attributes: Any) -> str:
        attributes.setdefault("execution-mode", "remote")
        return tfe.create_workspace(self.api, self.org, name, **attributes)

    def project(self, name: str, workspace: str, body: str) -> TerraformProject:
        """A working directory for `workspace` with `body` after the terraform block, inited."""
        backend = remote_backend(self.cli.hostname, self.org, name=workspace)
        project = self.cli.project(name, config(backend, body))
        project.init()
        return project

    def run(self, run_id: str) -> dict[str, Any]:
        data: dict[str, Any] = tfe.document(self.api.get(f"/api/v2/runs/{run_id}"), 200)["data"]
        return data

    def phase(self, run_id: str, kind: str) -> dict[str, Any]:
        doc = tfe.document(self.api.get(f"/api/v2/runs/{run_id}/{kind}"), 200)
        data: dict[str, Any] = doc["data"]
        return data

    def log(self, run_id: str, kind: str) -> str:
        """The whole stored log of the run's plan or apply, read at its `log-read-url`."""
        url = self.phase(run_id, kind)["attributes"]["log-read-url"]
        return tfe.expect(self.api.get(url), 200).content.decode("utf-8", "replace")

    def runs(self, workspace_id: str) -> list[dict[str, Any]]:
        doc = tfe.document(self.api.get(f"/api/v2/workspaces/{workspace_id}/runs"), 200)
        items: list[dict[str, Any]] = doc["data"]
        return items

    def events(self, run_id: str) -> list[dict[str, Any]]:
        doc = tfe.document(self.api.get(f"/api/v2/runs/{run_id}/run-events"), 200)
        items: list[dict[str, Any]] = doc["data"]
        return items

    def ws(self, workspace_id: str) -> dict[str, Any]:
        data: dict[str, Any] = tfe.document(
            self.api.get(f"/api/v2/workspaces/{workspace_id}"), 200
        )["data"]
        return data

    def state(self, workspace_id: str) -> dict[str, Any]:
        """The workspace's current state, downloaded through the API."""
        version = tfe.current_state_version(self.api, workspace_id)
        state: dict[str, Any] = json.loads(tfe.download_state(self.api, version))
        return state

    def wait_status(self, run_id: str, statuses: set[str], timeout: float = 90.0) -> str:
        status = ""

        def reached() -> bool:
            nonlocal status
            status = self.run(run_id)["attributes"]["status"]
            return status in statuses

        wait_until(reached, timeout, lambda: f"run {run_id} is {status!r}, not in {statuses}")
        return status


@pytest.fixture
def site(
    run_server: CairnServer, admin_token: str, tmp_path: Path, provider_mirror: Path
) -> Iterator[Site]:
    assert run_server.ca_bundle is not None
    cli = TerraformCLI.for_https(
        tmp_path,
        hostname=run_server.hostname,
        token=admin_token,
        mirror=provider_mirror,
        ca_bundle=run_server.ca_bundle,
    )
    with run_server.client(admin_token) as api:
        yield Site(run_server, api, cli, tfe.create_organization(api, tfe.unique_name("runs")))


def config(backend_block: str, body: str) -> str:
    return f"""\
terraform {{
  required_providers {{
    null = {{
      source  = "hashicorp/null"
      version = "2.1.2"
    }}
  }}

{backend_block}}}

{body}"""


# Three null_resources whose triggers carry `generation` (so each config is a different run).
def items(generation: str = "1", count: int = 3) -> str:
    return f"""\
resource "null_resource" "item" {{
  count    = {count}
  triggers = {{ generation = {hcl_string(generation)} }}
}}

output "instances" {{
  value = length(null_resource.item)
}}
"""


# A plan that takes seconds of CPU without any provider: a 350x350 grid of strings.
SLOW_PLAN = """\
locals {
  grid = [for i in range(350) : [for j in range(350) : "${i}-${j}"]]
}

resource "null_resource" "one" {}

output "cells" {
  value = length(flatten(local.grid))
}
"""


# An apply that lasts a minute unless interrupted (the marker finds the `sleep` process).
SLEEP_MARKER = "59.4321"
SLOW_APPLY = f"""\
resource "null_resource" "slow" {{
  provisioner "local-exec" {{
    command = "sleep {SLEEP_MARKER}"
  }}
}}
"""


# -- driving a CLI ------------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s: {describe()}")
        time.sleep(0.25)


class Stream:
    """A running Terraform whose merged output is read line by line, each line with the
    wall-clock time it reached us."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._queue: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put((time.time(), line.rstrip("\n")))
        self._queue.put(None)

    def _drain(self, timeout: float) -> bool:
        """Move what has arrived to `lines`; False once the output has ended."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        while item is not None:
            self.lines.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return True
        self._queue.put(None)  # keep the end marker for later calls
        return False

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float = 120.0) -> tuple[float, str]:
        """The first line matching the regular expression `pattern` (waiting for it)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for stamp, line in self.lines[seen:]:
                if regex.search(line):
                    return stamp, line
            seen = len(self.lines)
            left = deadline - time.monotonic()
            ended = left <= 0 or not self._drain(min(left, 0.5))
            if ended and seen == len(self.lines):
                self.kill()
                raise AssertionError(
                    f"no line matching {pattern!r} in Terraform's output "
                    f"(exit status {self.proc.poll()}):\n{self.text}"
                )

    def run_id(self) -> str:
        found = RUN_URL.search(self.text) or RUN_URL.search(self.wait_for(RUN_URL.pattern)[1])
        assert found is not None
        return found.group(1)

    def finish(self, timeout: float = CLI_TIMEOUT) -> tuple[int, str]:
        """Wait for Terraform to exit; its status and whole output."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"Terraform still running after {timeout}s:\n{self.text}"
            ) from None
        self._reader.join(timeout=10)
        deadline = time.monotonic() + 10
        while self._drain(0.1) and time.monotonic() < deadline:
            pass
        return rc, self.text

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to Terraform's process group, as a terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        """Kill Terraform if it still runs, and close our ends of its pipes."""
        self.kill()
        self._reader.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a broken pipe to an exited process
                    pipe.close()


@pytest.fixture
def streams() -> Iterator[Callable[[subprocess.Popen[str]], Stream]]:
    """Wrap Popen'd Terraforms in `Stream`s; any still running at teardown is killed."""
    started: list[Stream] = []

    def make(proc: subprocess.Popen[str]) -> Stream:
        started.append(Stream(proc))
        return started[-1]

    try:
        yield make
    finally:
        for stream in started:
            stream.close()


def finished(stream: Stream, expect: int = 0) -> str:
    rc, out = stream.finish()
    assert rc == expect, f"terraform exited {rc} (expected {expect}):\n{out}"
    return out


def stamp(attributes: dict[str, Any], key: str) -> datetime:
    value = attributes["status-timestamps"].get(key)
    assert value, f"no {key!r} in {attributes['status-timestamps']}"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process below `pid`."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":  # a zombie has exited already
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        commands[int(entry.name)] = cmdline
    found: list[tuple[int, str]] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append((child, commands.get(child, "")))
        todo.extend(children.get(child, []))
    return found


def processes_matching(text: str) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append((int(entry.name), cmdline))
    return found


# -- 1. streaming -------------------------------------------------------------------------------


def test_plan_output_streams_while_the_plan_runs(
    site: Site, streams: Callable[[subprocess.Popen[str]], Stream]
) -> None:
    site.workspace("stream")
    project = site.project("stream", "stream", SLOW_PLAN)

    plan = streams(project.popen("plan"))
    # The first line of the plan's log (the header the worker writes before `terraform init`).
    first_seen, _ = plan.wait_for(r"^Terraform v\d+\.\d+\.\d+$")
    run_id = plan.run_id()
    assert site.run(run_id)["attributes"]["status"] == "planning"

    out = finished(plan)
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in out
    assert "cells = 122500" in out
    phase = site.phase(run_id, "plan")["attributes"]
    assert phase["status"] == "finished"
    # The first log bytes reached the CLI before the plan phase had finished.
    assert first_seen < stamp(phase, "finished-at").timestamp()
    assert site.run(run_id)["attributes"]["status"] == "planned_and_finished"


# -- 2. applies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["confirm-on-stdin", "auto-approve", "auto-apply-workspace"])
def test_apply_runs_remotely_and_writes_state(
    site: Site, streams: Callable[[subprocess.Popen[str]], Stream], how: str
) -> None:
    ws_id = site.workspace("app", **({"auto-apply": True} if how == "auto-apply-workspace" else {}))
    project = site.project("app", "app", items())

    if how == "confirm-on-stdin":
        apply = streams(project.popen("apply", input_enabled=True))
        apply.wait_for(r"Do you want to perform these actions in workspace")
        run_id = apply.run_id()
        assert site.run(run_id)["attributes"]["status"] == "planned"
        assert apply.proc.stdin is not None
        apply.proc.stdin.write("yes\n")
        apply.proc.stdin.flush()
    elif how == "auto-approve":
        apply = streams(project.popen("apply", "-auto-approve"))
    else:  # no -auto-approve and no input: only the workspace's auto-apply can apply it
        apply = streams(project.popen("apply"))
    out = finished(apply)
    run_id = apply.run_id()

    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in out
    assert "instances = 3" in out
    run = site.run(run_id)["attributes"]
    assert run["status"] == "applied"
    assert run["auto-apply"] is (how == "auto-apply-workspace")
    confirmed = [e for e in site.events(run_id) if e["attributes"]["action"] == "confirmed"]
    assert len(confirmed) == 1
    actor = confirmed[0]["relationships"]["actor"]["data"]
    if how == "auto-apply-workspace":
        assert actor is None  # cairn applied it by itself: the CLI never POSTed apply
    else:
        assert actor is not None and actor["id"]  # the CLI confirmed it as the admin

    apply_phase = site.phase(run_id, "apply")["attributes"]
    assert apply_phase["status"] == "finished"
    assert apply_phase["resource-additions"] == 3
    version = tfe.current_state_version(site.api, ws_id)
    # The state version names the run that wrote it, not a user.
    assert version["relationships"]["run"]["data"] == {"id": run_id, "type": "runs"}
    assert version["relationships"]["created-by"]["data"] is None
    included = site.api.get(
        f"/api/v2/state-versions/{version['id']}", params={"include": "run"}
    ).json()
    assert [(r["type"], r["id"]) for r in included.get("included", [])] == [("runs", run_id)]
    state = site.state(ws_id)
    addresses = {
        f"{r['type']}.{r['name']}[{i['index_key']}]"
        for r in state["resources"]
        for i in r["instances"]
    }
    assert addresses == {"null_resource.item[0]", "null_resource.item[1]", "null_resource.item[2]"}
    assert state["outputs"]["instances"]["value"] == 3
    ws = site.ws(ws_id)["attributes"]
    assert ws["locked"] is False  # the run let go of the workspace lock
    assert project.state_list() == [
        "null_resource.item[0]",
        "null_resource.item[1]",
        "null_resource.item[2]",
    ]


# -- 3. speculative plan ------------------------------------------------------------------------


def test_speculative_plan_takes_no_lock_and_writes_no_state(
    site: Site, streams: Callable[[subprocess.Popen[str]], Stream]
) -> None:
    ws_id = site.workspace("spec")
    project = site.project("spec", "spec", items())
    # A user holds the lock: a speculative plan neither needs nor takes it.
    tfe.workspace_action(site.api, ws_id, "lock")

    plan = streams(project.popen("plan", "-detailed-exitcode"))
    out = finished(plan, expect=2)  # 2: succeeded, with changes
    run_id = plan.run_id()
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in out

    run = site.run(run_id)["attributes"]
    assert run["status"] == "planned_and_finished"
    assert run["plan-only"] is True
    assert run["has-changes"] is True
    assert run["actions"]["is-confirmable"] is False
    ws = site.ws(ws_id)
    assert ws["attributes"]["locked"] is True  # still the user's lock, untouched
    current = ws["relationships"]["current-run"]["data"]
    assert current is None or current["id"] != run_id
    tfe.expect(site.api.get(f"/api/v2/workspaces/{ws_id}/current-state-version"), 404)
    tfe.workspace_action(site.api, ws_id, "unlock")  # the user's lock is the user's to release


# -- 4. Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_cancels_a_running_apply(
    site: Site, streams: Callable[[subprocess.Popen[str]], Stream]
) -> None:
    ws_id = site.workspace("slow")
    project = site.project("slow", "slow", SLOW_APPLY)

    apply = streams(project.popen("apply", "-auto-approve"))
    apply.wait_for(r"null_resource\.slow: Provisioning with 'local-exec'")
    run_id = apply.run_id()
    assert site.run(run_id)["attributes"]["status"] == "applying"
    assert processes_matching(f"sleep {SLEEP_MARKER}"), "the worker's local-exec is not running"
    server_pid = site.server.pid
    assert server_pid is not None
    assert any("terraform" in cmd for _, cmd in descendants(server_pid)), descendants(server_pid)

    apply.interrupt()
    _, out = apply.finish(timeout=60)  # Terraform 1.0.3 exits 0 after a cancel
    assert "The remote operation was successfully cancelled." in out, out

    site.wait_status(run_id, {"canceled"}, timeout=60)
    run = site.run(run_id)["attributes"]
    assert run["canceled-at"]
    assert site.phase(run_id, "apply")["attributes"]["status"] == "canceled"
    assert site.ws(ws_id)["attributes"]["locked"] is False
    wait_until(
        lambda: not any("terraform" in cmd for _, cmd in descendants(server_pid)),
        30,
        lambda: f"Terraform still runs in the worker: {descendants(server_pid)}",
    )
    wait_until(
        lambda: not processes_matching(f"sleep {SLEEP_MARKER}"),
        10,
        lambda: f"the local-exec outlived the cancel: {processes_matching(SLEEP_MARKER)}",
    )
    # The workspace is usable again: the next run starts and applies.
    project.write(config(remote_backend(site.cli.hostname, site.org, name="slow"), items()))
    after = project.apply(timeout=CLI_TIMEOUT)
    assert "Apply complete!" in after.stdout


# -- 5. a queue of applies ----------------------------------------------------------------------


def held_items(generation: str, release: Path) -> str:
    """``items(generation, count=1)`` whose apply waits (≤ 120 s) until ``release`` exists."""
    wait = f"for i in $(seq 1200); do [ -e '{release}' ] && exit 0; sleep 0.1; done; exit 1"
    return f"""\
resource "null_resource" "item" {{
  count    = 1
  triggers = {{ generation = {hcl_string(generation)} }}
  provisioner "local-exec" {{
    command = {hcl_string(wait)}
  }}
}}

output "instances" {{
  value = length(null_resource.item)
}}
"""


def test_concurrent_applies_queue_in_order(
    site: Site, streams: Callable[[subprocess.Popen[str]], Stream], tmp_path: Path
) -> None:
    ws_id = site.workspace("queue")
    # The first run's apply lasts until both later CLIs have said where they wait: on a busy
    # machine it could otherwise finish before the third CLI first looks at the queue.
    release = tmp_path / "release-first-apply"
    configs = [held_items("0", release), items("1", count=1), items("2", count=1)]
    projects = [site.project(f"queue{n}", "queue", configs[n]) for n in range(3)]

    applies = []
    for project in projects:
        applies.append(streams(project.popen("apply", "-auto-approve")))
        applies[-1].run_id()  # its run exists before the next CLI starts: a definite order
    applies[1].wait_for(r"Waiting for 1 run\(s\) to finish before being queued", 120)
    applies[2].wait_for(r"Waiting for 2 run\(s\) to finish before being queued", 120)
    release.touch()
    outputs = {apply.run_id(): finished(apply) for apply in applies}

    runs = sorted(site.runs(ws_id), key=lambda r: str(r["attributes"]["created-at"]))
    assert [r["id"] for r in runs] == [a.run_id() for a in applies]
    assert [r["attributes"]["status"] for r in runs] == ["applied"] * 3
    for earlier, later in itertools.pairwise(runs):
        # One run at a time: the next plan started only after the earlier run had applied.
        assert stamp(earlier["attributes"], "applied-at") <= stamp(
            later["attributes"], "planning-at"
        )
    for out in outputs.values():
        assert "Apply complete! Resources: 1 added, 0 changed" in out
    queued = r"Waiting for (\d+) run\(s\) to finish before being queued\.\.\."
    assert not re.search(queued, outputs[runs[0]["id"]])
    positions = [{int(n) for n in re.findall(queued, outputs[r["id"]])} for r in runs[1:]]
    assert positions[0] == {1}, outputs[runs[1]["id"]]
    assert 2 in positions[1], outputs[runs[2]["id"]]
    state = site.state(ws_id)
    assert state["resources"][0]["instances"][0]["attributes"]["triggers"] == {"generation": "2"}


# -- 6. a user-held lock ------------------------------------------------------------------------


def test_run_waits_for_a_user_held_lock(
    site: Site, streams: Callable[[subprocess.Popen[str]], Stream]
) -> None:
    ws_id = site.workspace("locked")
    project = site.project("locked", "locked", items())
    tfe.workspace_action(site.api, ws_id, "lock")

    apply = streams(project.popen("apply", "-auto-approve"))
    apply.wait_for(r"Waiting for the manually locked workspace to be unlocked\.\.\.", 60)
    run_id = apply.run_id()
    time.sleep(2)  # a worker is idle: only the lock holds the run back
    assert site.run(run_id)["attributes"]["status"] == "pending"
    tfe.expect(site.api.get(f"/api/v2/workspaces/{ws_id}/current-state-version"), 404)

    tfe.workspace_action(site.api, ws_id, "unlock")
    out = finished(apply)
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in out
    assert site.run(run_id)["attributes"]["status"] == "applied"
    assert site.ws(ws_id)["attributes"]["locked"] is False


# -- 7. variables -------------------------------------------------------------------------------


TF_SECRET = "tf-s3cr3t-7Hq2xZ"
ENV_SECRET = "env-s3cr3t-9Vb4kW"
VARIABLES = """\
variable "greeting" {
  type = string
}

variable "tags" {
  type = object({ team = string, size = number })
}

variable "password" {
  type = string
}

resource "null_resource" "echo" {
  triggers = { greeting = var.greeting }

  provisioner "local-exec" {
    command = "echo plain=$CAIRN_E2E_PLAIN secret=$CAIRN_E2E_SECRET"
  }
}

output "greeting" {
  value = var.greeting
}

output "team" {
  value = var.tags.team
}

output "size" {
  value = var.tags.size
}

output "password_echo" {
  value = var.password
}
"""


def test_variables_reach_terraform_and_sensitive_values_are_masked(
    site: Site, streams: Callable[[subprocess.Popen[str]], Stream]
) -> None:
    ws_id = site.workspace("vars")
    for key, value, category, hcl, sensitive in [
        ("greeting", "hello-e2e", "terraform", False, False),
        ("tags", '{ team = "infra", size = 3 }', "terraform", True, False),
        ("password", TF_SECRET, "terraform", False, True),
        ("CAIRN_E2E_PLAIN", "plain-env-value", "env", False, False),
        ("CAIRN_E2E_SECRET", ENV_SECRET, "env", False, True),
    ]:
        attributes = {
            "key": key,
            "value": value,
            "category": category,
            "hcl": hcl,
            "sensitive": sensitive,
        }
        tfe.expect(
            site.api.post(
                f"/api/v2/workspaces/{ws_id}/vars",
                json={"data": {"type": "vars", "attributes": attributes}},
                headers={"Content-Type": tfe.JSONAPI},
            ),
            201,
        )
    project = site.project("vars", "vars", VARIABLES)

    apply = streams(project.popen("apply", "-auto-approve"))
    out = finished(apply)
    run_id = apply.run_id()

    assert 'greeting = "hello-e2e"' in out
    assert 'team = "infra"' in out
    assert "size = 3" in out
    assert "plain=plain-env-value secret=***" in out  # the env secret was set, and masked
    assert 'password_echo = "***"' in out
    logs = site.log(run_id, "plan") + site.log(run_id, "apply")
    for secret in (TF_SECRET, ENV_SECRET):
        assert secret not in out
        assert secret not in logs
    assert "plain=plain-env-value secret=***" in logs
    # Terraform did get the real value (the state keeps it; only output and logs are masked).
    outputs = site.state(ws_id)["outputs"]
    assert outputs["password_echo"]["value"] == TF_SECRET
    assert outputs["size"]["value"] == 3


# -- 8. local execution -------------------------------------------------------------------------


def test_local_execution_mode_stays_local(site: Site) -> None:
    ws_id = site.workspace("local", **{"execution-mode": "local"})
    project = site.project("local", "local", items())

    result = project.apply(timeout=CLI_TIMEOUT)
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in result.stdout
    assert "remote backend" not in result.stdout
    assert not RUN_URL.search(result.stdout)
    assert site.runs(ws_id) == []
    queue_doc = tfe.document(site.api.get(f"/api/v2/organizations/{site.org}/runs/queue"), 200)
    assert queue_doc["data"] == []
    assert site.state(ws_id)["outputs"]["instances"]["value"] == 3
