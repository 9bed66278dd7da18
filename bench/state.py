"""State backend benchmark: cairn against the raw disk and against Terraform's local backend.

Run as ``.venv/bin/python bench/state.py`` (``make bench``). One run prints, side by side:

1. Upload + download throughput of 1, 10 and 100 MB Terraform state files (format 4, many
   ``null_resource`` instances, correct serial/lineage/md5) through cairn's TFE API, over the
   development-CA HTTPS that ``cairn serve`` uses by default and over plain HTTP, against a raw
   ``write + fsync + read`` of the same bytes in the same filesystem as the data directory.
   Upload = POST state-versions (no ``state``) + PUT to ``hosted-state-upload-url``; download =
   GET current-state-version + GET ``hosted-state-download-url`` (bearer token), both streamed.
2. Peak server RSS (psutil, every 20 ms, server pid + children) during the 100 MB case, minus
   the idle RSS right before it, as a multiple of the state size.
3. Wall time of a no-op ``terraform apply -auto-approve`` (Terraform 1.0.3, 500 already applied
   ``null_resource`` instances) with cairn's ``remote`` backend against the ``local`` backend.
4. The inline upload Terraform 1.0.3 makes (one POST, the state base64 in ``data.attributes.
   state``) of a 100 MB state, over plain HTTP: its time, the server's peak RSS increase as a
   multiple of the state (target <= 1.5x) and the latency of ``GET /.well-known/jwks.json``
   requested back to back by another client meanwhile (p50/p99/max; target p99 < 50 ms: no
   request may block the event loop), against the same JWKS requests on an idle server. With
   ``--base-src DIR`` (a directory holding another tree's ``cairn`` package, e.g.
   ``/tmp/cairn-base/src``) the same runs on a server of that tree too, side by side.
   ``--inline-only`` runs this part alone.

Each figure is the median of a few runs. Targets are reported as PASS/MISS; the exit status is
0 whatever the figures are (a benchmark reports, it does not assert). Only loopback traffic;
the temporary directory and the servers started here are removed/stopped (by pid) at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

# _harness puts the repository root on sys.path: it comes before tests.support.
from _harness import Bench, median, print_header, section, verdict

# isort: split
from tests.support import api as tfe
from tests.support.server import CairnServer
from tests.support.terraform import (
    TERRAFORM_VERSION,
    TerraformCLI,
    TerraformProject,
    build_provider_mirror,
    remote_backend,
)

MB = 1024 * 1024
CHUNK = MB
SIZES_MB = (1, 10, 100)
# Timed repetitions per size (after one untimed, md5-verified warm-up round trip).
REPS = {1: 15, 10: 7, 100: 5}
SINGLE_RESOURCE_REPS = 2
APPLY_REPS = 7
APPLY_INSTANCES = 500
SAMPLE_INTERVAL = 0.020

TARGET_TRANSFER = 0.5  # cairn round trip >= 0.5x raw disk write+fsync+read
TARGET_RSS = 2.0  # peak RSS increase <= 2x the state size
TARGET_APPLY = 1.25  # remote no-op apply <= 1.25x local
INLINE_MB = 100
INLINE_REPS = 2
TARGET_INLINE_RSS = 1.5  # peak RSS increase <= 1.5x the state during an inline upload
TARGET_JWKS_P99 = 0.050  # JWKS p99 < 50 ms while the inline upload runs
JWKS_IDLE_REQUESTS = 300
JWKS_INTERVAL = 0.005  # the arrival interval the p99 is corrected to (see ``corrected``)

LINEAGE = str(uuid.UUID(int=0xCA12_0000_0000_4000_8000_0000_0000_0001))
NULL_PROVIDER = 'provider[\\"registry.terraform.io/hashicorp/null\\"]'


# ---- state files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateFile:
    """A Terraform state split around its serial, so each upload can carry a new serial
    without copying the (large, constant) body: bytes = head + serial + tail."""

    head: bytes
    tail: bytes
    lineage: str
    resources: int
    per_resource: int
    instances: int

    def size(self, serial: int) -> int:
        return len(self.head) + len(str(serial)) + len(self.tail)

    def chunks(self, serial: int) -> Iterator[bytes]:
        """The file's bytes, 1 MiB at a time, as views of the shared buffers (no copies)."""
        yield self.head + str(serial).encode()
        view = memoryview(self.tail)
        for start in range(0, len(view), CHUNK):
            yield view[start : start + CHUNK]  # type: ignore[misc]

    def md5(self, serial: int) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for chunk in self.chunks(serial):
            digest.update(chunk)
        return digest.hexdigest()


