"""How long ``cairn serve`` takes to be ready, before and after (issue 8, item 4: < 1 s).

Measured side by side, alternating run by run so both see the same machine load:

- **base**: the code of commit 0cc1ba8, from a worktree (``--base``, default
  ``/tmp/cairn-base/src``, put first on ``PYTHONPATH``);
- **now**: this checkout.

For each: the import time of what ``cairn serve`` imports before it builds its services
(``cairn.cli.main``, ``cairn.cli.serve``, ``cairn.app``, ``uvicorn``), and the wall time from
spawning ``cairn serve --plain-http`` to the first ``200`` from ``/readyz`` — on a fresh data
directory (migrations, secret key, first signing keys) and on a restart of an existing one
(what an operator waits for most) — and the CPU time (user + system) the server process had
used by then, which a busy machine disturbs less than the wall time. The server runs on
SQLite, plain HTTP, polled every 5 ms over a raw socket; each server is stopped (SIGTERM, by
pid) before the next starts.

Bytecode: an installed cairn has its modules compiled (pip writes ``.pyc`` files at install, a
checkout writes ``__pycache__`` at its first run), so by default every process here gets a
bytecode cache of its own under the temporary directory (``PYTHONPYCACHEPREFIX``, primed by
one import first; ``PYTHONDONTWRITEBYTECODE`` removed). ``--no-bytecode`` measures the other
case (every module compiled from source at every start: a checkout with
``PYTHONDONTWRITEBYTECODE=1``, or a read-only tree).

Where the time goes (``--phases``, this checkout only): one process does what ``cairn serve``
does, with a timer around each step — the imports, ``build_services`` (inside it: the
migrations check, the blob store, the signing keys), the development TLS certificate (made on
a first start, loaded on a restart), ``create_app``, and uvicorn from ``serve()`` to
``started`` (socket bound, lifespan started: background jobs, listener) — on a fresh data
directory and on a restart.

The floor (also with ``--phases``): what no cairn can go below on this machine — a process that
imports only the third-party packages ``cairn serve`` needs (uvicorn, Starlette, the SQLAlchemy
ORM, cryptography, prometheus_client), opens the SQLite database, makes a TLS context and has
uvicorn serve a one-route Starlette app until ``started``; measured side by side with the
phases, so the report can tell cairn's own cost from the floor's.

Run: ``.venv/bin/python bench/startup.py [--runs 7] [--base /tmp/cairn-base/src]
[--no-bytecode] [--phases]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = (
    "import time; t = time.perf_counter(); import cairn.cli.main, cairn.cli.serve, cairn.app, "
    "uvicorn; print(time.perf_counter() - t)"
)
# Where each variant's bytecode is cached (None: compile at every start); set by main().
PYCACHE: dict[str | None, Path | None] = {}

# One ``cairn serve`` in steps, each timed (argv: data directory, port); prints JSON.
PHASES = r"""
import time
T0 = time.perf_counter()
import asyncio, json, os, sys
from pathlib import Path
times = {}
t = time.perf_counter()
import uvicorn
import cairn.cli.main, cairn.cli.serve
import cairn.app as app_module
from cairn import datadir
from cairn.config import from_environment
from cairn.tls import ensure_dev_tls
times["imports"] = time.perf_counter() - t

def timed(name, fn):
    def wrapper(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - begin
    return wrapper

app_module.upgrade = timed("  migrations check", app_module.upgrade)
app_module.open_blob_store = timed("  blob store", app_module.open_blob_store)
app_module.build_issuer = timed("  signing keys", app_module.build_issuer)
os.umask(0o077)
data_dir, port = Path(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
settings = from_environment(data_dir=data_dir, plain_http=True, listen=f"127.0.0.1:{port}")
datadir.prepare(settings.data_dir, settings.database_url)
held = datadir.lock(settings.data_dir, settings.database_url)
times["settings, data dir"] = time.perf_counter() - t
t = time.perf_counter()
startup = app_module.build_services(settings)
times["build_services"] = time.perf_counter() - t
t = time.perf_counter()
ensure_dev_tls(settings.tls_dir, ["localhost", "127.0.0.1", "::1"])
times["TLS certificate"] = time.perf_counter() - t
t = time.perf_counter()
app = app_module.create_app(startup.services)
times["create_app"] = time.perf_counter() - t
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))

async def run():
    t = time.perf_counter()
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.001)
    times["uvicorn start"] = time.perf_counter() - t
    times["to started, in process"] = time.perf_counter() - T0
    server.should_exit = True
    await task

asyncio.run(run())
startup.services.audited.close()
startup.services.db.dispose()
held.release()
print(json.dumps(times))
"""

# The floor: only the third-party part of a start (argv: a directory, port); prints JSON.
FLOOR = r"""
import time
T0 = time.perf_counter()
import asyncio, json, ssl, sys
from pathlib import Path
times = {}
t = time.perf_counter()
import cryptography.x509, prometheus_client, sqlalchemy, sqlalchemy.orm, uvicorn
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
times["imports"] = time.perf_counter() - t
t = time.perf_counter()
engine = sqlalchemy.create_engine(f"sqlite:///{Path(sys.argv[1]) / 'floor.db'}")
with engine.connect() as conn:
    conn.exec_driver_sql("SELECT 1")
ssl.create_default_context()
times["database, TLS context"] = time.perf_counter() - t

async def ok(request):
    return Response(status_code=200)

server = uvicorn.Server(
    uvicorn.Config(
        Starlette(routes=[Route("/readyz", ok)]),
        host="127.0.0.1", port=int(sys.argv[2]), log_config=None,
    )
)

