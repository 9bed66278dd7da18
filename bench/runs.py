"""Remote runs (issue 9, item 8): how soon a queued run starts, and what a no-op run costs
through cairn against running Terraform directly.

One ``cairn serve`` (HTTPS with its development CA, ``CAIRN_WORKERS=0``: no built-in workers)
on SQLite (or PostgreSQL with ``--postgres``) and two ``cairn agent`` processes of one agent
pool, on this machine, running the real Terraform 1.0.3 of the test suite
(``CAIRN_TERRAFORM_PATH``). Every workspace is in ``agent`` execution mode on that pool. The
configuration is the smallest a run can have: one output, no providers, no resources.

1. **Queue latency**: 20 workspaces get a configuration version each (created and uploaded
   beforehand), then 20 plan-only runs are created at once from 20 threads (each with its
   own connection, opened beforehand). For each run the server's own timestamps give
   *created → plan started* (``created-at`` → the run's ``planning-at``, the moment an agent
   started the job). With two agents and 20 runs, most of that is waiting for an agent to be
   free (each plan takes what Terraform takes), so the table also gives the *pickup*
   latency: from the moment an agent was free for the run (``max(created-at, the (k-2)-th
   plan finish)`` for the k-th plan start: with two executors the k-th start needs k-1
   finishes before it) to its start. The target (p99 < 1 s) is about cairn, so it applies to
   the pickup latency, and to *idle* runs: runs created one at a time while both agents wait
   (created → plan started, no queue at all).
2. **No-op runs per minute**: a *no-op run* is what ``terraform apply`` in a remote workspace
   does for a configuration without changes: create a configuration version, upload its
   ``.tar.gz``, create a run (auto-apply workspace), and wait until the plan found no changes
   and the run ended ``planned_and_finished`` (no apply job: there is nothing to apply). It
   is measured end to end by a client reading the run every 100 ms. Against it, on the same
   machine and with the same Terraform binary, one after the other run by run (so all see
   the same machine load):

   - *direct: init && plan*: the same configuration, ``terraform init && terraform plan`` in
     a fresh directory each time, local state (the target: cairn ≥ 0.7x its rate);
   - *direct: a plan job's commands*: what a plan job runs, without cairn around it: the
     same backend override, CLI configuration, environment and commands (``init``, ``plan
     -out``, ``show -json``), against a workspace of the same server in local execution
     mode holding the same state. cairn / this rate is what cairn's orchestration (queue,
     claim, job protocol, logs, plan uploads, the client's API calls) costs.

   The no-op run's time is also split by the run's own timestamps (client calls, created →
   plan started, the job, the job's end → the client seeing it).

Run: ``.venv/bin/python bench/runs.py [--runs 20] [--noop 15] [--postgres] [--keep]
[--cairn-src DIR]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

# _harness puts the repository root on sys.path: it comes before tests.support.
from _harness import Bench, percentile, print_header, section, verdict

# isort: split
from tests.support.server import CairnServer, cairn_executable
from tests.support.terraform import terraform_binary

from cairn.executor import terraform

CT = {"Content-Type": "application/vnd.api+json"}
MAIN_TF = b'output "greeting" {\n  value = "hello"\n}\n'
AGENTS = 2
POLL_S = 0.1  # how often the client reads a run it waits for
RUN_TIMEOUT_S = 180.0
FINAL = frozenset(
    {"planned_and_finished", "applied", "errored", "canceled", "discarded", "force_canceled"}
)
QUEUE_TARGET_S = 1.0
PLAN_ONLY: dict[str, Any] = {"plan-only": True}
RATIO_TARGET = 0.7


# ---- the API ---------------------------------------------------------------------------------


def data(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} → {response.status_code}: "
            f"{response.text[:500]}"
        )
    body: dict[str, Any] = response.json()["data"]
    return body


def config_targz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("main.tf")
        info.size = len(MAIN_TF)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(MAIN_TF))
    return buf.getvalue()


class Cairn:
    """The admin's view of the benchmark's server."""

    def __init__(self, server: CairnServer, token: str) -> None:
        self.server = server
        self.token = token
        self.api = server.client(token)
        self.uploads = httpx.Client(verify=server.ssl_context(), timeout=30.0)
        self.archive = config_targz()

    def close(self) -> None:
        self.api.close()
        self.uploads.close()

    def organization(self, name: str) -> None:
        body = {"data": {"type": "organizations", "attributes": {"name": name, "email": "b@x.io"}}}
        data(self.api.post("/api/v2/organizations", json=body, headers=CT), 201)

    def agent_pool(self, org: str) -> tuple[str, str]:
        """A pool and an agent token of it: (pool ID, token)."""
        body = {"data": {"type": "agent-pools", "attributes": {"name": "bench"}}}
        pool = data(
            self.api.post(f"/api/v2/organizations/{org}/agent-pools", json=body, headers=CT), 201
        )
        body = {"data": {"type": "authentication-tokens", "attributes": {"description": "bench"}}}
        made = self.api.post(
            f"/api/v2/agent-pools/{pool['id']}/authentication-tokens", json=body, headers=CT
        )
        return str(pool["id"]), str(data(made, 201)["attributes"]["token"])

    def idle_agents(self, pool_id: str) -> int:
        listed = self.api.get(f"/api/v2/agent-pools/{pool_id}/agents")
        listed.raise_for_status()
        return sum(1 for a in listed.json()["data"] if a["attributes"]["status"] == "idle")

    def workspace(self, org: str, name: str, pool_id: str | None, *, auto_apply: bool) -> str:
        """A workspace running on the pool's agents (local execution without a pool)."""
        attrs: dict[str, Any] = {"name": name, "auto-apply": auto_apply}
        if pool_id is None:
            attrs["execution-mode"] = "local"
        else:
            attrs.update({"execution-mode": "agent", "agent-pool-id": pool_id})
        body = {"data": {"type": "workspaces", "attributes": attrs}}
        made = self.api.post(f"/api/v2/organizations/{org}/workspaces", json=body, headers=CT)
        return str(data(made, 201)["id"])

    def configuration_version(self, ws_id: str, client: httpx.Client | None = None) -> str:
        """Create a configuration version and upload the archive (as the CLI does)."""
        api = client or self.api
        body = {
            "data": {"type": "configuration-versions", "attributes": {"auto-queue-runs": False}}
        }
        cv = data(
            api.post(f"/api/v2/workspaces/{ws_id}/configuration-versions", json=body, headers=CT),
            201,
        )
        put = self.uploads.put(cv["attributes"]["upload-url"], content=self.archive)
        if put.status_code != 200:
            raise RuntimeError(f"upload refused: {put.status_code} {put.text[:300]}")
        return str(cv["id"])

    def create_run(
        self, ws_id: str, cv_id: str, *, client: httpx.Client | None = None, **attrs: Any
    ) -> str:
        rels = {
            "workspace": {"data": {"type": "workspaces", "id": ws_id}},
            "configuration-version": {"data": {"type": "configuration-versions", "id": cv_id}},
        }
        body = {"data": {"type": "runs", "attributes": attrs, "relationships": rels}}
        api = client or self.api
        return str(data(api.post("/api/v2/runs", json=body, headers=CT), 201)["id"])

    def run(self, run_id: str, client: httpx.Client | None = None) -> dict[str, Any]:
        return data((client or self.api).get(f"/api/v2/runs/{run_id}"), 200)

    def plan(self, run: dict[str, Any]) -> dict[str, Any]:
        plan_id = run["relationships"]["plan"]["data"]["id"]
        return data(self.api.get(f"/api/v2/plans/{plan_id}"), 200)

    def wait_final(self, run_id: str, client: httpx.Client | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            run = self.run(run_id, client)
            if run["attributes"]["status"] in FINAL:
                return run
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} still {run['attributes']['status']}")
            time.sleep(POLL_S)