def make_state(size: int, *, per_resource: int = 100) -> StateFile:
    """A format-4 state of about `size` bytes: `null_resource.group_<k>` resources of
    `per_resource` instances each (like `count = 100`), written the way Terraform writes
    (two-space indentation, keys in Terraform's order)."""
    instance = (
        "        {{\n"
        '          "index_key": {index},\n'
        '          "schema_version": 0,\n'
        '          "attributes": {{\n'
        '            "id": "{id}",\n'
        '            "triggers": {{\n'
        '              "checksum": "{checksum}",\n'
        '              "generation": "1",\n'
        '              "index": "{index}"\n'
        "            }}\n"
        "          }},\n"
        '          "sensitive_attributes": [],\n'
        '          "private": "bnVsbA=="\n'
        "        }}"
    )
    resource_open = (
        "    {{\n"
        '      "mode": "managed",\n'
        '      "type": "null_resource",\n'
        '      "name": "group_{group}",\n'
        f'      "provider": "{NULL_PROVIDER}",\n'
        '      "instances": [\n'
    )
    resource_close = "\n      ]\n    }"
    seed = hashlib.sha256(f"cairn-bench-{size}".encode()).hexdigest()

    def render(n: int) -> str:
        return instance.format(
            index=n % per_resource,
            id=str(4_000_000_000_000_000_000 + n),
            checksum=hashlib.sha256(f"{seed}{n}".encode()).hexdigest(),
        )

    # Every instance renders to the same length (fixed-width id and checksum, ±digits of index).
    total = max(1, size // (len(render(min(per_resource, 100_000) // 2)) + 2))
    resources = []
    for group, first in enumerate(range(0, total, per_resource)):
        body = ",\n".join(render(n) for n in range(first, min(first + per_resource, total)))
        resources.append(resource_open.format(group=group) + body + resource_close)
    count = total
    head = '{\n  "version": 4,\n  "terraform_version": "1.0.3",\n  "serial": '
    tail = (
        f',\n  "lineage": "{LINEAGE}",\n'
        '  "outputs": {\n'
        f'    "instances": {{\n      "value": {count},\n      "type": "number"\n    }}\n'
        "  },\n"
        '  "resources": [\n' + ",\n".join(resources) + "\n  ]\n}\n"
    )
    return StateFile(head.encode(), tail.encode(), LINEAGE, len(resources), per_resource, count)


# ---- measuring helpers ---------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS of a process and its children every `interval` seconds in a thread.
    `idle` is the RSS when sampling starts, `peak` the highest sum seen."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL) -> None:
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._children: list[psutil.Process] = []
        self.idle = 0
        self.peak = 0
        self.samples = 0

    def rss(self) -> int:
        total: int = self._proc.memory_info().rss
        for child in self._children:
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self._interval):
            tick += 1
            if tick % 25 == 0:  # refresh the list of children every ~0.5 s
                with contextlib.suppress(psutil.Error):
                    self._children = self._proc.children(recursive=True)
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.rss())
                self.samples += 1

    def __enter__(self) -> RssSampler:
        self._children = self._proc.children(recursive=True)
        self.idle = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self.rss())


def mbps(size: int, seconds: float) -> float:
    return size / MB / seconds if seconds > 0 else float("inf")


