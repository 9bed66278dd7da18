"""A real `cairn serve` process for end-to-end tests.

`CairnServer` runs the installed console script (`<venv>/bin/cairn`) on 127.0.0.1 and a free
port, with its own data directory, and waits for `/readyz`. By default it serves HTTPS with the
development CA cairn creates in `<data-dir>/tls/`; `plain_http=True` serves plain HTTP. It can
be stopped gracefully (SIGTERM), killed (SIGKILL) and started again on the same port and data
directory, which is what restart/crash tests need.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import processes

READY_TIMEOUT = 60.0

# Servers currently running, so a failing test's report can show their error logs.
_running: list[CairnServer] = []


def running_servers() -> list[CairnServer]:
    """Every CairnServer started by this process and not yet stopped."""
    return [srv for srv in _running if srv.running]


def cairn_executable() -> Path:
    """The `cairn` console script of the interpreter running the tests."""
    path = Path(sys.executable).parent / "cairn"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make install`")
    return path


@dataclass
class CairnServer:
    """One cairn server process. Construct, then `start()`; always `stop()` at teardown."""

    data_dir: Path
    database_url: str | None = None
    plain_http: bool = False
    admin_token: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None
    _starts: int = 0

    # -- addresses -------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The hostname clients use: `localhost` (the dev certificate's name) or 127.0.0.1."""
        return "127.0.0.1" if self.plain_http else "localhost"

    @property
    def hostname(self) -> str:
        """`host:port`, the Terraform hostname of this server (real discovery, HTTPS only)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, also passed to cairn as its public URL."""
        scheme = "http" if self.plain_http else "https"
        return f"{scheme}://{self.hostname}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v2/"

    @property
    def ca_bundle(self) -> Path | None:
        """System CAs + cairn's dev CA (SSL_CERT_FILE for Terraform); None for plain HTTP."""
        return None if self.plain_http else self.data_dir / "tls" / "ca-bundle.pem"

    @property
    def ca_cert(self) -> Path | None:
        return None if self.plain_http else self.data_dir / "tls" / "ca.pem"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """Where the server's stdout+stderr go (one file across restarts, appended)."""
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What to pass as httpx `verify=`: a context trusting the dev CA, or True."""
        if self.ca_bundle is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        """An httpx client for this server, with JSON:API headers and a bearer token."""
        headers = {"Accept": "application/vnd.api+json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(
            base_url=self.url,
            verify=self.ssl_context(),
            headers=headers,
            timeout=30.0,
            **kwargs,  # type: ignore[arg-type]
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def command(self) -> list[str]:
        args = [
            str(cairn_executable()),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--public-url",
            self.url,
        ]
        if self.database_url:
            args += ["--database-url", self.database_url]
        if self.plain_http:
            args.append("--plain-http")
        return args + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        """The parent's environment minus any CAIRN_* settings, plus ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
        if self.admin_token is not None:
            env["CAIRN_ADMIN_TOKEN"] = self.admin_token
        env.update(self.env)
        return env

    def start(self, timeout: float = READY_TIMEOUT) -> CairnServer:
        """Start the process (same port and data dir on restarts) and wait for /readyz."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"cairn server pid {self._proc.pid} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = processes.free_port()
        self._starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self._starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.register(self._proc)
        if self not in _running:
            _running.append(self)
        try:
            self.wait_ready(timeout)
        except BaseException:
            processes.kill(self._proc)
            raise
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll GET /readyz until 200; fail with the server's output if it dies or times out."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last = "no attempt yet"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"cairn server exited with {self._proc.returncode} before it was ready; "
                    f"output:\n{self.output()}"
                )
            if self.ca_bundle is not None and not self.ca_bundle.exists():
                last = f"{self.ca_bundle} does not exist yet"
                time.sleep(0.1)
                continue
            try:
                with httpx.Client(verify=self.ssl_context(), timeout=2.0) as http:
                    response = http.get(f"{self.url}/readyz")
                if response.status_code == 200:
                    return
                last = f"/readyz answered {response.status_code}: {response.text[:500]}"
            except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise RuntimeError(
            f"cairn server (pid {self._proc.pid}) not ready after {timeout}s ({last}); "
            f"output:\n{self.output()}"
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful stop), SIGKILL after `timeout`. Returns the exit status."""
        if self._proc is None:
            return None
        status = processes.stop(self._proc, timeout=timeout)
        self._proc = None
        self._forget()
        return status

    def kill9(self) -> int | None:
        """SIGKILL: a crash, as far as the server can tell."""
        if self._proc is None:
            return None
        status = processes.kill(self._proc)
        self._proc = None
        self._forget()
        return status

    def _forget(self) -> None:
        for i, srv in enumerate(_running):
            if srv is self:
                del _running[i]
                break

    def restart(self, timeout: float = READY_TIMEOUT) -> CairnServer:
        """Graceful stop, then start again on the same port, data dir and database."""
        self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output(self, limit: int = 8000) -> str:
        """The tail of the server's combined stdout/stderr, for failure messages."""
        return processes.tail(self.log_path, limit)

    def errors(self, limit: int = 5) -> str:
        """The last `limit` error records of cairn's JSON log, with tracebacks, readable."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        records: list[str] = []
        for line in lines:
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if str(record.get("level", "")).lower() in ("error", "critical"):
                text = f"{record.get('ts', '')} {record.get('logger', '')}: {record.get('msg', '')}"
                extra = {k: v for k, v in record.items() if k not in _LOG_KEYS}
                if extra:
                    text += f" {extra}"
                if record.get("exc"):
                    text += f"\n{record['exc']}"
                records.append(text)
        return "\n\n".join(records[-limit:])


_LOG_KEYS = frozenset({"ts", "level", "logger", "msg", "exc"})
