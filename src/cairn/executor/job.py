"""One claimed job, run end to end: start, heartbeats, Terraform, streamed and masked logs,
finish.

The same code runs in ``cairn serve``'s workers and in ``cairn agent``. What the job does is
the design's "What a job does": a fresh private directory, the configuration extracted into
it, a backend override, the variables as ``*.auto.tfvars`` and environment, ``terraform
init`` then ``plan`` (upload the plan and its JSON) or ``apply`` (of the downloaded plan),
and a finish with the resource counts. Every failure becomes an ``errored`` finish with a
one-line reason that is also the log's last line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from cairn.errors import CairnError
from cairn.executor import archive, credentials, terraform
from cairn.executor.protocol import (
    MAX_CONFIG_BYTES,
    MAX_LOG_CHUNK,
    AgentClient,
    CredentialsRefused,
    Finish,
    Job,
    LeaseLost,
    LogOffset,
    ProtocolError,
    Unreachable,
)

log = logging.getLogger("cairn.executor")

MASK = b"***"
HEADER_LINE = "Initializing plugins and modules..."


@dataclass(frozen=True)
class ExecutorSettings:
    """How this executor runs Terraform (the same for every job it runs)."""

    terraform_path: Path | None = None  # CAIRN_TERRAFORM_PATH
    tf_cli_config: Path | None = None  # CAIRN_RUN_TF_CLI_CONFIG
    ca_file: Path | None = None  # trusted by Terraform (SSL_CERT_FILE) when given
    work_root: Path | None = None  # where job directories are made (default: the temp dir)
    max_config_bytes: int = MAX_CONFIG_BYTES
    log_interval: float = 1.0
    heartbeat_s: float | None = None  # default: what the server said at registration
    kill_grace_s: float = 10.0
    inherited_env: Mapping[str, str] | None = field(default=None, repr=False)
    # where Google's STS and IAM credentials APIs are (written into GCP credential files)
    credential_endpoints: credentials.Endpoints = field(default_factory=credentials.Endpoints)


class JobFailed(CairnError):
    """The job cannot go on; the message is the one-line reason for the run."""

    code = "job-failed"


class Dropped(CairnError):
    """The job is no longer this executor's (lease lost, stale attempt): stop, do not finish."""

    code = "job-dropped"


# -- masking ----------------------------------------------------------------------------------


class Masker:
    """Replaces secret values in a byte stream with ``***``, also when a value is split over
    two chunks: a tail of the stream that could be the start of a secret is held back until
    the next chunk (or the end) decides."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        self._secrets = values
        self._pattern = re.compile(b"|".join(re.escape(v) for v in values)) if values else None
        self._held = b""

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values too (from now on)."""
        values = sorted(
            set(self._secrets) | {s.encode() for s in secrets if s}, key=len, reverse=True
        )
        self._secrets = values
        self._pattern = re.compile(b"|".join(re.escape(v) for v in values)) if values else None

    def _pending(self, data: bytes, start: int) -> int:
        """The first position from ``start`` where the rest of ``data`` is a proper prefix of
        a secret (more bytes may complete it), or ``len(data)``."""
        longest = len(self._secrets[0]) if self._secrets else 0
        for k in range(max(start, len(data) - longest + 1), len(data)):
            tail = data[k:]
            if any(len(v) > len(tail) and v.startswith(tail) for v in self._secrets):
                return k
        return len(data)

    def feed(self, data: bytes) -> bytes:
        if self._pattern is None:
            return data
        buf = self._held + data
        out = bytearray()
        pos = 0
        while True:
            pending = self._pending(buf, pos)
            match = self._pattern.search(buf, pos)
            if match is not None and match.start() < pending:
                # Final: no longer secret can still start there (it would be pending).
                out += buf[pos : match.start()] + MASK
                pos = match.end()
                continue
            out += buf[pos:pending]
            self._held = buf[pending:]
            return bytes(out)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return self._pattern.sub(MASK, held) if self._pattern is not None else held


# -- the log ----------------------------------------------------------------------------------