# ---- raw disk ------------------------------------------------------------------------------------


def raw_disk(directory: Path, state: StateFile, serial: int) -> tuple[float, float]:
    """(write+fsync seconds, read seconds) of the state's bytes in `directory`."""
    path = directory / f"raw-{secrets.token_hex(4)}.tfstate"
    buffer = bytearray(CHUNK)
    try:
        started = time.perf_counter()
        with open(path, "wb", buffering=0) as f:
            for chunk in state.chunks(serial):
                f.write(chunk)
            os.fsync(f.fileno())
        written = time.perf_counter()
        size = 0
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                size += n
        read = time.perf_counter()
        if size != state.size(serial):
            raise AssertionError(f"read back {size} bytes of {state.size(serial)}")
        return written - started, read - written
    finally:
        path.unlink(missing_ok=True)


# ---- cairn transfers -----------------------------------------------------------------------------


@dataclass
class Workspace:
    server: CairnServer
    api: httpx.Client
    ws_id: str
    serial: int = 0


def prepare_workspace(server: CairnServer, token: str) -> Workspace:
    """An organization and a workspace, locked by the admin (only the holder may write)."""
    api = server.client(token)
    api.timeout = httpx.Timeout(120.0)
    org = tfe.create_organization(api, tfe.unique_name("bench"))
    ws_id = tfe.create_workspace(api, org, "state-bench")
    tfe.workspace_action(api, ws_id, "lock")
    return Workspace(server, api, ws_id)


@dataclass
class Uploaded:
    sv_id: str
    size: int
    md5: str
    seconds: float


def upload(ws: Workspace, state: StateFile) -> Uploaded:
    """The two-step hosted upload of the next serial, timed from the POST to the PUT's 200."""
    ws.serial += 1
    serial = ws.serial
    md5 = state.md5(serial)  # what Terraform computes before it uploads: not timed
    size = state.size(serial)
    body = {
        "data": {
            "type": "state-versions",
            "attributes": {"serial": serial, "md5": md5, "lineage": state.lineage},
        }
    }
    started = time.perf_counter()
    created = tfe.document(
        ws.api.post(
            f"/api/v2/workspaces/{ws.ws_id}/state-versions",
            json=body,
            headers={"Content-Type": tfe.JSONAPI},
        ),
        201,
    )["data"]
    put = ws.api.put(
        created["attributes"]["hosted-state-upload-url"],
        content=state.chunks(serial),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
    )
    tfe.expect(put, 200)
    return Uploaded(created["id"], size, md5, time.perf_counter() - started)


def wait_processed(ws: Workspace, sv_id: str, timeout: float = 120.0) -> float:
    """Seconds until the version's resources are counted (in the background above 8 MB)."""
    started = time.perf_counter()
    while True:
        doc = tfe.document(ws.api.get(f"/api/v2/state-versions/{sv_id}"), 200)
        if doc["data"]["attributes"]["resources-processed"]:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"state version {sv_id} not processed after {timeout}s")
        time.sleep(0.02)


def download(ws: Workspace, *, verify_md5: str | None = None) -> tuple[int, float]:
    """GET current-state-version, then stream its download URL; (bytes, seconds)."""
    started = time.perf_counter()
    current = tfe.current_state_version(ws.api, ws.ws_id)
    url = current["attributes"]["hosted-state-download-url"]
    digest = hashlib.md5(usedforsecurity=False) if verify_md5 else None
    size = 0
    with ws.api.stream("GET", url) as response:
        tfe.expect(response, 200)
        for chunk in response.iter_raw(CHUNK):
            size += len(chunk)
            if digest is not None:
                digest.update(chunk)
    elapsed = time.perf_counter() - started
    if digest is not None and digest.hexdigest() != verify_md5:
        raise AssertionError(f"downloaded state has md5 {digest.hexdigest()}, not {verify_md5}")
    return size, elapsed


