"""What the benchmarks under ``bench/`` share: cairn servers in a temporary directory, the
report's building blocks and a few timing helpers.

The servers are ``cairn serve`` subprocesses of the installed cairn (through
``tests.support.server.CairnServer``: 127.0.0.1, a free port, its own data directory, waits
for ``/readyz``) with a ``CAIRN_ADMIN_TOKEN`` of its own, optionally on a throw-away PostgreSQL
cluster of Debian's binaries (``tests.support.postgres``). ``Bench`` owns all of it: the
temporary directory, the servers and the cluster, stopped (by pid) and removed when the ``with``
block ends, also on SIGTERM/SIGHUP.

Benchmarks run from the repository root as scripts (``.venv/bin/python bench/<name>.py``);
importing this module puts the repository root on ``sys.path`` so that ``tests.support`` can
be imported after it.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from tests.support.postgres import PostgresCluster
    from tests.support.server import CairnServer

T = TypeVar("T")

# cairn requires CAIRN_SECRET_KEY (>= 32 characters) on PostgreSQL; a fresh one per run will do.
SECRET_KEY_BYTES = 24


# ---- servers -------------------------------------------------------------------------------------


def admin_token() -> str:
    """A fresh value for CAIRN_ADMIN_TOKEN: the built-in admin's bearer token."""
    return f"cairn-bench-admin-{secrets.token_urlsafe(24)}"


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP unwind through ``finally`` blocks (servers stopped, temp dir removed)."""

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)


class Bench:
    """A benchmark run: a temporary directory, an admin token, and the cairn servers (and the
    PostgreSQL cluster) it starts; ``with Bench(...) as bench:`` stops and removes them all.

    ``cairn_src`` runs the servers from another source tree (a directory holding the ``cairn``
    package, e.g. ``git archive <commit> src`` unpacked) through PYTHONPATH, which comes before
    the editable install: "before" and "after" figures of the same benchmark script.
    """

    def __init__(self, prefix: str, *, keep: bool = False, cairn_src: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.token = admin_token()
        self.keep = keep
        self.cairn_src = cairn_src.resolve() if cairn_src is not None else None
        self.servers: list[CairnServer] = []
        self._postgres: PostgresCluster | None = None
        self.processes: list[subprocess.Popen[bytes]] = []

    def server(
        self,
        name: str,
        *,
        plain_http: bool = False,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CairnServer:
        """A (not yet started) server with data in ``<root>/<name>/data`` and the admin token;
        ``server.start()`` waits until it is ready."""
        from tests.support.server import CairnServer

        server_env = dict(env or {})
        if self.cairn_src is not None:
            server_env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.cairn_src), os.environ.get("PYTHONPATH", "")) if p
            )
        if database_url is not None and database_url.startswith("postgresql"):
            server_env.setdefault("CAIRN_SECRET_KEY", secrets.token_hex(SECRET_KEY_BYTES))
        server = CairnServer(
            data_dir=self.root / name / "data",
            admin_token=self.token,
            plain_http=plain_http,
            database_url=database_url,
            env=server_env,
        )
        self.servers.append(server)
        return server

    def postgres_database(self) -> str:
        """The URL of a fresh database on this run's throw-away PostgreSQL cluster (started
        on first use from /usr/lib/postgresql/*/bin: fsync off, 127.0.0.1, a free port)."""
        if self._postgres is None:
            from tests.support.postgres import PostgresCluster, find_bindir

            cluster = PostgresCluster(find_bindir())
            self._postgres = cluster
            cluster.start()
        return self._postgres.create_database("cairn_bench")

    @property
    def postgres_pid(self) -> int | None:
        """The postmaster's pid (its children are the database's backends), if started."""
        return self._postgres.pid if self._postgres is not None else None

    @property
    def postgres_version(self) -> str:
        """The cluster's major version (its PG_VERSION file), or '' when none was started."""
        if self._postgres is None:
            return ""
        return (self._postgres.data_dir / "PG_VERSION").read_text().strip()

    def spawn(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a helper process (e.g. ``cairn agent``) with stdout and stderr in
        ``<root>/<name>.log``; it is stopped (SIGTERM by pid, then SIGKILL) before the servers."""
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        for server in self.servers:
            server.stop()
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        if self.keep:
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Bench:
        install_signal_handlers()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---- report --------------------------------------------------------------------------------------


def section(name: str, fn: Callable[[], None]) -> None:
    """Run one measurement; a failure is reported and the benchmark goes on."""
    try:
        fn()
    except Exception as exc:  # a benchmark reports; it does not stop at the first problem
        print(f"   {name}: ERROR {type(exc).__name__}: {str(exc)[:2000]}\n")
        traceback.print_exc(file=sys.stderr)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_header(header: str, extra: int = 0) -> None:
    """A table's column titles (indented by three spaces) and the rule under them, as long as
    the titles (plus ``extra`` characters)."""
    print(header)
    print("   " + "-" * (len(header) - 3 + extra))


# ---- timing --------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100): a value that was measured."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()``'s result and the seconds it took (``time.perf_counter``)."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def tree_cpu(pid: int) -> dict[int, float]:
    """``process_cpu`` of a process and of each of its live descendants, by pid."""
    proc = psutil.Process(pid)
    used = {pid: process_cpu(pid)}
    for child in proc.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        used[child.pid] = float(times.user + times.system)
    return used


def machine_busy() -> float:
    """CPU seconds all processors of the machine spent busy since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass
class CpuUse:
    """CPU seconds used during ``seconds`` of wall time by the server, by its database
    processes (PostgreSQL's postmaster and backends; 0 for SQLite, which runs inside the
    server), by this process (the client) and by every other process of the machine."""

    seconds: float = 0.0
    server: float = 0.0
    database: float = 0.0
    client: float = 0.0
    other: float = 0.0

    def cores(self, cpu_seconds: float) -> float:
        return cpu_seconds / self.seconds if self.seconds > 0 else float("nan")


class CpuMeter:
    """``with CpuMeter(server_pid, database_pid) as meter:`` … ``meter.use`` is a ``CpuUse``.
    Database processes that exit during the block are not counted (a pool keeps them)."""

    def __init__(self, server_pid: int, database_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.database_pid = database_pid
        self.use = CpuUse()
        self._start: tuple[float, float, dict[int, float], float, float] | None = None

    def _database(self) -> dict[int, float]:
        return tree_cpu(self.database_pid) if self.database_pid is not None else {}

    def __enter__(self) -> CpuMeter:
        self._start = (
            process_cpu(self.server_pid),
            time.process_time(),
            self._database(),
            machine_busy(),
            time.perf_counter(),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        server0, client0, database0, busy0, wall0 = self._start
        wall = time.perf_counter() - wall0
        busy = machine_busy() - busy0
        server = process_cpu(self.server_pid) - server0
        client = time.process_time() - client0
        database = sum(cpu - database0.get(pid, 0.0) for pid, cpu in self._database().items())
        other = max(0.0, busy - server - client - database)
        self.use = CpuUse(wall, server, database, client, other)
