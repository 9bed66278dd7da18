"""The request-observing middleware's own cost, measured directly: CPU per request of
``cairn.tfeapi.observe.ObserveMiddleware`` around a no-op ASGI app, in-process, no network.

Run as ``.venv/bin/python bench/middleware.py [--base /tmp/cairn-base/src]``. Each variant runs
in a child process of its own (the cairn it imports: this tree, or ``--base`` through
PYTHONPATH), with logging configured as ``cairn serve`` does it (JSON lines, here to
/dev/null). A child alternates timed batches of the bare no-op app and of the same app behind the
middleware and reports medians; the parent runs the variants in interleaved rounds (the machine
is shared) and prints, per variant, the medians over rounds of:

- ``loop µs``: CPU of the event-loop thread per request, middleware minus bare app — what
  the middleware takes from the thread that serves requests (the target, < 20 µs);
- ``total µs``: CPU of the whole process per request (writer thread included, its queue drained
  inside the timed batch), middleware minus bare app.

Variants: the base's middleware (when ``--base`` is given), then this tree's with
``CAIRN_ACCESS_LOG`` on, sample:10 and off. Targets print PASS/MISS; the exit status is 0
whatever the figures are.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 20_000  # per timed batch
BATCHES = 5  # bare/middleware pairs per child
ROUNDS = 5  # children per variant, interleaved with the other variants
TARGET_US = 20.0


def _worker(access_log: str | None) -> dict[str, float]:
    from cairn import logs

    try:
        observe = importlib.import_module("cairn.tfeapi.observe")
    except ImportError:  # the base commit: cairn.observe, logs on stderr
        observe = importlib.import_module("cairn.observe")

    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    try:
        logs.configure("info", fmt="json", stream=devnull)
    except TypeError:  # the base commit's configure(level, json_lines=True): on stderr
        os.dup2(devnull.fileno(), 2)
        logs.configure("info", json_lines=True)
    body = b'{"keys":[]}'
    start_message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")],
    }
    body_message = {"type": "http.response.body", "body": body}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(dict(start_message))
        await send(body_message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    metrics = observe.Metrics()
    if access_log is None:  # the base: its middleware takes no access_log
        wrapped = observe.ObserveMiddleware(app, metrics=metrics)
    else:
        wrapped = observe.ObserveMiddleware(app, metrics=metrics, access_log=access_log)
    writer = getattr(observe, "WRITER", None)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/.well-known/jwks",
        "client": ("127.0.0.1", 50000),
        "headers": [],
    }

    async def batch(target: Any) -> tuple[float, float]:
        wall0, cpu0 = time.thread_time(), time.process_time()
        for _ in range(REQUESTS):
            await target(dict(scope), receive, send)
        loop = time.thread_time() - wall0
        if writer is not None:
            writer.flush(60)
        return loop, time.process_time() - cpu0

    async def main() -> dict[str, float]:
        await batch(wrapped)  # warm-up: metric children, the writer thread
        loop_us: list[float] = []
        total_us: list[float] = []
        for _ in range(BATCHES):
            bare_loop, bare_total = await batch(app)
            mw_loop, mw_total = await batch(wrapped)
            loop_us.append((mw_loop - bare_loop) / REQUESTS * 1e6)
            total_us.append((mw_total - bare_total) / REQUESTS * 1e6)
        return {"loop_us": statistics.median(loop_us), "total_us": statistics.median(total_us)}

    return asyncio.run(main())


def _run_child(access_log: str | None, base: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if base is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(base), env.get("PYTHONPATH")) if p)
    args = [sys.executable, __file__, "--worker", access_log or "-"]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cairn request middleware cost")
    parser.add_argument("--base", type=Path, help="source tree (src/) of the base commit")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(None if args.worker == "-" else args.worker)))
        return 0
    variants: list[tuple[str, str | None, Path | None]] = []
    if args.base is not None:
        variants.append((f"base ({args.base})", None, args.base.resolve()))
    variants += [(f"this tree, CAIRN_ACCESS_LOG={v}", v, None) for v in ("on", "sample:10", "off")]
    print(
        f"cairn middleware cost: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs;"
        f" {args.rounds} rounds x {BATCHES} batches of {REQUESTS} requests (GET, 200, JSON)\n"
    )
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    for _ in range(args.rounds):
        for name, access_log, base in variants:
            results[name].append(_run_child(access_log, base))
    header = f"   {'variant':<44} {'loop µs':>8} {'total µs':>9}  target (loop < {TARGET_US:g} µs)"
    print(header)
    print("   " + "-" * (len(header) - 3))
    for name, _, base in variants:
        loop = statistics.median(r["loop_us"] for r in results[name])
        total = statistics.median(r["total_us"] for r in results[name])
        verdict = "(before)" if base is not None else ("PASS" if loop < TARGET_US else "MISS")
        print(f"   {name:<44} {loop:>8.1f} {total:>9.1f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