@dataclass
class TransferResult:
    transport: str
    size_mb: int
    upload: list[float] = field(default_factory=list)
    download: list[float] = field(default_factory=list)
    processing: list[float] = field(default_factory=list)
    raw_write: list[float] = field(default_factory=list)
    raw_read: list[float] = field(default_factory=list)
    nbytes: int = 0


@dataclass
class MemoryResult:
    transport: str
    shape: str
    size: int
    round_trips: int
    idle: int
    peak: int

    @property
    def multiple(self) -> float:
        return (self.peak - self.idle) / self.size


def round_trip(ws: Workspace, state: StateFile, result: TransferResult | None) -> None:
    """Upload, wait until processed, download; verify the bytes when not timing."""
    up = upload(ws, state)
    processing = wait_processed(ws, up.sv_id)
    got, down = download(ws, verify_md5=None if result else up.md5)
    if got != up.size:
        raise AssertionError(f"downloaded {got} bytes, uploaded {up.size}")
    if result is not None:
        result.upload.append(up.seconds)
        result.processing.append(processing)
        result.download.append(down)
        result.nbytes = up.size


def measure_transfers(
    ws: Workspace, transport: str, states: dict[int, StateFile]
) -> tuple[list[TransferResult], MemoryResult]:
    """Each size: one untimed md5-verified round trip, then REPS timed ones, each next to a
    raw-disk run. The largest size runs under the RSS sampler, warm-up included."""
    pid = ws.server.pid
    assert pid is not None
    results = []
    memory: MemoryResult | None = None
    largest = max(states)
    for size_mb, state in states.items():
        result = TransferResult(transport, size_mb)
        if size_mb == largest:
            time.sleep(0.5)  # let earlier background work finish: the idle figure is "before"
        sampler = RssSampler(pid) if size_mb == largest else None
        with sampler or contextlib.nullcontext():
            round_trip(ws, state, None)
            for _ in range(REPS[size_mb]):
                w, r = raw_disk(ws.server.data_dir, state, ws.serial)
                result.raw_write.append(w)
                result.raw_read.append(r)
                round_trip(ws, state, result)
        if sampler is not None:
            memory = MemoryResult(
                transport,
                f"{state.resources} resources of <={state.per_resource}",
                result.nbytes,
                1 + REPS[size_mb],
                sampler.idle,
                sampler.peak,
            )
        results.append(result)
    assert memory is not None
    return results, memory


def measure_single_resource_memory(ws: Workspace, size_mb: int) -> MemoryResult:
    """The same size with every instance under one resource (`count = N`)."""
    state = make_state(size_mb * MB, per_resource=10**9)
    pid = ws.server.pid
    assert pid is not None
    time.sleep(0.5)
    with RssSampler(pid) as sampler:
        for _ in range(SINGLE_RESOURCE_REPS):
            round_trip(ws, state, None)
    return MemoryResult(
        ws.server.url.split(":")[0],
        "1 resource",
        state.size(ws.serial),
        SINGLE_RESOURCE_REPS,
        sampler.idle,
        sampler.peak,
    )


# ---- terraform apply -----------------------------------------------------------------------------


def apply_config(backend_block: str) -> str:
    return f"""\
terraform {{
  required_providers {{
    null = {{
      source  = "hashicorp/null"
      version = "2.1.2"
    }}
  }}
{backend_block}}}

resource "null_resource" "item" {{
  count = {APPLY_INSTANCES}

  triggers = {{
    index = tostring(count.index)
  }}
}}
"""


@dataclass
class ApplyResult:
    name: str
    seconds: list[float] = field(default_factory=list)


def timed_apply(project: TerraformProject) -> float:
    started = time.perf_counter()
    result = project.apply()
    elapsed = time.perf_counter() - started
    if "Resources: 0 added, 0 changed, 0 destroyed" not in result.stdout:
        raise AssertionError(f"the timed apply was not a no-op:\n{result.stdout[-2000:]}")
    return elapsed