async def run():
    t = time.perf_counter()
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.001)
    times["uvicorn start"] = time.perf_counter() - t
    times["to started, in process"] = time.perf_counter() - T0
    server.should_exit = True
    await task

asyncio.run(run())
print(json.dumps(times))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(pythonpath: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    pycache = PYCACHE.get(pythonpath)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    env["CAIRN_ADMIN_TOKEN"] = "cairn-bench-startup-admin-token-0123456789"
    return env


def import_seconds(pythonpath: str | None) -> float:
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        env=environment(pythonpath),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_to_ready(pythonpath: str | None, data_dir: Path) -> tuple[float, float]:
    """Seconds from spawning ``cairn serve`` until /readyz answers 200, and the CPU seconds
    the server had used by then; the server is then stopped."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from cairn.cli.main import main; main()",
        "serve",
        "--plain-http",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    log = open(data_dir.parent / f"{data_dir.name}.log", "ab")  # noqa: SIM115
    begin = time.perf_counter()
    proc = subprocess.Popen(command, env=environment(pythonpath), stdout=log, stderr=log)
    try:
        while not ready(port):
            if proc.poll() is not None:
                raise RuntimeError(f"cairn serve exited with {proc.returncode}; see {log.name}")
            if time.perf_counter() - begin > 60:
                raise RuntimeError(f"cairn serve not ready after 60 s; see {log.name}")
            time.sleep(0.005)
        wall = time.perf_counter() - begin
        cpu = psutil.Process(proc.pid).cpu_times()
        return wall, cpu.user + cpu.system
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def timed_steps(script: str, pythonpath: str | None, where: Path) -> dict[str, float]:
    """The step timings ``script`` (PHASES or FLOOR) prints, and the interpreter's own start
    (``python -c pass``, measured just before), which comes on top of "to started"."""
    begin = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=environment(pythonpath), check=True)
    interpreter = time.perf_counter() - begin
    out = subprocess.run(
        [sys.executable, "-c", script, str(where), str(free_port())],
        env=environment(pythonpath),
        capture_output=True,
        text=True,
        check=True,
    )
    steps: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    steps["interpreter start"] = interpreter
    return steps


def phases(runs: int, pythonpath: str, tmp: Path) -> None:
    """Print the medians of each step of a first start, a restart and the floor."""
    columns: dict[str, list[dict[str, float]]] = {"first start": [], "restart": [], "floor": []}
    for run in range(runs):
        data_dir = tmp / f"phases-{run}" / "data"
        data_dir.parent.mkdir()
        columns["first start"].append(timed_steps(PHASES, pythonpath, data_dir))
        columns["restart"].append(timed_steps(PHASES, pythonpath, data_dir))
        columns["floor"].append(timed_steps(FLOOR, pythonpath, data_dir.parent))
    names = list(dict.fromkeys(k for runs_ in columns.values() for r in runs_ for k in r))
    for last in ("interpreter start", "to started, in process"):
        names.remove(last)
        names.append(last)
    print(f"\nwhere the time goes (this checkout), medians of {runs} runs, seconds")
    print(f"{'':24}" + "".join(f"{c:>13}" for c in columns))
    for name in names:
        cells = []
        for runs_ in columns.values():
            xs = [r[name] for r in runs_ if name in r]
            cells.append(f"{statistics.median(xs):13.3f}" if xs else f"{'-':>13}")
        print(f"{name:24}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--base", default="/tmp/cairn-base/src")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile every module from source at every start (no .pyc cache)",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="also time each step of a start of this checkout, and the floor (module docstring)",
    )
    args = parser.parse_args()
    variants: dict[str, str | None] = {"base 0cc1ba8": args.base, "now": str(ROOT / "src")}
    if not Path(args.base, "cairn").is_dir():
        sys.exit(f"no cairn sources under {args.base}; pass --base")
    figures: dict[str, dict[str, list[float]]] = {
        name: {k: [] for k in ("imports", "first start", "restart", "restart cpu")}
        for name in variants
    }
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-startup-"))
    for i, pythonpath in enumerate(variants.values()):
        PYCACHE[pythonpath] = None if args.no_bytecode else tmp / f"pycache-{i}"
        import_seconds(pythonpath)  # primes the bytecode cache (or warms the file cache)
    try:
        for run in range(args.runs):
            for name, pythonpath in variants.items():
                data_dir = tmp / f"{name.split()[0]}-{run}" / "data"
                data_dir.parent.mkdir()
                figures[name]["imports"].append(import_seconds(pythonpath))
                figures[name]["first start"].append(start_to_ready(pythonpath, data_dir)[0])
                wall, cpu = start_to_ready(pythonpath, data_dir)
                figures[name]["restart"].append(wall)
                figures[name]["restart cpu"].append(cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    code = "compiled at every start" if args.no_bytecode else "bytecode cached, as installed"
    print(f"cairn serve start-up, SQLite, plain HTTP, {code}; {args.runs} runs each, alternating")
    print(f"{'':24}{'median':>9}{'min':>9}{'max':>9}   (seconds)")
    for what in ("imports", "first start", "restart", "restart cpu"):
        for name in variants:
            xs = figures[name][what]
            print(f"{what + ' ' + name:24}{statistics.median(xs):9.3f}{min(xs):9.3f}{max(xs):9.3f}")
        base, now = (statistics.median(figures[n][what]) for n in variants)
        print(f"{'  now / base':24}{now / base:9.2f}")
    if args.phases:
        tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-startup-"))
        try:
            now_path = str(ROOT / "src")
            PYCACHE[now_path] = None if args.no_bytecode else tmp / "pycache"
            import_seconds(now_path)
            phases(args.runs, now_path, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
