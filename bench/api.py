"""TFE API latency at scale: workspace lists, searches and shows at 100 and at 10,000
workspaces in one organization, and state-version lists with 1,000 versions on one workspace.

Run as ``.venv/bin/python bench/api.py`` (``--quick`` for a smoke run: 1,000 workspaces, 100
state versions, fewer samples). For each backend (``--backend sqlite|postgres|both``; SQLite
is cairn's default database file, PostgreSQL a throw-away cluster of Debian's binaries), one
``cairn serve`` process (HTTPS with its development CA, like ``cairn serve`` by default) gets:

* one organization; workspaces ``ws-<k>-<n>`` (n = 0, 1, 2, …; k = n mod 4), created over HTTP
  by 8 threads: first 100, measured, then up to ``--workspaces`` (10,000), measured again;
* two callers, each with one keep-alive httpx client: ``admin``, the site admin (the
  CAIRN_ADMIN_TOKEN), and ``user``, a non-admin user created through cairn's own API
  (``POST /api/cairn/v1/admin/users``, a token from ``POST /api/v2/users/{id}/authentication-
  tokens``) whose only access is one pattern grant, ``read`` on ``ws-0*``
  (``POST /api/cairn/v1/organizations/{org}/grants``): a quarter of the workspaces, at every
  size, so that page 1 is full for both callers at 100 workspaces too (in the default name
  order they come first: ``ws-0-…`` sorts before ``ws-1-…``);
* the measured requests: ``GET /api/v2/organizations/{org}/workspaces`` page 1
  (``page[size]=20``), the same with ``search[name]=<a number>`` (one match) and with
  ``search[wildcard-name]=*-000*`` (the first 100 workspaces: 100 matches for the admin, 25 for
  the user, at both sizes) and ``GET /api/v2/organizations/{org}/workspaces/{name}`` (show);
* then, on workspace ``ws-0-00000`` (readable by both callers), state versions uploaded the way
  Terraform does (lock held, ``POST /api/v2/workspaces/{id}/state-versions`` with the state
  inline): first 10, measured, then up to 1,000, measured again: page 1 of
  ``GET /api/v2/workspaces/{id}/state-versions``, of ``GET /api/v2/state-versions?filter[...]``
  (go-tfe's ``StateVersions.List``) and ``GET /api/v2/workspaces/{id}/current-state-version``.

Every request is sent ``--samples`` times (50) after a few untimed ones (and a fresh server
gets a few seconds of untimed requests first), sequentially, the requests of a size
interleaved round by round; the tables give the median and the p95 (nearest rank) in
milliseconds, measured by the client (request sent → body read), and the ``total-count`` of
list answers. Row ``cores`` says who used the CPU during the timed requests: the cairn
process, the database (PostgreSQL's processes), this client and every other process of the
machine (a busy machine is flagged). The key figure is "list page 1 at 10,000 workspaces / page 1
at 100" (medians) for both callers, against the target <= 1.5x (PASS/MISS). Figures are
printed, never asserted: the exit status is 0 whatever they are. Only loopback traffic; the
temporary directory, the servers and the PostgreSQL cluster started here are stopped (by pid)
and removed at the end. ``--cairn-src DIR`` runs the servers from another source tree (e.g.
``git archive <commit> src | tar -x -C /tmp/before``, then ``--cairn-src /tmp/before/src``),
for "before" and "after" figures from the same script.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# _harness puts the repository root on sys.path: it comes before tests.support.
from _harness import (
    Bench,
    CpuMeter,
    CpuUse,
    median,
    percentile,
    print_header,
    section,
    timed,
    verdict,
)

# isort: split
from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.statefile import new_lineage, null_resource, state_file, upload_inline

SMALL_WORKSPACES = 100
WORKSPACES = 10_000
SMALL_VERSIONS = 10
VERSIONS = 1_000
SAMPLES = 50
WARMUP = 5  # untimed rounds before the timed ones, at every size
SERVER_WARMUP_SECONDS = 3.0  # untimed requests to a fresh server before the first size
PAGE_SIZE = 20
SEED_THREADS = 8
GROUPS = 4  # ws-<k>-<n>, k = n mod GROUPS; the user's grant covers k = 0
GRANT_PATTERN = "ws-0*"
GRANT_ROLE = "read"
SHOWN = 48  # the workspace shown and searched by name (k = 0: readable by both callers)
TARGET_RATIO = 1.5  # list page 1 at 10,000 workspaces <= 1.5x page 1 at 100
BUSY_MACHINE = 0.25  # cores used by other processes above which the figures are flagged

QUICK_WORKSPACES = 1_000
QUICK_VERSIONS = 100
QUICK_SAMPLES = 15
QUICK_WARMUP = 2

CALLERS = {
    "admin": "site admin (CAIRN_ADMIN_TOKEN)",
    "user": f"non-admin, one grant: {GRANT_ROLE} on {GRANT_PATTERN}",
}


@dataclass(frozen=True)
class Settings:
    workspaces: int
    versions: int
    samples: int
    warmup: int
    plain_http: bool

    @property
    def width(self) -> int:
        """Digits of the workspace numbers (5 up to 99,999 workspaces)."""
        return max(5, len(str(self.workspaces - 1)))


def ws_name(n: int, width: int) -> str:
    return f"ws-{n % GROUPS}-{n:0{width}d}"


def visible(count: int) -> int:
    """How many of the first `count` workspaces the user's grant covers (k = 0)."""
    return (count + GROUPS - 1) // GROUPS