def terraform_for(server: CairnServer, token: str, root: Path, mirror: Path) -> TerraformCLI:
    if server.plain_http:
        return TerraformCLI.for_plain_http(root, api_url=server.api_url, token=token, mirror=mirror)
    assert server.ca_bundle is not None
    return TerraformCLI.for_https(
        root, hostname=server.hostname, token=token, mirror=mirror, ca_bundle=server.ca_bundle
    )


def measure_apply(servers: dict[str, CairnServer], token: str, root: Path) -> list[ApplyResult]:
    """init + a first apply that creates the instances (untimed), one untimed no-op apply each,
    then APPLY_REPS rounds of timed no-op applies, the backends interleaved."""
    mirror = build_provider_mirror(root / "mirror")
    projects: list[tuple[ApplyResult, TerraformProject]] = []
    for transport, server in servers.items():
        cli = terraform_for(server, token, root / transport, mirror)
        if not projects:
            local = cli.project("local", apply_config(""))
            projects.append((ApplyResult("local backend"), local))
        with server.client(token) as api:
            org = tfe.create_organization(api, tfe.unique_name("apply"))
        backend = remote_backend(cli.hostname, org, name="apply-bench")
        remote = cli.project("remote", apply_config("\n" + backend))
        projects.append((ApplyResult(f"cairn remote ({transport})"), remote))
    for _, project in projects:
        project.init()
        created = project.apply()
        if f"{APPLY_INSTANCES} added" not in created.stdout:
            raise AssertionError(f"the first apply did not create the resources:\n{created.stdout}")
        timed_apply(project)  # warm-up
    for _ in range(APPLY_REPS):
        for result, project in projects:
            result.seconds.append(timed_apply(project))
    return [result for result, _ in projects]


# ---- report --------------------------------------------------------------------------------------


def print_transfers(results: list[TransferResult]) -> None:
    print(
        "1. State upload + download through cairn vs raw disk (medians; MB = 2^20 bytes)\n"
        "   cairn upload = POST state-versions + PUT bytes to hosted-state-upload-url;\n"
        "   cairn download = GET current-state-version + GET hosted-state-download-url;\n"
        "   raw = write+fsync, then read, of the same bytes in the data directory's filesystem.\n"
        "   ratio = median over adjacent pairs of (cairn round-trip MB/s / raw round-trip MB/s).\n"
        "   'count s': resources counted after the upload (inside the PUT up to 8 MB, in the\n"
        "   background above; untimed, the download waits for it)."
    )
    header = (
        f"   {'transport':<9} {'size':>6} {'n':>2}   {'upload (raw write)':>19}"
        f"   {'download (raw read)':>20}   {'round trip (raw)':>17}  {'ratio':>6}"
        f"  {'count s':>7}  target"
    )
    print_header(header)
    for r in results:
        size = r.nbytes
        up, down = median(r.upload), median(r.download)
        raw_w, raw_r = median(r.raw_write), median(r.raw_read)
        cairn_rt = median([u + d for u, d in zip(r.upload, r.download, strict=True)])
        raw_rt = median([w + d for w, d in zip(r.raw_write, r.raw_read, strict=True)])
        # Each timed round trip ran right after a raw-disk run: pair them, so that the ratio
        # follows the machine's (shared disk's) speed of the moment.
        ratio = median(
            [
                (w + rd) / (u + d)
                for u, d, w, rd in zip(r.upload, r.download, r.raw_write, r.raw_read, strict=True)
            ]
        )
        target = f">={TARGET_TRANSFER}x {verdict(ratio >= TARGET_TRANSFER)}"
        if r.transport != "https":
            target = "(info)"
        print(
            f"   {r.transport:<9} {r.size_mb:>4}MB {len(r.upload):>2}"
            f"   {mbps(size, up):>7.1f} ({mbps(size, raw_w):>8.1f})"
            f"   {mbps(size, down):>7.1f} ({mbps(size, raw_r):>9.1f})"
            f"   {mbps(size, cairn_rt):>6.1f} ({mbps(size, raw_rt):>8.1f})"
            f"  {ratio:>5.3f}x  {median(r.processing):>7.2f}  {target}"
        )
    print()


