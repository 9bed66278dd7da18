"""CPU per request of cairn's hot authenticated reads, before and after: token
authentication, access loading, ``GET /api/v2/account/details`` and workspace show.

Run as ``.venv/bin/python bench/hotpaths.py [--base /tmp/cairn-base/src] [--backend
sqlite|postgres|both]``. For each backend, one ``cairn serve`` of this tree and (with
``--base``) one of the base source tree (through PYTHONPATH), plain HTTP on loopback, each with
an organization and a workspace made through the API. On this tree a non-admin user (created
through ``/api/cairn/v1/admin/users``, holding a ``read`` grant on the workspace's name
pattern) is measured too: authentication plus access loading. ``GET
/api/v2/ping`` (no credential, 204) is the reference of a route without database work.

Every case is driven by ``wrk`` (Debian's package; one thread, 4 keep-alive connections, 1 s
runs); the cases of all servers are interleaved round by round (the machine is shared), and
the table gives medians over rounds of the server's CPU per request (psutil, all threads) and,
on PostgreSQL, of the database's (the postmaster's processes), and the "after / before" ratio
of the total. Figures are printed, never asserted; servers, the PostgreSQL cluster and the
temporary directory are stopped (by pid) and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

# _harness puts the repository root on sys.path: it comes before tests.support.
from _harness import Bench, CpuMeter, median, print_header, section
from identity import LoadGenerator, Request

ROUNDS = 5
SECONDS = 1
CONNECTIONS = 4
WARMUP_SECONDS = 1
GRANT_PATTERN = "hot-*"


@dataclass
class Case:
    server: str  # "before" / "after"
    caller: str  # admin / user / none
    name: str
    request: Request
    pid: int
    server_us: list[float] = field(default_factory=list)
    database_us: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def make_user(api: object, org: str) -> str:
    """A non-admin user holding a ``read`` grant on ``GRANT_PATTERN``; their token."""
    from tests.support import api as tfe

    username = tfe.unique_name("hot")
    user = tfe.document(
        api.post(  # type: ignore[attr-defined]
            "/api/cairn/v1/admin/users",
            json={"username": username, "email": f"{username}@example.com"},
        ),
        201,
    )["data"]
    token = tfe.document(
        api.post(  # type: ignore[attr-defined]
            f"/api/v2/users/{user['id']}/authentication-tokens",
            json={"data": {"type": "authentication-tokens", "attributes": {}}},
            headers={"Content-Type": tfe.JSONAPI},
        ),
        201,
    )["data"]["attributes"]["token"]
    tfe.document(
        api.post(  # type: ignore[attr-defined]
            f"/api/cairn/v1/organizations/{org}/grants",
            json={"role": "read", "workspaces": GRANT_PATTERN, "user": username},
        ),
        201,
    )
    return str(token)


def prepare(bench: Bench, label: str, server: object, user: bool) -> list[Case]:
    from tests.support import api as tfe

    with server.client(bench.token) as api:  # type: ignore[attr-defined]
        org = tfe.create_organization(api, tfe.unique_name("hot"))
        ws_id = tfe.create_workspace(api, org, "hot-path")
        user_token = make_user(api, org) if user else None
    url = server.url  # type: ignore[attr-defined]
    pid = server.pid  # type: ignore[attr-defined]
    callers = [("admin", bench.token)] + ([("user", user_token)] if user_token else [])
    cases = [Case(label, "none", "GET /api/v2/ping", Request(f"{url}/api/v2/ping"), pid)]
    for caller, token in callers:
        headers = (("Authorization", f"Bearer {token}"), ("Accept", tfe.JSONAPI))
        for name, path in (
            ("GET /api/v2/account/details", "/api/v2/account/details"),
            ("GET /api/v2/workspaces/{id}", f"/api/v2/workspaces/{ws_id}"),
            (
                "GET …/organizations/{o}/workspaces/{n}",
                f"/api/v2/organizations/{org}/workspaces/hot-path",
            ),
        ):
            cases.append(Case(label, caller, name, Request(f"{url}{path}", headers=headers), pid))
    return cases


def run_backend(bench: Bench, backend: str, base: Path | None, load: LoadGenerator) -> None:
    labels = [("after", None)] + ([("before", base)] if base is not None else [])
    cases: list[Case] = []
    for label, src in labels:
        env = {}
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(src), os.environ.get("PYTHONPATH")) if p
            )
        url = bench.postgres_database() if backend == "postgres" else None
        server = bench.server(f"{backend}-{label}", plain_http=True, database_url=url, env=env)
        server.start()
        cases += prepare(bench, label, server, user=src is None)
    for case in cases:
        warm = load.run(case.request, WARMUP_SECONDS, CONNECTIONS, case.pid)
        if warm.requests == 0 or warm.errors:
            raise RuntimeError(f"{case.server} {case.caller} {case.name}: {warm.errors} errors")
    database = bench.postgres_pid if backend == "postgres" else None
    for _ in range(ROUNDS):
        for case in cases:
            with CpuMeter(case.pid, database) as meter:
                run = load.run(case.request, SECONDS, CONNECTIONS, case.pid)
            n = max(run.requests, 1)
            case.server_us.append(meter.use.server / n * 1e6)
            case.database_us.append(meter.use.database / n * 1e6)
            case.rates.append(run.rate)
    print(f"{backend}: CPU per request, medians of {ROUNDS} rounds ({CONNECTIONS} connections)")
    header = (
        f"   {'server':<7} {'caller':<6} {'request':<40} {'req/s':>7} {'srv us':>7} {'db us':>6}"
        f" {'total':>7} {'after/before':>12}"
    )
    print_header(header)
    before = {(c.caller, c.name): c for c in cases if c.server == "before"}
    for case in cases:
        total = median([s + d for s, d in zip(case.server_us, case.database_us, strict=True)])
        ratio = ""
        other = before.get((case.caller, case.name))
        if case.server == "after" and other is not None:
            total_before = median(
                [s + d for s, d in zip(other.server_us, other.database_us, strict=True)]
            )
            ratio = f"{total / total_before:.2f}x"
        print(
            f"   {case.server:<7} {case.caller:<6} {case.name:<40} {median(case.rates):>7.0f}"
            f" {median(case.server_us):>7.0f} {median(case.database_us):>6.0f} {total:>7.0f}"
            f" {ratio:>12}"
        )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cairn hot read paths: CPU per request")
    parser.add_argument("--base", type=Path, help="source tree (src/) of the base commit")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)")
        return 0
    base = args.base.resolve() if args.base is not None else None
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    with Bench("cairn-bench-hotpaths-") as bench:
        load = LoadGenerator("wrk", bench.root)
        print(
            f"cairn hot read paths: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
            f" {load.name}; after = this tree, before = {base or '(not measured)'}\n"
        )
        for backend in backends:

            def run(b: str = backend) -> None:
                run_backend(bench, b, base, load)

            section(backend, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