# ---- measuring -----------------------------------------------------------------------------------


@dataclass
class Case:
    """One request, sent again and again by one caller."""

    caller: str
    label: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    total: int | None = None  # meta.pagination.total-count of a list

    @property
    def median_ms(self) -> float:
        return median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        return percentile(self.seconds, 95) * 1000


def send(client: httpx.Client, case: Case) -> float:
    """One GET; the seconds from sending it to having read the whole body. Checks for 200."""
    response, seconds = timed(lambda: client.get(case.path, params=case.params))
    doc = tfe.document(response, 200)
    if isinstance(doc.get("data"), list):
        case.total = doc.get("meta", {}).get("pagination", {}).get("total-count")
    return seconds


def warm_up(clients: dict[str, httpx.Client], cases: list[Case], seconds: float) -> None:
    """Send the cases round after round, untimed, for `seconds`: a fresh server's first
    requests are slower (imports, caches, the database's pages), whatever size comes first."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for case in cases:
            send(clients[case.caller], case)


def measure(
    clients: dict[str, httpx.Client], cases: list[Case], settings: Settings, meter: CpuMeter
) -> CpuUse:
    """`warmup` untimed rounds, then `samples` timed ones; each round sends every case once.
    The CPU used meanwhile (server, database, this client, the rest of the machine)."""
    for _ in range(settings.warmup):
        for case in cases:
            send(clients[case.caller], case)
    with meter:
        for _ in range(settings.samples):
            for case in cases:
                case.seconds.append(send(clients[case.caller], case))
    return meter.use


def workspace_cases(org: str, width: int) -> list[Case]:
    page = {"page[number]": "1", "page[size]": str(PAGE_SIZE)}
    number = f"{SHOWN:0{width}d}"
    wildcard = "*-" + "0" * (width - 2) + "*"  # the numbers below 100
    cases = []
    for caller in CALLERS:
        base = f"/api/v2/organizations/{org}/workspaces"
        cases += [
            Case(caller, f"list page 1 (page[size]={PAGE_SIZE})", base, dict(page)),
            Case(caller, f"search[name]={number}", base, {**page, "search[name]": number}),
            Case(
                caller,
                f"search[wildcard-name]={wildcard}",
                base,
                {**page, "search[wildcard-name]": wildcard},
            ),
            Case(caller, f"show {ws_name(SHOWN, width)}", f"{base}/{ws_name(SHOWN, width)}"),
        ]
    return cases


def state_cases(org: str, ws: Workspace) -> list[Case]:
    page = {"page[number]": "1", "page[size]": str(PAGE_SIZE)}
    cases = []
    for caller in CALLERS:
        cases += [
            Case(
                caller,
                "state-versions page 1 (workspace id)",
                f"/api/v2/workspaces/{ws.id}/state-versions",
                dict(page),
            ),
            Case(
                caller,
                "state-versions page 1 (filter[...])",
                "/api/v2/state-versions",
                {
                    **page,
                    "filter[organization][name]": org,
                    "filter[workspace][name]": ws.name,
                },
            ),
            Case(
                caller,
                "current-state-version",
                f"/api/v2/workspaces/{ws.id}/current-state-version",
            ),
        ]
    return cases


def client(server: CairnServer, token: str, **kwargs: object) -> httpx.Client:
    """A keep-alive client of `server` with `token`, JSON:API headers and a long timeout."""
    api = server.client(token, **kwargs)
    api.timeout = httpx.Timeout(120.0)
    return api


# ---- seeding -------------------------------------------------------------------------------------


@dataclass
class Workspace:
    id: str
    name: str
    serial: int = 0
    lineage: str = field(default_factory=new_lineage)


def create_user(admin: httpx.Client, org: str) -> str:
    """A non-admin user, an API token of theirs and their one pattern grant; the token."""
    username = tfe.unique_name("reader")
    user = tfe.document(
        admin.post(
            "/api/cairn/v1/admin/users",
            json={"username": username, "email": f"{username}@example.com"},
        ),
        201,
    )["data"]
    created = tfe.document(
        admin.post(
            f"/api/v2/users/{user['id']}/authentication-tokens",
            json={"data": {"type": "authentication-tokens", "attributes": {}}},
            headers={"Content-Type": tfe.JSONAPI},
        ),
        201,
    )
    tfe.document(
        admin.post(
            f"/api/cairn/v1/organizations/{org}/grants",
            json={"role": GRANT_ROLE, "workspaces": GRANT_PATTERN, "user": username},
        ),
        201,
    )
    token: str = created["data"]["attributes"]["token"]
    return token


def create_workspaces(
    server: CairnServer, token: str, org: str, numbers: range, width: int
) -> dict[int, str]:
    """Create workspaces concurrently (SEED_THREADS threads, one shared keep-alive client)."""
    limits = httpx.Limits(max_connections=SEED_THREADS, max_keepalive_connections=SEED_THREADS)
    with client(server, token, limits=limits) as api:

        def create(n: int) -> tuple[int, str]:
            return n, tfe.create_workspace(api, org, ws_name(n, width))

        with ThreadPoolExecutor(SEED_THREADS, thread_name_prefix="seed") as pool:
            return dict(pool.map(create, numbers))


def upload_versions(api: httpx.Client, ws: Workspace, up_to: int) -> None:
    """State versions up to serial `up_to`, as Terraform writes them (lock held meanwhile)."""
    tfe.workspace_action(api, ws.id, "lock")
    try:
        while ws.serial < up_to:
            ws.serial += 1
            raw = state_file(
                ws.serial,
                ws.lineage,
                outputs={
                    "serial": {"value": ws.serial, "type": "number"},
                    "region": {"value": "eu-west-1", "type": "string"},
                },
                resources=[null_resource("item", 3)],
            )
            upload_inline(api, ws.id, raw)
    finally:
        tfe.workspace_action(api, ws.id, "unlock")


# ---- one backend ---------------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    description: str
    seeding: list[str] = field(default_factory=list)
    ws_small: list[Case] = field(default_factory=list)
    ws_large: list[Case] = field(default_factory=list)
    sv_small: list[Case] = field(default_factory=list)
    sv_large: list[Case] = field(default_factory=list)
    cpu: dict[str, CpuUse] = field(default_factory=dict)  # ws_small, ws_large, sv_small, …
    notes: list[str] = field(default_factory=list)


def run_backend(bench: Bench, backend: str, settings: Settings) -> BackendResult:
    database_url = bench.postgres_database() if backend == "postgres" else None
    server = bench.server(backend, plain_http=settings.plain_http, database_url=database_url)
    server.start()
    if backend == "postgres":
        description = f"PostgreSQL {bench.postgres_version} (throw-away cluster, fsync off)"
    else:
        description = "SQLite (cairn's default database file in the data directory)"
    result = BackendResult(backend, description)
    assert server.pid is not None
    meter = CpuMeter(server.pid, bench.postgres_pid if backend == "postgres" else None)
    admin = client(server, bench.token)
    clients = {"admin": admin}
    try:
        org = tfe.create_organization(admin, tfe.unique_name("bench"))
        clients["user"] = client(server, create_user(admin, org))

        def seed(upto: int, done: int) -> dict[int, str]:
            made, seconds = timed(
                lambda: create_workspaces(
                    server, bench.token, org, range(done, upto), settings.width
                )
            )
            result.seeding.append(
                f"{upto - done:,} workspaces created in {seconds:.1f} s"
                f" ({(upto - done) / seconds:,.0f}/s, {SEED_THREADS} threads)"
            )
            return made

        small = SMALL_WORKSPACES
        ids = seed(small, 0)
        result.ws_small = workspace_cases(org, settings.width)
        warm_up(clients, result.ws_small, SERVER_WARMUP_SECONDS)
        result.cpu["ws_small"] = measure(clients, result.ws_small, settings, meter)
        ids.update(seed(settings.workspaces, small))
        result.ws_large = workspace_cases(org, settings.width)
        result.cpu["ws_large"] = measure(clients, result.ws_large, settings, meter)
        for cases, count in ((result.ws_small, small), (result.ws_large, settings.workspaces)):
            check_totals(result, cases, count)

        ws = Workspace(ids[0], ws_name(0, settings.width))
        for key, up_to, target in (
            ("sv_small", min(SMALL_VERSIONS, settings.versions), result.sv_small),
            ("sv_large", settings.versions, result.sv_large),
        ):
            before, started = ws.serial, time.perf_counter()
            upload_versions(admin, ws, up_to)
            seconds = time.perf_counter() - started
            result.seeding.append(
                f"{up_to - before:,} state versions uploaded in {seconds:.1f} s"
                f" ({(up_to - before) / seconds:,.0f}/s, one client, lock held)"
            )
            target.extend(state_cases(org, ws))
            result.cpu[key] = measure(clients, target, settings, meter)
    finally:
        for api in clients.values():
            api.close()
        server.stop()
    return result


def check_totals(result: BackendResult, cases: list[Case], count: int) -> None:
    """Note any list whose total-count is not what the data set says it must be."""
    for case in cases:
        if not case.label.startswith("list"):
            continue
        expected = count if case.caller == "admin" else visible(count)
        if case.total != expected:
            result.notes.append(
                f"{case.caller} {case.label} at {count:,} workspaces: total-count"
                f" {case.total}, expected {expected:,}"
            )


# ---- report --------------------------------------------------------------------------------------


def fmt_count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def ratio(large: Case, small: Case) -> float:
    return large.median_ms / small.median_ms if small.median_ms > 0 else float("nan")


def print_pairs(
    title: str,
    small_label: str,
    large_label: str,
    pairs: list[tuple[Case, Case]],
    cpu: tuple[CpuUse | None, CpuUse | None],
) -> None:
    """One row per (caller, request): median / p95 / total at both sizes, and their ratio."""
    print(title)
    header = (
        f"   {'caller':<6} {'request':<40} {small_label:>25}   {large_label:>25}   {'ratio':>6}"
    )
    sub = (
        f"   {'':<6} {'':<40} {'median':>8} {'p95':>8} {'total':>7}   {'median':>8}"
        f" {'p95':>8} {'total':>7}   {'(med)':>6}"
    )
    print(header)
    print_header(sub)
    for small, large in pairs:
        print(
            f"   {small.caller:<6} {small.label:<40}"
            f" {small.median_ms:>8.2f} {small.p95_ms:>8.2f} {fmt_count(small.total):>7}"
            f"   {large.median_ms:>8.2f} {large.p95_ms:>8.2f} {fmt_count(large.total):>7}"
            f"   {ratio(large, small):>5.2f}x"
        )
    print(
        f"   {'cores':<6} {'cairn / database / client / other':<40} {fmt_cpu(cpu[0]):>25}"
        f"   {fmt_cpu(cpu[1]):>25}"
    )


def fmt_cpu(use: CpuUse | None) -> str:
    if use is None:
        return "-"
    parts = (use.server, use.database, use.client, use.other)
    return " / ".join(f"{use.cores(x):.2f}" for x in parts)


def key_ratios(result: BackendResult) -> list[tuple[str, float]]:
    out = []
    for small, large in zip(result.ws_small, result.ws_large, strict=True):
        if small.label.startswith("list"):
            out.append((small.caller, ratio(large, small)))
    return out


def print_backend(result: BackendResult, settings: Settings) -> None:
    print(f"{result.backend}: {result.description}")
    for line in result.seeding:
        print(f"   seeding: {line}")
    print()
    if result.ws_small and result.ws_large:
        small = SMALL_WORKSPACES
        print_pairs(
            f"   workspaces: ms per request at {small:,} and at {settings.workspaces:,} workspaces"
            f" ({settings.samples} samples each)",
            f"{small:,} workspaces",
            f"{settings.workspaces:,} workspaces",
            list(zip(result.ws_small, result.ws_large, strict=True)),
            (result.cpu.get("ws_small"), result.cpu.get("ws_large")),
        )
        print()
    if result.sv_small and result.sv_large:
        small = min(SMALL_VERSIONS, settings.versions)
        print_pairs(
            f"   state versions of {ws_name(0, settings.width)}: ms per request at {small:,} and"
            f" at {settings.versions:,} versions ({settings.workspaces:,} workspaces; ratio for"
            " information)",
            f"{small:,} versions",
            f"{settings.versions:,} versions",
            list(zip(result.sv_small, result.sv_large, strict=True)),
            (result.cpu.get("sv_small"), result.cpu.get("sv_large")),
        )
        print()
    if result.ws_small and result.ws_large:
        print(
            f"   key ratio: list page 1 at {settings.workspaces:,} / page 1 at"
            f" {SMALL_WORKSPACES:,} workspaces (medians),"
            f" target <= {TARGET_RATIO}x"
        )
        for caller, value in key_ratios(result):
            ok = value <= TARGET_RATIO
            print(f"   {caller:<6} {CALLERS[caller]:<44} {value:>7.2f}x  {verdict(ok)}")
        print()
    for note in result.notes:
        print(f"   NOTE: {note}")
    busy = max((use.cores(use.other) for use in result.cpu.values()), default=0.0)
    if busy > BUSY_MACHINE:
        print(
            f"   WARNING: other processes used up to {busy:.2f} of {os.cpu_count()} cores during"
            " the timed requests (row 'cores'):\n   the server did not have the machine to"
            " itself and the figures swing from run to run;\n   rerun on an idle machine before"
            " trusting a verdict."
        )
    if result.notes or busy > BUSY_MACHINE:
        print()


def print_summary(results: list[BackendResult], settings: Settings) -> None:
    rows = [(r.backend, caller, value) for r in results for caller, value in key_ratios(r)]
    if not rows:
        return
    print(
        f"Targets: list page 1 at {settings.workspaces:,} workspaces <= {TARGET_RATIO}x page 1"
        f" at {SMALL_WORKSPACES:,} (medians)"
    )
    for backend, caller, value in rows:
        print(
            f"   {backend:<9} {caller:<6} {CALLERS[caller]:<44} {value:>7.2f}x"
            f"  {verdict(value <= TARGET_RATIO)}"
        )
    print()


# ---- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cairn TFE API latency benchmark")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgres", "both"), default="both", help="(both)"
    )
    parser.add_argument(
        "--workspaces", type=int, help=f"workspaces in the organization ({WORKSPACES:,})"
    )
    parser.add_argument(
        "--versions", type=int, help=f"state versions on one workspace ({VERSIONS:,})"
    )
    parser.add_argument("--samples", type=int, help=f"timed requests per case ({SAMPLES})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_WORKSPACES:,} workspaces, {QUICK_VERSIONS} state versions,"
        f" {QUICK_SAMPLES} samples",
    )
    parser.add_argument("--plain-http", action="store_true", help="serve plain HTTP, not HTTPS")
    parser.add_argument(
        "--cairn-src",
        type=Path,
        help="run the servers from this source tree (a directory holding the cairn package,"
        " e.g. `git archive <commit> src` unpacked) instead of the installed cairn",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    settings = Settings(
        workspaces=args.workspaces or (QUICK_WORKSPACES if args.quick else WORKSPACES),
        versions=args.versions or (QUICK_VERSIONS if args.quick else VERSIONS),
        samples=args.samples or (QUICK_SAMPLES if args.quick else SAMPLES),
        warmup=QUICK_WARMUP if args.quick else WARMUP,
        plain_http=args.plain_http,
    )
    if settings.workspaces < SMALL_WORKSPACES:
        parser.error(f"--workspaces must be at least {SMALL_WORKSPACES}")
    if settings.versions < 1 or settings.samples < 1:
        parser.error("--versions and --samples must be positive")
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)

    started = time.perf_counter()
    with Bench("cairn-bench-api-", keep=args.keep, cairn_src=args.cairn_src) as bench:
        source = f"cairn from {bench.cairn_src}" if bench.cairn_src else "the installed cairn"
        print(
            f"cairn TFE API benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
            f" httpx {httpx.__version__}; {source};\n"
            f"one `cairn serve` process per backend over"
            f" {'plain HTTP' if settings.plain_http else 'HTTPS'}; per request {settings.samples}"
            f" timed GETs after {settings.warmup} untimed, interleaved,\n"
            "one keep-alive client per caller; ms = client-side, request sent to body read;"
            f" total = total-count.\ntemporary data under {bench.root}\n"
        )
        results: list[BackendResult] = []
        for backend in backends:

            def run(backend: str = backend) -> None:
                result = run_backend(bench, backend, settings)
                results.append(result)
                print_backend(result, settings)

            section(backend, run)
            sys.stdout.flush()
        print_summary(results, settings)
        print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