def stamp(value: str) -> float:
    """Seconds since the epoch of an API timestamp (``…T12:00:00.123Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def expect_status(run: dict[str, Any], status: str, agent_logs: list[Path]) -> None:
    got = run["attributes"]["status"]
    if got != status:
        tails = "\n".join(p.read_text(errors="replace")[-1500:] for p in agent_logs)
        raise RuntimeError(f"run {run['id']} ended {got}, not {status}; agents:\n{tails}")


# ---- agents ----------------------------------------------------------------------------------


def start_agents(bench: Bench, server: CairnServer, cairn: Cairn, token: str, pool_id: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update(
        CAIRN_AGENT_TOKEN=token,
        CAIRN_TERRAFORM_PATH=str(terraform_binary().parent),
        CAIRN_LOG_FORMAT="json",
    )
    if bench.cairn_src is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(bench.cairn_src), os.environ.get("PYTHONPATH", "")) if p
        )
    argv = [str(cairn_executable()), "agent", "--url", server.url]
    if server.ca_bundle is not None:
        argv += ["--ca-file", str(server.ca_bundle)]
    for i in range(AGENTS):
        bench.spawn(f"agent-{i + 1}", [*argv, "--name", f"bench-{i + 1}"], env=env)
    deadline = time.monotonic() + 60
    while cairn.idle_agents(pool_id) < AGENTS:
        for proc in bench.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"cairn agent exited with {proc.returncode}; see {bench.root}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agents did not register within 60 s; see {bench.root}")
        time.sleep(0.1)


def stop_agents(bench: Bench) -> None:
    """Two SIGTERMs (by pid): an idle agent leaves its long-poll, deregisters and exits."""
    for proc in bench.processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    time.sleep(0.7)
    for proc in bench.processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


# ---- 1. queue latency ------------------------------------------------------------------------


def queue_latency(cairn: Cairn, org: str, pool_id: str, runs: int, logs: list[Path]) -> None:
    workspaces = [
        cairn.workspace(org, f"queue-{i:02d}", pool_id, auto_apply=False) for i in range(runs)
    ]
    cvs = [cairn.configuration_version(ws) for ws in workspaces]

    # One client (and connection) per thread, connected beforehand: the burst is run creates,
    # not TLS handshakes.
    clients = [cairn.server.client(cairn.token) for _ in range(runs)]
    for client in clients:
        client.get("/api/v2/ping").raise_for_status()
    go = threading.Barrier(runs)

    def create(n: int) -> str:
        go.wait()
        return cairn.create_run(workspaces[n], cvs[n], client=clients[n], **PLAN_ONLY)

    try:
        with concurrent.futures.ThreadPoolExecutor(runs) as pool:
            run_ids = list(pool.map(create, range(runs)))
    finally:
        for client in clients:
            client.close()
    finished = [cairn.wait_final(run_id) for run_id in run_ids]
    for run in finished:
        expect_status(run, "planned_and_finished", logs)
    created, started, queued, ended = [], [], [], []
    for run in finished:
        ts = run["attributes"]["status-timestamps"]
        created.append(stamp(run["attributes"]["created-at"]))
        queued.append(stamp(ts["plan-queued-at"]))
        started.append(stamp(ts["planning-at"]))
        ended.append(stamp(cairn.plan(run)["attributes"]["status-timestamps"]["finished-at"]))
    total = [s - c for s, c in zip(started, created, strict=True)]
    to_queue = [q - c for q, c in zip(queued, created, strict=True)]
    # Pickup: from the moment an executor was free for the run to the run's start.
    order = sorted(range(runs), key=lambda i: started[i])
    finishes = sorted(ended)
    pickup = []
    for k, i in enumerate(order):
        free = created[i] if k < AGENTS else max(created[i], finishes[k - AGENTS])
        pickup.append(started[i] - free)
    plan_s = [e - s for e, s in zip(ended, started, strict=True)]
    span = max(ended) - min(created)

    # Idle: one run at a time, both agents waiting for it.
    idle = []
    for ws in workspaces[: min(10, runs)]:
        cv = cairn.configuration_version(ws)
        run = cairn.wait_final(cairn.create_run(ws, cv, **PLAN_ONLY))
        expect_status(run, "planned_and_finished", logs)
        ts = run["attributes"]["status-timestamps"]
        idle.append(stamp(ts["planning-at"]) - stamp(run["attributes"]["created-at"]))

    print(
        f"1. queue latency: {runs} plan-only runs in {runs} workspaces created at once, "
        f"{AGENTS} `cairn agent` processes (server CAIRN_WORKERS=0); all done in {span:.1f} s"
    )
    print_header(f"   {'seconds':38}{'p50':>8}{'p99':>8}{'max':>8}   target")
    rows: list[tuple[str, list[float], str]] = [
        ("created → plan-queued", to_queue, ""),
        ("created → plan started (with queueing)", total, ""),
        ("agent free → plan started (pickup)", pickup, "p99 < 1 s"),
        (f"idle agents: created → started ({len(idle)})", idle, "p99 < 1 s"),
        ("one plan job (start → finish)", plan_s, ""),
    ]
    for name, values, target in rows:
        mark = ""
        if target:
            mark = f"{target}: {verdict(percentile(values, 99) < QUEUE_TARGET_S)}"
        print(
            f"   {name:38}{percentile(values, 50):8.3f}{percentile(values, 99):8.3f}"
            f"{max(values):8.3f}   {mark}"
        )
    worst = max(range(runs), key=lambda k: pickup[k])
    print(
        f"   the {runs} runs were created within {max(created) - min(created):.3f} s; the "
        f"slowest pickup was start #{worst + 1} of {runs}"
    )
    print()


# ---- 2. no-op runs per minute ----------------------------------------------------------------


def direct_environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")}
    env.update(
        HOME=str(home),
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        TF_CLI_CONFIG_FILE=os.devnull,
    )
    return env


def direct_run(binary: Path, root: Path, n: int, *, saved_plan: bool = False) -> None:
    """``terraform init && terraform plan`` in a fresh directory (then removed). With
    ``saved_plan``: ``init && plan -out && show -json`` — the least any server must run to
    offer the JSON plan the issue asks for, with local state and nothing around it: the
    ceiling of the ratio."""
    work = Path(tempfile.mkdtemp(prefix=f"direct-{n}-", dir=root))
    (work / "main.tf").write_bytes(MAIN_TF)
    env = direct_environment(work)
    commands = [
        [str(binary), "init", "-input=false", "-no-color"],
        [str(binary), "plan", "-input=false", "-no-color"],
    ]
    if saved_plan:
        commands[1:] = [
            [str(binary), "plan", "-input=false", "-no-color", "-out=tfplan"],
            [str(binary), "show", "-no-color", "-json", "tfplan"],
        ]
    for argv in commands:
        subprocess.run(
            argv, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
    subprocess.run(["rm", "-rf", str(work)], check=True)


def job_commands_run(
    cairn: Cairn, org: str, binary: Path, root: Path, n: int, *, apply: bool = False
) -> None:
    """What a plan job runs, run directly: the same files (backend override pointing at a
    cairn workspace in local execution mode, CLI configuration with a token), environment and
    commands (``init``, ``plan -out``, ``show -json``) in a fresh directory. With ``apply``:
    ``init`` and ``apply`` (the workspace then has the state a no-op run's workspace has)."""
    work = Path(tempfile.mkdtemp(prefix=f"job-{n}-", dir=root))
    config = work / "config"
    config.mkdir()
    (config / "main.tf").write_bytes(MAIN_TF)
    (config / terraform.OVERRIDE_FILE).write_text(
        terraform.backend_override(cairn.server.hostname, org, "direct")
    )
    cli_config = work / "cli.tfrc"
    cli_config.write_text(terraform.cli_config(None, cairn.server.hostname, cairn.token))
    (work / "home" / ".terraform.d").mkdir(parents=True)
    env = terraform.environment(
        os.environ,
        home=work / "home",
        cli_config_file=cli_config,
        run_id="",
        ca_file=cairn.server.ca_bundle,
    )
    commands = [
        terraform.init_command(binary),
        terraform.plan_command(binary, terraform.Operation()),
        terraform.show_command(binary),
    ]
    if apply:
        commands[1:] = [[str(binary), "apply", "-input=false", "-no-color", "-auto-approve"]]
    for argv in commands:
        subprocess.run(
            argv,
            cwd=config,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
    subprocess.run(["rm", "-rf", str(work)], check=True)


def noop_rate(
    cairn: Cairn, org: str, pool_id: str, runs: int, root: Path, logs: list[Path]
) -> None:
    ws = cairn.workspace(org, "noop", pool_id, auto_apply=True)
    # The first run applies the output; from then on the configuration has no changes.
    first = cairn.wait_final(cairn.create_run(ws, cairn.configuration_version(ws)))
    expect_status(first, "applied", logs)
    binary = terraform_binary()
    cairn.workspace(org, "direct", None, auto_apply=False)
    direct_run(binary, root, -1)  # warms the file cache as the first run did for cairn
    job_commands_run(cairn, org, binary, root, -1, apply=True)  # the same state as `ws`

    parts: dict[str, list[float]] = {"api": [], "pickup": [], "job": [], "after": []}

    def through_cairn() -> None:
        began = time.time()
        cv = cairn.configuration_version(ws)
        run = cairn.wait_final(cairn.create_run(ws, cv))
        done = time.time()
        expect_status(run, "planned_and_finished", logs)
        if run["attributes"]["has-changes"]:
            raise RuntimeError(f"run {run['id']} has changes; a no-op run must not")
        created = stamp(run["attributes"]["created-at"])
        planning = stamp(run["attributes"]["status-timestamps"]["planning-at"])
        finished = stamp(cairn.plan(run)["attributes"]["status-timestamps"]["finished-at"])
        parts["api"].append(created - began)
        parts["pickup"].append(planning - created)
        parts["job"].append(finished - planning)
        parts["after"].append(done - finished)

    steps: dict[str, Callable[[int], None]] = {
        "cairn": lambda _n: through_cairn(),
        "direct": lambda n: direct_run(binary, root, n),
        "saved": lambda n: direct_run(binary, root, n, saved_plan=True),
        "job": lambda n: job_commands_run(cairn, org, binary, root, n),
    }
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for n in range(runs):
        for name, step in steps.items():
            began = time.perf_counter()
            step(n)
            seconds[name].append(time.perf_counter() - began)
    rate = {name: 60 * len(xs) / sum(xs) for name, xs in seconds.items()}
    labels = {
        "cairn": "through cairn (no-op run)",
        "direct": "direct: init && plan",
        "saved": "direct: init, plan -out, show -json",
        "job": "direct: a plan job's commands",
    }
    print(
        f"2. no-op runs per minute, one at a time, {runs} of each, alternating; a no-op run: CV "
        "create + upload + run create (auto-apply) + plan without changes → planned_and_finished"
    )
    print_header(f"   {'':34}{'runs/min':>10}{'p50 s':>8}{'max s':>8}")
    for name, xs in seconds.items():
        print(f"   {labels[name]:34}{rate[name]:10.1f}{percentile(xs, 50):8.3f}{max(xs):8.3f}")
    ratio = rate["cairn"] / rate["direct"]
    print(
        f"   cairn / direct init && plan: {ratio:.2f}x   target ≥ {RATIO_TARGET}x: "
        f"{verdict(ratio >= RATIO_TARGET)}"
    )
    print(
        f"   ceiling: direct init, plan -out, show -json / direct init && plan: "
        f"{rate['saved'] / rate['direct']:.2f}x — a run must save its plan and render the JSON "
        "plan (json-output), so no server, with local state and no overhead at all, reaches "
        "more than this"
    )
    print(
        f"   cairn / the job's commands run directly: {rate['cairn'] / rate['job']:.2f}x "
        "(what cairn adds around Terraform)"
    )
    print("   where a no-op run's time goes (p50, seconds; from the run's own timestamps):")
    what = {
        "api": "client: CV create + upload + run create",
        "pickup": "run created → plan started (claim)",
        "job": "plan started → finished (the job)",
        "after": "plan finished → client saw the run final",
    }
    for key, label in what.items():
        print(f"     {label:44}{percentile(parts[key], 50):8.3f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="concurrent runs (queue latency)")
    parser.add_argument("--noop", type=int, default=15, help="no-op runs of each kind")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--cairn-src",
        type=Path,
        help="run the server and the agents from this source tree (a directory holding the "
        "cairn package) instead of the installed one: a 'before' figure",
    )
    args = parser.parse_args()
    with Bench("cairn-bench-runs-", keep=args.keep, cairn_src=args.cairn_src) as bench:
        database = bench.postgres_database() if args.postgres else None
        server = bench.server(
            "server",
            database_url=database,
            env={
                "CAIRN_WORKERS": "0",
                "CAIRN_TERRAFORM_PATH": str(terraform_binary().parent),
                "CAIRN_LOG_LEVEL": "warning",
            },
        )
        server.start()
        cairn = Cairn(server, bench.token)
        try:
            org = "bench-runs"
            cairn.organization(org)
            pool_id, agent_token = cairn.agent_pool(org)
            start_agents(bench, server, cairn, agent_token, pool_id)
            logs = [bench.root / f"agent-{i + 1}.log" for i in range(AGENTS)]
            db = f"PostgreSQL {bench.postgres_version}" if args.postgres else "SQLite"
            print(
                f"cairn remote runs: {db}, HTTPS, Terraform {terraform_binary()}, "
                f"{os.cpu_count()} CPUs\n"
            )
            section("queue latency", lambda: queue_latency(cairn, org, pool_id, args.runs, logs))
            section(
                "no-op runs", lambda: noop_rate(cairn, org, pool_id, args.noop, bench.root, logs)
            )
        finally:
            stop_agents(bench)
            cairn.close()


if __name__ == "__main__":
    main()