def print_memory(results: list[MemoryResult]) -> None:
    print(
        "2. Server memory: peak RSS (server pid + children, sampled every 20 ms) during the\n"
        "   100 MB round trips (warm-up included) minus the idle RSS right before them"
    )
    header = (
        f"   {'transport':<9} {'state':>8}  {'shape':<24} {'n':>2} {'idle MB':>8} {'peak MB':>8}"
        f" {'+MB':>7} {'x state':>8}  target"
    )
    print_header(header)
    for m in results:
        ok = m.multiple <= TARGET_RSS
        target = f"<={TARGET_RSS}x {verdict(ok)}" if m.transport == "https" else "(info)"
        print(
            f"   {m.transport:<9} {m.size / MB:6.1f}MB  {m.shape:<24} {m.round_trips:>2}"
            f" {m.idle / MB:>8.1f} {m.peak / MB:>8.1f} {(m.peak - m.idle) / MB:>7.1f}"
            f" {m.multiple:>7.2f}x  {target}"
        )
    print()


def print_apply(results: list[ApplyResult]) -> None:
    local = median(results[0].seconds)
    print(
        f"3. No-op `terraform apply -auto-approve` of {APPLY_INSTANCES} already applied"
        f" null_resource instances\n   (Terraform {TERRAFORM_VERSION}; median of {APPLY_REPS}"
        " interleaved runs, after one untimed no-op apply each)"
    )
    header = f"   {'backend':<22} {'median':>7} {'ratio':>7}  {'target':<13} runs (s)"
    print_header(header, extra=25)
    for result in results:
        value = median(result.seconds)
        runs = ", ".join(f"{v:.2f}" for v in result.seconds)
        ratio, target = "", ""
        if result is not results[0]:
            ratio = f"{value / local:.2f}x"
            target = (
                f"<={TARGET_APPLY}x {verdict(value / local <= TARGET_APPLY)}"
                if "https" in result.name
                else "(info)"
            )
        print(f"   {result.name:<22} {value:>6.2f}s {ratio:>7}  {target:<13} {runs}")
    print()


# ---- inline upload vs. the event loop ------------------------------------------------------------


inline_clients: list[httpx.Client] = []  # closed at the end of the run


@dataclass
class InlineResult:
    server: str
    size: int
    seconds: list[float] = field(default_factory=list)
    idle_rss: list[int] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    jwks_idle: list[float] = field(default_factory=list)
    jwks_busy: list[float] = field(default_factory=list)

    @property
    def rss_multiple(self) -> float:
        return max(p - i for p, i in zip(self.peak_rss, self.idle_rss, strict=True)) / self.size


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def corrected(latencies: list[float], interval: float = JWKS_INTERVAL) -> list[float]:
    """Latencies as clients arriving every ``interval`` would have seen them: a poller that
    waits for each answer sends one request during a 2 s stall where such clients would have
    sent 2 s / interval; each missing one waited as long as was left of the stall
    (coordinated omission, corrected as HdrHistogram does)."""
    out: list[float] = []
    for value in latencies:
        out.append(value)
        missed = value - interval
        while missed > 0:
            out.append(missed)
            missed -= interval
    return out