class LogStream:
    """The phase's log: output is masked as it arrives, kept in a private spool file, and sent
    in chunks of at most 1 MiB at least every ``interval`` seconds. A 409 with another offset
    resends from the server's offset (the spool still has every byte)."""

    def __init__(
        self, client: AgentClient, job: Job, masker: Masker, *, interval: float, spool_dir: Path
    ) -> None:
        self._client = client
        self._job = job
        self._masker = masker
        self._interval = interval
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._spool: IO[bytes] = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
        self._written = 0  # masked bytes in the spool
        self._acked = 0  # bytes the server holds
        self._wake = threading.Event()
        self._closed = threading.Event()
        self.lease_lost = False
        self.broken = ""
        self._thread = threading.Thread(target=self._loop, name=f"logs-{job.job_id}", daemon=True)

    @property
    def offset(self) -> int:
        return self._acked

    def start(self) -> None:
        self._thread.start()

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            masked = self._masker.feed(data)
            self._append(masked)
        if self._written - self._acked >= MAX_LOG_CHUNK:
            self._wake.set()

    def add_secrets(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._masker.add(secrets)

    def line(self, text: str) -> None:
        self.write((text if text.endswith("\n") else text + "\n").encode())

    def _append(self, data: bytes) -> None:
        if data:
            self._spool.seek(0, os.SEEK_END)
            self._spool.write(data)
            self._written += len(data)

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.send()

    def send(self) -> None:
        """Send everything not yet stored on the server (one caller at a time)."""
        with self._send_lock:
            while not self.lease_lost and not self.broken:
                with self._lock:
                    if self._acked >= self._written:
                        return
                    self._spool.seek(self._acked)
                    chunk = self._spool.read(min(MAX_LOG_CHUNK, self._written - self._acked))
                    offset = self._acked
                try:
                    self._client.put_logs(self._job, offset, chunk)
                    self._acked = offset + len(chunk)
                except LogOffset as exc:
                    if 0 <= exc.offset <= self._written:
                        self._acked = exc.offset
                        continue
                    self.broken = f"the server holds {exc.offset} log bytes, more than were sent"
                except LeaseLost:
                    self.lease_lost = True
                except Unreachable as exc:
                    log.warning("log upload failed; will retry", extra={"failure": str(exc)})
                    return
                except ProtocolError as exc:
                    self.broken = str(exc)
                    log.warning(
                        "log upload refused; the log is incomplete",
                        extra={"job_id": self._job.job_id, "failure": str(exc)},
                    )

    def close(self) -> None:
        """Flush what the masker holds, send everything, stop the sender."""
        with self._lock:
            self._append(self._masker.flush())
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self.send()
        self._spool.close()


# -- the job ----------------------------------------------------------------------------------

_versions: dict[str, str] = {}


class JobRun:
    """Runs one claimed job. ``run()`` blocks until the job is finished or dropped; ``cancel``
    and ``abort`` may be called from other threads."""

    def __init__(self, client: AgentClient, job: Job, settings: ExecutorSettings) -> None:
        self.client = client
        self.job = job
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()
        self._cancel: Literal["none", "graceful", "force"] = "none"
        self._aborted = False
        self._lease_lost = False
        self._timed_out = False
        self._done = threading.Event()
        self._deadline = time.monotonic() + max(1.0, job.timeout_s)
        self._log: LogStream | None = None
        self._injection: credentials.Injection | None = None

    # -- signals from the heartbeat or the worker --------------------------------------------

    def _signal(self, sig: signal.Signals) -> None:
        with self._proc_lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def cancel(self, force: bool) -> None:
        """Cancel asked by the server: SIGINT to Terraform, or SIGKILL when ``force``."""
        if force:
            self._cancel = "force"
            self._signal(signal.SIGKILL)
        elif self._cancel == "none":
            self._cancel = "graceful"
            self._signal(signal.SIGINT)

    def abort(self) -> None:
        """The executor is stopping now: kill Terraform; the job errors."""
        self._aborted = True
        self._signal(signal.SIGKILL)

    def _lose_lease(self) -> None:
        self._lease_lost = True
        self._signal(signal.SIGKILL)

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_s
        if interval is None:
            registration = self.client.registration
            interval = registration.heartbeat_s if registration is not None else 10.0
        while not self._done.wait(interval):
            offset = self._log.offset if self._log is not None else 0
            try:
                beat = self.client.heartbeat(self.job, offset)
            except Unreachable as exc:
                log.warning(
                    "heartbeat failed", extra={"job_id": self.job.job_id, "failure": str(exc)}
                )
                continue
            except ProtocolError as exc:
                log.warning(
                    "the job was taken from this agent; stopping Terraform",
                    extra={"job_id": self.job.job_id, "failure": str(exc)},
                )
                self._lose_lease()
                return
            if beat.cancel in ("graceful", "force"):
                log.info("cancel asked", extra={"job_id": self.job.job_id, "cancel": beat.cancel})
                self.cancel(force=beat.cancel == "force")

    # -- running ------------------------------------------------------------------------------

    def run(self) -> Finish | None:
        """Run the job; return what was sent to ``finish`` (``None`` if the job was dropped)."""
        job = self.job
        try:
            self.client.start(job)
        except ProtocolError as exc:
            log.warning(
                "the job could not be started; dropping it",
                extra={"job_id": job.job_id, "failure": str(exc)},
            )
            return None
        heart = threading.Thread(target=self._heartbeat_loop, name=f"hb-{job.job_id}", daemon=True)
        heart.start()
        outcome: Finish
        try:
            with archive.job_directory(self.settings.work_root) as root:
                masker = Masker([job.job_token])
                self._log = LogStream(
                    self.client, job, masker, interval=self.settings.log_interval, spool_dir=root
                )
                self._log.start()
                try:
                    outcome = self._phase(root)
                except Dropped:
                    outcome = Finish("errored", error="dropped")
                except JobFailed as exc:
                    outcome = self._failed(str(exc))
                except (CairnError, OSError) as exc:
                    outcome = self._failed(str(exc) or type(exc).__name__)
                except Exception as exc:  # the run must end, not hang
                    log.exception("job crashed", extra={"job_id": job.job_id})
                    outcome = self._failed(f"the executor failed: {type(exc).__name__}")
                finally:
                    self._close_credentials()
                if outcome.error and not self._lease_lost:
                    self._log.line(outcome.error)
                self._log.close()
                if self._log.lease_lost:
                    self._lease_lost = True
        finally:
            self._done.set()
            heart.join(timeout=5)
        if self._lease_lost:
            log.warning("job dropped: the lease was lost", extra={"job_id": job.job_id})
            return None
        try:
            self.client.finish(job, outcome)
        except ProtocolError as exc:
            log.error("finish was refused", extra={"job_id": job.job_id, "failure": str(exc)})
            return None
        return outcome

    def _close_credentials(self) -> None:
        """The phase is over (whatever its outcome): revoke Vault tokens, delete the files."""
        injection, self._injection = self._injection, None
        if injection is None:
            return
        try:
            injection.close()
        except Exception:  # cleanup must not turn a result into a crash
            log.exception(
                "removing the dynamic credentials failed", extra={"job_id": self.job.job_id}
            )

    def _inject(self, workdir: Path, logstream: LogStream) -> credentials.Injection:
        """Ask the server for the job's dynamic credentials and put them in place (before
        Terraform starts: a misconfiguration fails the phase here)."""
        try:
            grant = credentials.Grant.from_json(self.client.workload_identity(self.job))
        except CredentialsRefused as exc:
            raise JobFailed(exc.detail) from None
        injection = credentials.Injection(
            grant,
            credentials.run_directory(self.settings.work_root, self.job.run_id),
            workdir=workdir,
            endpoints=self.settings.credential_endpoints,
            notify=logstream.line,
            on_secret=logstream.add_secrets,
        )
        self._injection = injection
        return injection.open()

    def _failed(self, reason: str) -> Finish:
        reason = " ".join(reason.split())
        if self._cancel != "none":
            return Finish("canceled", error="the run was canceled")
        return Finish("errored", error=f"Error: {reason}")

    def _check(self) -> None:
        """Between steps: stop when the job was canceled, dropped, aborted or timed out."""
        if self._lease_lost:
            raise Dropped("lease lost")
        if self._cancel != "none":
            raise JobFailed("the run was canceled")
        if self._aborted:
            raise JobFailed("the agent was stopped while the job ran")
        if time.monotonic() > self._deadline:
            raise JobFailed(f"the {self.job.phase} timed out after {int(self.job.timeout_s)}s")

    def _phase(self, root: Path) -> Finish:
        job, settings = self.job, self.settings
        assert self._log is not None
        logstream = self._log
        try:
            binary: Path | None = terraform.find_terraform(
                job.terraform_version,
                search_dir=settings.terraform_path,
                path=(settings.inherited_env or os.environ).get("PATH"),
            )
        except terraform.TerraformSetupError as exc:
            binary, missing = None, exc
        # The header first, always: the CLI drops the first three lines of an apply log.
        version = self._version(binary) if binary is not None else job.terraform_version
        logstream.line(f"Terraform v{version or 'unknown'}")
        logstream.line("")
        logstream.line(HEADER_LINE)
        if binary is None:
            raise missing

        self._check()
        config = self.client.download_configuration(job, settings.max_config_bytes)
        tree = root / "config"
        tree.mkdir(mode=0o700)
        archive.extract(config, tree, max_bytes=settings.max_config_bytes)
        workdir = tree
        if job.working_directory:
            workdir = (tree / job.working_directory.strip("/")).resolve()
            if not workdir.is_relative_to(tree.resolve()) or not workdir.is_dir():
                raise JobFailed(
                    f"the workspace's working directory {job.working_directory!r} is not a "
                    "directory of the configuration"
                )

        self._check()
        variables = self.client.variables(job)
        logstream.add_secrets(variables.sensitive)
        self._check()
        injection = self._inject(workdir, logstream)
        home = root / "home"
        (home / ".terraform.d").mkdir(parents=True, mode=0o700)
        base = (
            settings.tf_cli_config.read_text(encoding="utf-8")
            if settings.tf_cli_config is not None
            else None
        )
        cli_config_file = root / "cli.tfrc"
        fd = os.open(cli_config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(terraform.cli_config(base, job.hostname, job.job_token))
        (workdir / terraform.OVERRIDE_FILE).write_text(
            terraform.backend_override(job.hostname, job.organization_name, job.workspace_name),
            encoding="utf-8",
        )
        if variables.terraform:
            (workdir / terraform.TFVARS_FILE).write_text(
                terraform.render_tfvars(variables.terraform), encoding="utf-8"
            )
        env = terraform.environment(
            settings.inherited_env if settings.inherited_env is not None else os.environ,
            home=home,
            cli_config_file=cli_config_file,
            run_id=job.run_id,
            variables=variables.env,
            ca_file=settings.ca_file,
            organization=job.organization_name,
            workspace=job.workspace_name,
        )
        env.update(injection.env)

        init_out = root / "init.out"
        rc = self._exec(terraform.init_command(binary), workdir, env, capture=init_out)
        if rc != 0:
            logstream.write(init_out.read_bytes())
            self._check()
            raise JobFailed(f"terraform init exited with status {rc}")

        plan_file = workdir / terraform.PLAN_FILE
        if job.phase == "plan":
            rc = self._exec(terraform.plan_command(binary, job.operation), workdir, env)
            if rc != 0:
                self._check()
                raise JobFailed(f"terraform plan exited with status {rc}")
            counts = self._show(binary, workdir, env, root, upload=True)
            self._check()
            self.client.upload_plan(job, plan_file.read_bytes(), "binary")
        else:
            self._check()
            plan_file.write_bytes(self.client.download_plan(job))
            counts = self._show(binary, workdir, env, root, upload=False)
            rc = self._exec(terraform.apply_command(binary), workdir, env)
            if rc != 0:
                self._check()
                raise JobFailed(f"terraform apply exited with status {rc}")
        # Terraform succeeded: a cancel that came too late changes nothing (the apply is done).
        if self._lease_lost:
            raise Dropped("lease lost")
        return Finish(
            "finished",
            has_changes=counts.has_changes,
            additions=counts.additions,
            changes=counts.changes,
            destructions=counts.destructions,
            imports=counts.imports,
        )

    def _show(
        self, binary: Path, workdir: Path, env: dict[str, str], root: Path, *, upload: bool
    ) -> terraform.ChangeCounts:
        out = root / "plan.json"
        rc = self._exec(terraform.show_command(binary), workdir, env, capture=out, stdout_only=True)
        if rc != 0:
            self._check()
            raise JobFailed(f"terraform show -json exited with status {rc}")
        data = out.read_bytes()
        counts = terraform.count_changes(terraform.parse_plan_json(data))
        if upload:
            self._check()
            self.client.upload_plan(self.job, data, "json")
        return counts

    def _version(self, binary: Path) -> str:
        key = str(binary)
        if key not in _versions:
            try:
                proc = subprocess.run(  # noqa: S603 - the operator's terraform binary
                    [key, "version", "-json"],
                    capture_output=True,
                    timeout=30,
                    check=False,
                    env={"PATH": os.defpath, "CHECKPOINT_DISABLE": "1"},
                )
                _versions[key] = str(json.loads(proc.stdout)["terraform_version"])
            except (OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired):
                return self.job.terraform_version or "unknown"
        return _versions[key]

    def _exec(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        *,
        capture: Path | None = None,
        stdout_only: bool = False,
    ) -> int:
        """Run one Terraform command in its own process group. Its output goes to the log (or
        to ``capture``; with ``stdout_only`` stderr still goes to the log). Returns its exit
        status; cancel, abort, lease loss and the phase timeout signal it."""
        self._check()
        assert self._log is not None
        logstream = self._log
        out_file = open(capture, "wb") if capture is not None else None  # noqa: SIM115
        try:
            stdout: int | IO[bytes] = out_file if out_file is not None else subprocess.PIPE
            stderr: int | IO[bytes]
            if out_file is None:
                stderr = subprocess.STDOUT
            elif stdout_only:
                stderr = subprocess.PIPE
            else:
                stderr = subprocess.STDOUT
            with self._proc_lock:
                proc = subprocess.Popen(  # noqa: S603 - argv built from fixed words
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
                self._proc = proc
            if self._cancel == "graceful":
                self._signal(signal.SIGINT)
            elif self._cancel == "force" or self._aborted or self._lease_lost:
                self._signal(signal.SIGKILL)
            pipe = proc.stdout if out_file is None else proc.stderr
            pump = None
            if pipe is not None:
                pump = threading.Thread(target=self._pump, args=(pipe, logstream), daemon=True)
                pump.start()
            # A blocking wait returns the moment Terraform exits (a wait with a timeout polls,
            # up to 50 ms late per command); a timer kills it at the phase's deadline.
            timer = threading.Timer(max(0.0, self._deadline - time.monotonic()), self._time_out)
            timer.daemon = True
            timer.start()
            try:
                rc = proc.wait()
            finally:
                timer.cancel()
            if pump is not None:
                pump.join()
            return rc
        finally:
            with self._proc_lock:
                self._proc = None
            if out_file is not None:
                out_file.close()

    def _time_out(self) -> None:
        """The phase's deadline passed while Terraform ran: kill it (``_check`` then fails the
        job as timed out)."""
        if not self._timed_out:
            self._timed_out = True
            self._signal(signal.SIGKILL)

    @staticmethod
    def _pump(pipe: IO[bytes], logstream: LogStream) -> None:
        fd = pipe.fileno()
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    return
                logstream.write(data)
        finally:
            pipe.close()
