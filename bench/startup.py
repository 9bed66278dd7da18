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

Run: ``.venv/bin/python bench/startup.py [--runs 7] [--base /tmp/cairn-base/src]
[--no-bytecode]``
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--base", default="/tmp/cairn-base/src")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile every module from source at every start (no .pyc cache)",
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


if __name__ == "__main__":
    main()