class JwksPoller:
    """GETs the JWKS back to back in a thread, recording each request's latency."""

    def __init__(self, server: CairnServer) -> None:
        self._client = server.client()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latencies: list[float] = []

    def once(self) -> float:
        started = time.perf_counter()
        tfe.expect(self._client.get("/.well-known/jwks.json"), 200)
        return time.perf_counter() - started

    def _run(self) -> None:
        while not self._stop.is_set():
            self.latencies.append(self.once())

    def __enter__(self) -> JwksPoller:
        """Poll in a new thread until the ``with`` block ends."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="jwks-poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self._client.close()


def inline_body(state: StateFile, serial: int) -> tuple[list[bytes], int]:
    """The create body Terraform 1.0.3 sends, in 1 MiB pieces (built once, not timed)."""
    raw = b"".join(state.chunks(serial))
    encoded = base64.b64encode(raw)
    head = json.dumps(
        {
            "data": {
                "type": "state-versions",
                "attributes": {
                    "serial": serial,
                    "md5": hashlib.md5(raw, usedforsecurity=False).hexdigest(),
                    "lineage": state.lineage,
                    "state": "",
                },
            }
        }
    ).encode()
    del raw
    before, after = head.split(b'"state": ""')
    parts = [before + b'"state": "']
    parts += [encoded[i : i + CHUNK] for i in range(0, len(encoded), CHUNK)]
    parts.append(b'"' + after)
    return parts, sum(len(p) for p in parts)


def measure_inline(server: CairnServer, token: str, state: StateFile, label: str) -> InlineResult:
    """INLINE_REPS inline uploads of the next serial, each under the RSS sampler and the JWKS
    poller; the JWKS on the idle server first."""
    ws = prepare_workspace(server, token)
    inline_clients.append(ws.api)
    pid = server.pid
    assert pid is not None
    result = InlineResult(label, state.size(1))
    poller = JwksPoller(server)
    try:
        for _ in range(20):  # warm-up
            poller.once()
        result.jwks_idle = [poller.once() for _ in range(JWKS_IDLE_REQUESTS)]
        for _ in range(INLINE_REPS):
            ws.serial += 1
            parts, length = inline_body(state, ws.serial)
            time.sleep(0.5)  # let earlier work settle: the idle RSS is "before"
            poller.latencies = []
            with RssSampler(pid) as sampler, poller:
                started = time.perf_counter()
                created = ws.api.post(
                    f"/api/v2/workspaces/{ws.ws_id}/state-versions",
                    content=iter(parts),
                    headers={"Content-Type": tfe.JSONAPI, "Content-Length": str(length)},
                )
                elapsed = time.perf_counter() - started
            tfe.expect(created, 201)
            result.seconds.append(elapsed)
            result.idle_rss.append(sampler.idle)
            result.peak_rss.append(sampler.peak)
            result.jwks_busy += poller.latencies
            del parts
    finally:
        poller.close()
    return result


def print_inline(results: list[InlineResult]) -> None:
    print(
        f"4. Inline state upload (Terraform 1.0.3's: base64 'state' in the create body) of a\n"
        f"   {INLINE_MB} MB state over plain HTTP, {INLINE_REPS} runs; meanwhile GET\n"
        "   /.well-known/jwks.json back to back from another client. 'x state' = the server's\n"
        "   peak RSS increase (sampled every 20 ms) over the state size, worst run.\n"
        "   JWKS ms: p50 / p99 / max, idle server vs. during the uploads; 'p99 corr': the p99\n"
        f"   corrected for coordinated omission (clients arriving every {JWKS_INTERVAL * 1e3:.0f}"
        " ms: a stall\n   counts once per client it would have held up): the one held to"
        " the target."
    )
    header = (
        f"   {'server':<10} {'upload s':>9} {'x state':>8}  {'rss target':<11}"
        f" {'JWKS idle ms':>20} {'JWKS during upload ms':>24} {'n':>6} {'p99 corr':>9}"
        "  target"
    )
    print_header(header)
    for r in results:
        idle, busy = r.jwks_idle, r.jwks_busy or [float("nan")]

        def trio(v: list[float]) -> str:
            return (
                f"{percentile(v, 0.5) * 1e3:5.1f} / {percentile(v, 0.99) * 1e3:6.1f}"
                f" / {max(v) * 1e3:6.1f}"
            )

        p99 = percentile(corrected(busy), 0.99)
        print(
            f"   {r.server:<10} {median(r.seconds):>9.2f} {r.rss_multiple:>7.2f}x"
            f"  <={TARGET_INLINE_RSS}x {verdict(r.rss_multiple <= TARGET_INLINE_RSS):<4}"
            f" {trio(idle):>20} {trio(busy):>24} {len(r.jwks_busy):>6}"
            f" {p99 * 1e3:>9.1f}  <{TARGET_JWKS_P99 * 1e3:.0f} ms {verdict(p99 < TARGET_JWKS_P99)}"
        )
    print()


def run_inline(bench: Bench, base_src: Path | None) -> list[InlineResult]:
    """This tree's server, then (with ``base_src``) the other tree's, one after the other."""
    state = make_state(INLINE_MB * MB)
    results = []
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if base_src is not None:
        trees.append(("base", base_src))
    for label, src in trees:
        env = {}
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(src.resolve()), os.environ.get("PYTHONPATH", "")) if p
            )
        server = bench.server(f"inline-{label.replace(' ', '-')}", plain_http=True, env=env)
        server.start()
        try:
            results.append(measure_inline(server, bench.token, state, label))
        finally:
            server.stop()
    return results


# ---- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cairn state backend benchmark")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--inline-only", action="store_true", help="run only part 4 (inline upload vs. JWKS)"
    )
    parser.add_argument(
        "--base-src",
        type=Path,
        help="also run part 4 on a server of this source tree (a directory holding 'cairn')",
    )
    args = parser.parse_args(argv)
    if args.inline_only:
        with Bench("cairn-bench-inline-", keep=args.keep) as bench:
            print(
                f"cairn inline upload benchmark: Python {sys.version.split()[0]},"
                f" {os.cpu_count()} CPUs, temporary data under {bench.root}\n"
            )
            found: list[InlineResult] = []
            try:
                section("inline upload", lambda: found.extend(run_inline(bench, args.base_src)))
                if found:
                    print_inline(found)
            finally:
                for client in inline_clients:
                    client.close()
        return 0

    started = time.perf_counter()
    with Bench("cairn-bench-", keep=args.keep) as bench:
        token, root = bench.token, bench.root
        servers = {
            "https": bench.server("https"),
            "http": bench.server("http", plain_http=True),
        }
        clients: list[httpx.Client] = []
        try:
            print(
                f"cairn state benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
                f" temporary data under {root}\n"
            )

            def start_servers() -> None:
                for server in servers.values():
                    server.start()

            section("starting servers", start_servers)
            transfers: list[TransferResult] = []
            memory: list[MemoryResult] = []

            def run_transfers() -> None:
                states = {size: make_state(size * MB) for size in SIZES_MB}
                first = states[SIZES_MB[0]]
                json.loads(first.head + b"1" + first.tail)  # valid JSON
                workspaces = {}
                for transport, server in servers.items():
                    ws = workspaces[transport] = prepare_workspace(server, token)
                    clients.append(ws.api)
                    found, mem = measure_transfers(ws, transport, states)
                    transfers.extend(found)
                    memory.append(mem)
                states.clear()
                memory.append(measure_single_resource_memory(workspaces["https"], max(SIZES_MB)))

            section("state transfers", run_transfers)
            if transfers:
                print_transfers(transfers)
            if memory:
                print_memory(memory)

            def run_apply() -> None:
                print_apply(measure_apply(servers, token, root / "apply"))

            section("terraform apply", run_apply)
            inline: list[InlineResult] = []
            section("inline upload", lambda: inline.extend(run_inline(bench, args.base_src)))
            if inline:
                print_inline(inline)
            clients.extend(inline_clients)
            print(f"total benchmark time {time.perf_counter() - started:.0f} s")
        finally:
            for client in clients:
                client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
