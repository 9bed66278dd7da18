"""Workload-identity issuer benchmark: minting against raw signing, JWKS against a bare route.

Run as ``.venv/bin/python bench/identity.py``. One run prints, side by side:

1. Tokens minted per second over HTTP (``POST /api/cairn/v1/workspaces/{id}/id-tokens``, RS256
   with RSA-2048, the default) by one ``cairn serve`` process (= one uvicorn worker, SQLite
   default database), over the development-CA HTTPS that ``cairn serve`` uses by default and over
   plain HTTP, against the raw RS256 signing rate of ``cryptography`` (RSA-2048, PKCS#1 v1.5,
   SHA-256, one thread) measured in the same run on the same machine; the ratio is the
   "per worker" figure (target >= 0.7x). ES256 raw signing and cairn's whole ``sign_jwt``
   (JSON + base64url + RSA) are printed for information.
2. JWKS and discovery requests per second (``GET /.well-known/jwks``,
   ``GET /.well-known/openid-configuration``) through the whole cairn app against a bare
   Starlette route *without* cairn's middleware (target >= 0.8x): a Starlette app in a uvicorn
   process of its own, served as ``cairn serve`` serves cairn (its header-timeout protocol, the
   same certificate), one route per path answering the bytes cairn answers. Measured on the
   HTTPS and HTTP servers (``CAIRN_ACCESS_LOG=on``, the default: these public doors are
   answered before the router and get one access-log line in 100) and, for information, on a
   third HTTPS server with ``CAIRN_ACCESS_LOG=all`` (a line for every request: the writer
   thread's cost). cairn's own fixed routes (``/.well-known/terraform.json``, a raw-ASGI
   ``StaticJson`` door; ``/api/v2/ping``, 204, through the router) are printed for reference.
3. The middleware's own CPU per request, measured directly in-process around a no-op app
   (``bench/middleware.py``; target < 20 us on the event loop).

The load generator is ``wrk`` (Debian's package; ``apt-get install wrk``) in its own process,
one thread, keep-alive connections, bounded in time, loopback only; without it a small asyncio
HTTP/1.1 client runs in a child process instead (slower: it may be the limit on the read
endpoints, which the CPU columns show). Timed runs come in rounds; each round runs every case
once (raw signing, then the HTTP cases), and each ratio is the median over rounds of the
ratio within a round, so it follows the machine's speed of the moment. The server's CPU per
request (psutil, process-wide, threads included) and the client's CPU are printed beside each
rate, which says who was the limit.

A minted token is checked with PyJWT through discovery + JWKS before the timed runs, and the
audit events written by the mints are counted afterwards. Targets are reported as PASS/MISS;
the exit status is 0 whatever the figures are (a benchmark reports, it does not assert). The
temporary directory and the servers started here are removed/stopped (by pid) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import sqlite3
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

# _harness puts the repository root on sys.path (for tests.support and its lazy imports here).
from _harness import (
    Bench,
    machine_busy,
    median,
    print_header,
    process_cpu,
    section,
    verdict,
)

# ---- parameters ----------------------------------------------------------------------------------

MINT_ROUNDS = 4  # timed rounds; every ratio is the median of the rounds' ratios
READ_ROUNDS = 5
MINT_SECONDS = 2  # per timed mint run (wrk takes whole seconds)
READ_SECONDS = 1  # per timed run of a read endpoint
SIGN_SECONDS = 1.0  # per raw signing measurement
WARMUP_SECONDS = 1
MINT_CONNECTIONS = 4  # "a few" keep-alive connections; the machine has 2 cores
MINT_SERIAL = 1  # and one connection (no concurrent writers), for information
READ_CONNECTIONS = 8
MINT_TTL = 900
AUDIENCE = "cairn-bench"

TARGET_MINT = 0.7  # mints/s over HTTP >= 0.7x raw RS256 signs/s (one worker, one thread)
TARGET_JWKS = 0.8  # JWKS req/s >= 0.8x the bare Starlette route
EVERY_LINE = "all"  # CAIRN_ACCESS_LOG of the third server (HTTPS), for information
BUSY_MACHINE = 0.25  # cores used by other processes above which the figures are flagged

MINT_PATH = "/api/cairn/v1/workspaces/{ws_id}/id-tokens"
JWKS_PATH = "/.well-known/jwks"
BARE_PATH = "/.well-known/terraform.json"
PING_PATH = "/api/v2/ping"
DISCOVERY_PATH = "/.well-known/openid-configuration"

# The bare reference: a Starlette app with one route per path answering the same bytes as
# cairn, served by uvicorn as ``cairn serve`` serves cairn, without any middleware.
BARE_ROUTES = (JWKS_PATH, DISCOVERY_PATH)

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'CAIRN-BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


# ---- load generation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One HTTP request, repeated by the load generator on every connection."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass
class Load:
    """What one timed run of the load generator measured."""

    requests: int  # completed with a 2xx/3xx status
    seconds: float
    errors: int  # non-2xx/3xx statuses, connection/read/write errors, timeouts
    p50_ms: float
    p99_ms: float
    server_cpu: float  # CPU seconds of the server process (all threads) during the run
    client_cpu: float  # CPU seconds of the load generator process
    other_cpu: float  # CPU seconds used by every other process of the machine meanwhile

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_us(self) -> float:
        """Server CPU microseconds per completed request."""
        return self.server_cpu / self.requests * 1e6 if self.requests else float("nan")

    @property
    def server_cores(self) -> float:
        return self.server_cpu / self.seconds if self.seconds > 0 else 0.0

    @property
    def client_cores(self) -> float:
        return self.client_cpu / self.seconds if self.seconds > 0 else 0.0

    @property
    def other_cores(self) -> float:
        return self.other_cpu / self.seconds if self.seconds > 0 else 0.0


def _lua_string(value: str | bytes) -> str:
    """A Lua long-bracket string literal that cannot be closed by the value."""
    text = value.decode() if isinstance(value, bytes) else value
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LoadGenerator:
    """wrk when present, otherwise the asyncio client of this file in a child process."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.workdir = workdir
        wrk = shutil.which("wrk")
        if kind == "wrk" and wrk is None:
            raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
        self.wrk = wrk if kind in ("auto", "wrk") else None
        self._scripts: dict[Request, Path] = {}

    @property
    def name(self) -> str:
        if self.wrk is not None:
            found = subprocess.run([self.wrk, "-v"], capture_output=True, text=True, check=False)
            match = re.search(r"wrk (\S+)", found.stdout + found.stderr)
            return f"wrk {match.group(1) if match else '?'}"
        return "asyncio HTTP/1.1 client (child process; wrk not found)"

    def run(self, request: Request, seconds: int, connections: int, server_pid: int) -> Load:
        before_server = process_cpu(server_pid)
        before_client = _children_cpu()
        before_self = time.process_time()
        before_machine = machine_busy()
        if self.wrk is not None:
            stats = self._run_wrk(request, seconds, connections)
        else:
            stats = self._run_python(request, seconds, connections)
        machine = machine_busy() - before_machine
        server_cpu = process_cpu(server_pid) - before_server
        client_cpu = _children_cpu() - before_client
        own = time.process_time() - before_self
        errors = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
        return Load(
            requests=int(stats["requests"]) - int(stats["status"]),
            seconds=stats["duration_us"] / 1e6,
            errors=int(errors),
            p50_ms=stats["p50_us"] / 1000,
            p99_ms=stats["p99_us"] / 1000,
            server_cpu=server_cpu,
            client_cpu=client_cpu,
            other_cpu=max(0.0, machine - server_cpu - client_cpu - own),
        )

    def _script(self, request: Request) -> Path:
        path = self._scripts.get(request)
        if path is None:
            lines = [f"wrk.method = {_lua_string(request.method)}"]
            if request.body:
                lines.append(f"wrk.body = {_lua_string(request.body)}")
            for name, value in request.headers:
                lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
            path = self.workdir / f"wrk-{len(self._scripts)}.lua"
            path.write_text("\n".join(lines) + "\n" + LUA_DONE)
            self._scripts[request] = path
        return path

    def _run_wrk(self, request: Request, seconds: int, connections: int) -> dict[str, float]:
        assert self.wrk is not None
        args = [
            self.wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(self._script(request)),
            request.url,
        ]
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
        for line in done.stdout.splitlines():
            if line.startswith("CAIRN-BENCH "):
                stats: dict[str, float] = json.loads(line.removeprefix("CAIRN-BENCH "))
                return stats
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {done.stdout[-1000:]}{done.stderr[-1000:]}"
        )

    def _run_python(self, request: Request, seconds: int, connections: int) -> dict[str, float]:
        spec = {
            "url": request.url,
            "method": request.method,
            "headers": list(request.headers),
            "body": request.body.decode(),
            "seconds": seconds,
            "connections": connections,
        }
        done = subprocess.run(
            [sys.executable, __file__, "--load-worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
        for line in done.stdout.splitlines():
            if line.startswith("CAIRN-BENCH "):
                stats: dict[str, float] = json.loads(line.removeprefix("CAIRN-BENCH "))
                return stats
        raise RuntimeError(f"load client failed ({done.returncode}): {done.stderr[-2000:]}")


async def _python_load(spec: dict[str, Any]) -> dict[str, float]:
    """The fallback load generator: `connections` keep-alive HTTP/1.1 connections, one request
    in flight on each, for `seconds`. TLS without verification, like wrk (loopback only)."""
    parts = urlsplit(spec["url"])
    host = parts.hostname or "127.0.0.1"
    tls = None
    if parts.scheme == "https":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    port = parts.port or (443 if tls else 80)
    body = spec["body"].encode()
    head = [f"{spec['method']} {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{name}: {value}" for name, value in spec["headers"]]
    if body:
        head.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    latencies: list[float] = []
    counts = {"requests": 0, "status": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    started = time.perf_counter()
    deadline = started + spec["seconds"]

    async def connection() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        except OSError:
            counts["connect"] += 1
            return
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                writer.write(raw)
                status_line = await reader.readline()
                if not status_line:
                    counts["read"] += 1
                    return
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                counts["requests"] += 1
                if not 200 <= int(status_line.split()[1]) < 400:
                    counts["status"] += 1
        except (OSError, asyncio.IncompleteReadError):
            counts["read"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(spec["connections"])))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e6 if latencies else 0

    return {
        **counts,
        "duration_us": elapsed * 1e6,
        "bytes": 0,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "mean_us": statistics.fmean(latencies) * 1e6 if latencies else 0,
    }


def load_worker(spec_json: str) -> int:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    stats = asyncio.run(_python_load(json.loads(spec_json)))
    print("CAIRN-BENCH " + json.dumps(stats), flush=True)
    return 0


# ---- raw signing ---------------------------------------------------------------------------------


def ops_per_second(fn: Callable[[], object], seconds: float, batch: int = 20) -> float:
    """Calls of `fn` per second on this thread, over at least `seconds`."""
    count = 0
    started = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        count += batch
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count / elapsed


@dataclass
class Signers:
    """RSA-2048 and P-256 keys, a realistic JWT signing input, and the three measured calls."""

    rs256: Callable[[], object]
    es256: Callable[[], object]
    sign_jwt: Callable[[], object]
    input_bytes: int


def make_signers() -> Signers:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    from cairn.identity import tokens
    from cairn.identity.keys import public_jwk

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    kid = str(public_jwk(rsa_key.public_key())["kid"])
    claims = tokens.workload_claims(
        issuer="https://localhost:8443",
        audience=AUDIENCE,
        workload=tokens.Workload(
            organization_id="org-AbCdEfGhIjKlMnOp",
            organization_name="bench-0123abcd",
            project_id="prj-AbCdEfGhIjKlMnOp",
            project_name="Default Project",
            workspace_id="ws-AbCdEfGhIjKlMnOp",
            workspace_name="identity-bench",
        ),
        run_id="run-AbCdEfGhIjKlMnOp",
        phase="plan",
        now=datetime.now(UTC),
        ttl=timedelta(seconds=MINT_TTL),
    )
    token = tokens.sign_jwt(claims, rsa_key, kid, "RS256")
    signing_input = token.rsplit(".", 1)[0].encode()
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    ecdsa = ec.ECDSA(hashes.SHA256())
    return Signers(
        rs256=lambda: rsa_key.sign(signing_input, pkcs1, sha256),
        es256=lambda: ec_key.sign(signing_input, ecdsa),
        sign_jwt=lambda: tokens.sign_jwt(claims, rsa_key, kid, "RS256"),
        input_bytes=len(signing_input),
    )


# ---- the server side -----------------------------------------------------------------------------


@dataclass
class Target:
    """One running server with a workspace to mint for."""

    transport: str
    server: Any  # CairnServer
    token: str
    ws_id: str = ""
    access_log: str = "on"  # CAIRN_ACCESS_LOG of the server
    minted: int = 0  # 2xx mints counted by the load generator and the checks
    verified: str = ""

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    @property
    def label(self) -> str:
        """The transport, and the access-log setting when it is not the default."""
        return self.transport if self.access_log == "on" else f"{self.transport}/{self.access_log}"

    def mint_request(self) -> Request:
        body = json.dumps({"audience": AUDIENCE, "run_phase": "plan", "ttl_seconds": MINT_TTL})
        return Request(
            url=self.url(MINT_PATH.format(ws_id=self.ws_id)),
            method="POST",
            headers=(
                ("Content-Type", "application/json"),
                ("Authorization", f"Bearer {self.token}"),
            ),
            body=body.encode(),
        )


def prepare(target: Target) -> None:
    """An organization and a workspace; one mint verified with PyJWT through discovery + JWKS."""
    from tests.support import api as tfe

    with target.server.client(target.token) as api:
        org = tfe.create_organization(api, tfe.unique_name("bench"))
        target.ws_id = tfe.create_workspace(api, org, "identity-bench")
        minted = tfe.expect(
            api.post(
                MINT_PATH.format(ws_id=target.ws_id),
                json={"audience": AUDIENCE, "run_phase": "plan", "ttl_seconds": MINT_TTL},
            ),
            201,
        ).json()
        target.minted += 1
        discovery = tfe.expect(api.get(DISCOVERY_PATH), 200).json()
        jwks_url = discovery["jwks_uri"]
        jwks = tfe.expect(api.get(jwks_url), 200).json()
    try:
        import jwt
    except ImportError:
        target.verified = "not verified (PyJWT missing: make install)"
        return
    kid = jwt.get_unverified_header(minted["token"])["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(
        minted["token"],
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=discovery["issuer"],
    )
    if claims["terraform_workspace_id"] != target.ws_id or claims["jti"] != minted["jti"]:
        raise AssertionError(f"unexpected claims in the minted token: {claims}")
    target.verified = f"verified with PyJWT via discovery + JWKS (kid {kid[:10]}…)"


def audit_mints(target: Target) -> int:
    """Audit events of minted tokens in the server's SQLite database (read-only)."""
    path = target.server.data_dir / "cairn.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        row = db.execute(
            "SELECT count(*) FROM audit_events WHERE action = 'oidc.token.mint'"
        ).fetchone()
    return int(row[0])


# ---- the bare Starlette reference -----------------------------------------------------------


def bare_server_main(spec_path: str) -> int:
    """Child process: uvicorn serving a bare Starlette app (no middleware) whose routes answer
    fixed bytes, on ``spec["port"]``, with cairn's TLS certificate when given; the same uvicorn
    options as ``cairn serve`` (its header-timeout protocol, no server header, no log config)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response
    from starlette.routing import Route

    from cairn.tfeapi.timeouts import header_timeout_protocol

    spec = json.loads(Path(spec_path).read_text())

    def fixed(body: bytes, media_type: str) -> Callable[[StarletteRequest], Any]:
        async def answer(request: StarletteRequest) -> Response:
            return Response(body, media_type=media_type)

        return answer

    routes = [
        Route(path, fixed(bytes.fromhex(body), media), methods=["GET"])
        for path, (body, media) in spec["routes"].items()
    ]
    ssl_files = {}
    if spec.get("cert"):
        ssl_files = {"ssl_certfile": spec["cert"], "ssl_keyfile": spec["key"]}
    uvicorn.run(
        Starlette(routes=routes),
        host="127.0.0.1",
        port=spec["port"],
        log_config=None,
        access_log=False,
        http=header_timeout_protocol(10.0),
        server_header=False,
        **ssl_files,
    )
    return 0


@dataclass
class BareServer:
    """The bare reference server of one transport (a child process, stopped by pid)."""

    target: Target
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        scheme = "http" if self.target.transport == "http" else "https"
        return f"{scheme}://{self.target.server.host}:{self.port}{path}"

    def start(self) -> None:
        from tests.support import processes

        server = self.target.server
        routes = {}
        with server.client() as http:
            for path in BARE_ROUTES:
                answer = http.get(path)
                answer.raise_for_status()
                routes[path] = (answer.content.hex(), answer.headers["content-type"])
        tls = server.data_dir / "tls"
        spec: dict[str, Any] = {"port": processes.free_port(), "routes": routes}
        if self.target.transport == "https":
            spec["cert"], spec["key"] = str(tls / "server.pem"), str(tls / "server-key.pem")
        self.port = spec["port"]
        spec_path = server.data_dir.parent / "bare-server.json"
        spec_path.write_text(json.dumps(spec))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--bare-server", str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with httpx.Client(verify=server.ssl_context(), timeout=2) as http:
                    if http.get(self.url(JWKS_PATH)).status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare Starlette server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- measurements --------------------------------------------------------------------------------


@dataclass
class Case:
    """A named series of timed runs, one per round."""

    name: str
    transport: str = ""
    connections: int = 0
    loads: list[Load] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # for raw signing (no Load)

    def rate_list(self) -> list[float]:
        return [load.rate for load in self.loads] if self.loads else self.rates

    @property
    def rate(self) -> float:
        return median(self.rate_list())

    def med(self, attr: str) -> float:
        return median([float(getattr(load, attr)) for load in self.loads])

    @property
    def errors(self) -> int:
        return sum(load.errors for load in self.loads)


def paired_ratio(num: Case, den: Case) -> float:
    """Median over rounds of num/den within the same round."""
    pairs = zip(num.rate_list(), den.rate_list(), strict=False)
    return median([n / d for n, d in pairs if d > 0])


def cpu_ratio(case: Case, reference_us: list[float]) -> float:
    """Median over rounds of (reference CPU us per operation / server CPU us per request):
    the ratio the server would reach with a whole core to itself."""
    pairs = zip(reference_us, [load.server_us for load in case.loads], strict=False)
    return median([ref / srv for ref, srv in pairs if srv > 0])


@dataclass
class MintResults:
    raw: Case
    es256: Case
    sign_jwt: Case
    mints: list[Case]
    sign_other_cores: float  # other processes' CPU while this process signed


def measure_mint(targets: list[Target], load: LoadGenerator, signers: Signers) -> MintResults:
    raw = Case("raw RS256 sign")
    es256 = Case("raw ES256 sign")
    sign_jwt = Case("cairn sign_jwt RS256")
    runs: list[tuple[Target, Request, Case]] = []
    for target in targets:
        request = target.mint_request()
        for connections in (MINT_CONNECTIONS, MINT_SERIAL):
            runs.append((target, request, Case("mint", target.transport, connections)))
        warm = load.run(request, WARMUP_SECONDS, MINT_CONNECTIONS, target.server.pid)  # untimed
        target.minted += warm.requests
        if warm.requests == 0:
            raise RuntimeError(f"{target.transport}: no mint succeeded in the warm-up")
    ops_per_second(signers.rs256, 0.3)
    other: list[float] = []
    for _ in range(MINT_ROUNDS):
        busy, own, wall = machine_busy(), time.process_time(), time.perf_counter()
        raw.rates.append(ops_per_second(signers.rs256, SIGN_SECONDS))
        busy = machine_busy() - busy - (time.process_time() - own)
        other.append(max(0.0, busy) / (time.perf_counter() - wall))
        es256.rates.append(ops_per_second(signers.es256, SIGN_SECONDS / 4, batch=200))
        sign_jwt.rates.append(ops_per_second(signers.sign_jwt, SIGN_SECONDS / 2))
        for target, request, case in runs:
            run = load.run(request, MINT_SECONDS, case.connections, target.server.pid)
            target.minted += run.requests
            case.loads.append(run)
    return MintResults(raw, es256, sign_jwt, [case for _, _, case in runs], median(other))


@dataclass
class Reads:
    """One transport's read cases: cairn's JWKS and discovery through the full app, the same
    bytes from the bare Starlette server (no middleware), and cairn's own fixed routes."""

    jwks: Case
    discovery: Case
    bare_jwks: Case
    bare_discovery: Case
    static: Case
    ping: Case

    def rows(self) -> list[tuple[Case, Case | None]]:
        """Each case and the bare case it is compared with (None: the reference itself)."""
        return [
            (self.jwks, self.bare_jwks),
            (self.bare_jwks, None),
            (self.discovery, self.bare_discovery),
            (self.bare_discovery, None),
            (self.static, self.bare_jwks),
            (self.ping, self.bare_jwks),
        ]


def measure_reads(
    targets: list[Target], bares: dict[str, BareServer], load: LoadGenerator
) -> list[Reads]:
    out = []
    for target in targets:
        bare = bares[target.transport]
        t, n = target.label, READ_CONNECTIONS
        reads = Reads(
            Case(f"cairn {JWKS_PATH}", t, n),
            Case(f"cairn {DISCOVERY_PATH}", t, n),
            Case(f"bare {JWKS_PATH}", t, n),
            Case(f"bare {DISCOVERY_PATH}", t, n),
            Case(f"cairn {BARE_PATH}", t, n),
            Case(f"cairn {PING_PATH}", t, n),
        )
        pid = target.server.pid
        runs = [
            (Request(target.url(JWKS_PATH)), reads.jwks, pid),
            (Request(bare.url(JWKS_PATH)), reads.bare_jwks, bare.pid),
            (Request(target.url(DISCOVERY_PATH)), reads.discovery, pid),
            (Request(bare.url(DISCOVERY_PATH)), reads.bare_discovery, bare.pid),
            (Request(target.url(BARE_PATH)), reads.static, pid),
            (Request(target.url(PING_PATH)), reads.ping, pid),
        ]
        for request, _, server_pid in runs:
            load.run(request, WARMUP_SECONDS, READ_CONNECTIONS, server_pid)
        for _ in range(READ_ROUNDS):
            for request, case, server_pid in runs:
                case.loads.append(load.run(request, READ_SECONDS, READ_CONNECTIONS, server_pid))
        out.append(reads)
    return out


def response_sizes(target: Target) -> dict[str, int]:
    paths = (JWKS_PATH, BARE_PATH, PING_PATH, DISCOVERY_PATH)
    with target.server.client() as http:
        return {path: len(http.get(path).content) for path in paths}


# ---- report --------------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def print_mint(result: MintResults, targets: list[Target], size: int) -> list[tuple[str, str]]:
    raw = result.raw
    print(
        "1. Tokens minted per second over HTTP vs raw signing (medians of "
        f"{MINT_ROUNDS} interleaved rounds)\n"
        "   raw = cryptography in this process, one thread, while the servers idle: RSA-2048\n"
        f"   PKCS#1 v1.5 SHA-256 (RS256) / P-256 ECDSA (ES256) over a {size}-byte JWT signing"
        " input;\n"
        "   sign_jwt = cairn's whole JWS (JSON + base64url + RS256).\n"
        "   mint = POST /api/cairn/v1/workspaces/{id}/id-tokens (RS256, one audit event per"
        " token) to\n"
        f"   one cairn process (one worker, SQLite), keep-alive connections, {MINT_SECONDS} s"
        " runs.\n"
        "   ratio = median over rounds of (mints/s / raw RS256 signs/s of the same round);"
        " cpu ratio =\n"
        "   median of (raw RS256 us per signature / server CPU us per token): the ratio with"
        " a core to itself.\n"
        "   srv us/op = server CPU (all threads) per token; srv/cli/other = cores used by the"
        " server,\n"
        "   the load generator and every other process of the machine during the run."
    )
    header = (
        f"   {'case':<24} {'conns':>5} {'per s':>7} {'us/op':>6} {'srv us/op':>9}"
        f" {'srv':>5} {'cli':>5} {'other':>5} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
        f" {'ratio':>6} {'cpu r':>6}  target"
    )
    print_header(header)
    for case in (raw, result.es256, result.sign_jwt):
        rate = case.rate
        versus = "" if case is raw else f"{paired_ratio(case, raw):.2f}x"
        other = f"{result.sign_other_cores:.2f}" if case is raw else ""
        print(
            f"   {case.name:<24} {1:>5} {fmt_rate(rate):>7} {1e6 / rate:>6.0f} {'':>9}"
            f" {'':>5} {'':>5} {other:>5} {'':>7} {'':>7} {'':>6} {versus:>6} {'':>6}  "
            + ("(reference)" if case is raw else "(info)")
        )
    summary = []
    sign_us = [1e6 / rate for rate in raw.rates]
    for case in result.mints:
        ratio = paired_ratio(case, raw)
        if case.transport == "https" and case.connections == MINT_CONNECTIONS:
            ok = ratio >= TARGET_MINT
            goal = f">={TARGET_MINT}x {verdict(ok)}"
            summary.append(
                (
                    f"mint/s over HTTPS ({case.connections} conns) >= {TARGET_MINT}x raw RS256/s",
                    f"{ratio:.2f}x {verdict(ok)}",
                )
            )
        else:
            goal = "(info)"
        print(
            f"   {'mint ' + case.transport:<24} {case.connections:>5} {fmt_rate(case.rate):>7}"
            f" {1e6 / case.rate:>6.0f} {case.med('server_us'):>9.0f}"
            f" {case.med('server_cores'):>5.2f} {case.med('client_cores'):>5.2f}"
            f" {case.med('other_cores'):>5.2f} {case.med('p50_ms'):>7.2f}"
            f" {case.med('p99_ms'):>7.2f} {case.errors:>6} {ratio:>5.2f}x"
            f" {cpu_ratio(case, sign_us):>5.2f}x  {goal}"
        )
    raw_us = 1e6 / raw.rate
    for case in result.mints:
        if case.connections != MINT_CONNECTIONS:
            continue
        srv = case.med("server_us")
        print(
            f"   {case.transport}: {srv:,.0f} us of server CPU per token, of which"
            f" ~{raw_us:.0f} us ({raw_us / srv:.0%}) is the RSA signature itself; the rest is"
            " HTTP/TLS,\n   framework, authentication, workspace lookup, audit insert + commit."
        )
    for target in targets:
        try:
            audited = audit_mints(target)
            note = f"{audited:,} audit events for {target.minted:,} mints counted by the client"
        except sqlite3.Error as exc:
            note = f"audit events not counted ({exc})"
        print(f"   {target.transport}: sample token {target.verified}; {note}")
    print()
    return summary


def print_reads(results: list[Reads], sizes: dict[str, int]) -> list[tuple[str, str]]:
    print(
        "2. JWKS and discovery through the whole cairn app vs a bare Starlette route without"
        f" the middleware\n   (medians of {READ_ROUNDS} rounds). bare = a Starlette app in a"
        " uvicorn process of its own, served as\n   cairn serve serves cairn, one route per"
        " path answering the bytes cairn answers, no middleware.\n"
        f"   {BARE_PATH} (raw-ASGI StaticJson) and {PING_PATH} (204) are cairn's own fixed"
        " routes, behind\n   its middleware, for reference. Keep-alive connections,"
        f" {READ_SECONDS} s runs, the endpoints interleaved;\n"
        "   ratio = median over rounds of (req/s / the bare route's req/s in the same round);"
        "\n   cpu ratio = median of (bare server CPU us per request / this one's)."
    )
    header = (
        f"   {'transport':<16} {'endpoint':<40} {'bytes':>5} {'conns':>5} {'req/s':>7}"
        f" {'srv us/req':>10} {'srv':>5} {'cli':>5} {'other':>5} {'p99 ms':>7} {'errors':>6}"
        f" {'ratio':>6} {'cpu r':>6}  target"
    )
    print_header(header)
    summary = []
    for reads in results:
        for case, bare in reads.rows():
            reference = bare if bare is not None else case
            ratio = paired_ratio(case, reference)
            bare_us = [load.server_us for load in reference.loads]
            if bare is None:
                target = "(baseline)"
            elif case in (reads.jwks, reads.discovery) and "/" in case.transport:
                target = "(every line)"  # CAIRN_ACCESS_LOG=all: no target
            elif case in (reads.jwks, reads.discovery):
                ok = ratio >= TARGET_JWKS
                target = f">={TARGET_JWKS}x {verdict(ok)}"
                what = "JWKS" if case is reads.jwks else "discovery"
                summary.append(
                    (
                        f"{what} req/s over {case.transport} >= {TARGET_JWKS}x bare"
                        " Starlette route",
                        f"{ratio:.2f}x {verdict(ok)}",
                    )
                )
            else:
                target = "(reference)"
            path = case.name.split(" ", 1)[1]
            print(
                f"   {case.transport:<16} {case.name:<40} {sizes.get(path, 0):>5}"
                f" {case.connections:>5} {fmt_rate(case.rate):>7} {case.med('server_us'):>10.0f}"
                f" {case.med('server_cores'):>5.2f} {case.med('client_cores'):>5.2f}"
                f" {case.med('other_cores'):>5.2f} {case.med('p99_ms'):>7.2f} {case.errors:>6}"
                f" {ratio:>5.2f}x {cpu_ratio(case, bare_us):>5.2f}x  {target}"
            )
    print()
    return summary


def print_middleware(rounds: int) -> list[tuple[str, str]]:
    """The middleware's own CPU per request, measured in-process (``bench/middleware.py``)."""
    import middleware  # bench/middleware.py, beside this script

    loop: list[float] = []
    total: list[float] = []
    for _ in range(rounds):
        found = middleware._run_child("on", None)
        loop.append(found["loop_us"])
        total.append(found["total_us"])
    loop_us, total_us = median(loop), median(total)
    ok = loop_us < middleware.TARGET_US
    print(
        "3. The request middleware's own CPU per request, in-process around a no-op app"
        f" (bench/middleware.py,\n   CAIRN_ACCESS_LOG=on, medians of {rounds} runs): event-loop"
        f" thread {loop_us:.1f} us, whole process (access-log\n   writer thread included)"
        f" {total_us:.1f} us; target < {middleware.TARGET_US:g} us on the loop"
        f" {verdict(ok)}\n"
    )
    return [
        (
            f"middleware CPU per request on the event loop < {middleware.TARGET_US:g} us",
            f"{loop_us:.1f} us {verdict(ok)}",
        )
    ]


def print_summary(summary: list[tuple[str, str]], other_cores: list[float]) -> None:
    if not summary:
        return
    print("Targets")
    width = max(len(name) for name, _ in summary)
    for name, value in summary:
        print(f"   {name:<{width}}  {value}")
    busy = median(other_cores)
    if busy > BUSY_MACHINE:
        print(
            f"   WARNING: other processes used {busy:.2f} of {os.cpu_count()} cores (median over"
            " the timed runs):\n   the server did not have a core to itself and the figures"
            " swing from run to run;\n   rerun on an idle machine before trusting a verdict."
        )
    print()


def check_servers(targets: list[Target]) -> None:
    """Say so when a server died during a measurement (its last output helps)."""
    for target in targets:
        server = target.server
        if server.pid is not None and not server.running:
            print(
                f"   the {target.transport} server (pid {server.pid}) has exited; its last"
                f" output:\n{server.output(1500)}\n"
            )


# ---- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cairn workload-identity issuer benchmark")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if installed (auto), or the built-in asyncio client",
    )
    parser.add_argument("--load-worker", help=argparse.SUPPRESS)
    parser.add_argument("--bare-server", help=argparse.SUPPRESS)
    parser.add_argument("--reads-only", action="store_true", help="skip the minting part")
    args = parser.parse_args(argv)
    if args.load_worker:
        return load_worker(args.load_worker)
    if args.bare_server:
        return bare_server_main(args.bare_server)

    from cryptography import __version__ as cryptography_version

    started = time.perf_counter()
    with Bench("cairn-bench-identity-", keep=args.keep) as bench:
        token, root = bench.token, bench.root
        targets = [
            Target("https", bench.server("https"), token),
            Target("http", bench.server("http", plain_http=True), token),
            Target(
                "https",
                bench.server("https-all", env={"CAIRN_ACCESS_LOG": EVERY_LINE}),
                token,
                access_log=EVERY_LINE,
            ),
        ]
        summary: list[tuple[str, str]] = []
        other: list[float] = []  # cores used by other processes during each timed run
        load = LoadGenerator(args.client, root)
        print(
            f"cairn identity benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
            f" cryptography {cryptography_version}, httpx {httpx.__version__};\n"
            f"load generator: {load.name}, 1 thread; temporary data under {root}\n"
        )

        def start() -> None:
            for target in targets:
                target.server.start()
                prepare(target)

        section("starting servers", start)
        live = [t for t in targets if t.ws_id]
        signers = make_signers()

        def run_mint() -> None:
            minting = [t for t in live if t.access_log == "on"]
            result = measure_mint(minting, load, signers)
            other.extend(load.other_cores for case in result.mints for load in case.loads)
            other.append(result.sign_other_cores)
            summary.extend(print_mint(result, minting, signers.input_bytes))

        if live and not args.reads_only:
            section("minting", run_mint)
            check_servers(live)

        def run_reads() -> None:
            sizes = response_sizes(live[0])
            bares = {t.transport: BareServer(t) for t in live if t.access_log == "on"}
            try:
                for bare in bares.values():
                    bare.start()
                results = measure_reads(live, bares, load)
            finally:
                for bare in bares.values():
                    bare.stop()
            other.extend(
                x.other_cores for reads in results for case, _ in reads.rows() for x in case.loads
            )
            summary.extend(print_reads(results, sizes))

        if live:
            section("JWKS", run_reads)
            check_servers(live)
        section("middleware", lambda: summary.extend(print_middleware(3)))
        print_summary(summary, other)
        print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
