"""A throw-away PostgreSQL cluster for one test session.

The cluster lives in a fresh directory under the system temp dir, listens on 127.0.0.1 on a
free port with `trust` authentication, and is tuned for speed (no fsync). PostgreSQL refuses to
run as root, so when the tests run as root the server runs as the `postgres` OS user (set
directly on the child with `Popen(user=...)`, which keeps the postmaster's pid ours to signal).
Each test that needs a database asks for a fresh one with `create_database`.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg

from tests.support import processes


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The directory holding initdb and postgres: newest /usr/lib/postgresql/*/bin, or PATH."""

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([0-9.]+)/bin/", path)
        return tuple(int(p) for p in match.group(1).split(".") if p) if match else ()

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    for initdb in candidates:
        bindir = Path(initdb).parent
        if (bindir / "postgres").is_file():
            return bindir
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(os.path.realpath(on_path)).parent
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin or "
        "on PATH; `make postgres-available` installs Debian's postgresql"
    )


@dataclass
class PostgresCluster:
    """One running cluster; `start()` it, `create_database()` per test, `stop()` at the end."""

    bindir: Path
    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cairn-pg-")))
    port: int = 0
    user: str = "postgres"
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _run_as(self) -> str | None:
        """The OS user to run PostgreSQL as: `postgres` when we are root, else ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError(
                "tests run as root but there is no `postgres` OS user to run PostgreSQL as"
            ) from exc
        return "postgres"

    def _spawn(self, args: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start a PostgreSQL program with a minimal environment, output to `log`."""
        run_as = self._run_as()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=run_as,
            group=run_as,
            extra_groups=[] if run_as else None,
        )

    def start(self, timeout: float = 60.0) -> None:
        """initdb, start the postmaster and wait until it accepts connections."""
        run_as = self._run_as()
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        os.chmod(self.base_dir, 0o700)

        with open(self.base_dir / "initdb.log", "wb") as log:
            initdb = self._spawn(
                [
                    str(self.bindir / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--auth",
                    "trust",
                    "--username",
                    self.user,
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                ],
                log,
            )
            if initdb.wait(timeout=120) != 0:
                raise RuntimeError(
                    f"initdb failed (exit {initdb.returncode}):\n"
                    f"{processes.tail(self.base_dir / 'initdb.log')}"
                )

        self.port = processes.free_port()
        log_fh = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
        try:
            self._proc = self._spawn(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.base_dir),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ],
                log_fh,
            )
        finally:
            log_fh.close()
        processes.register(self._proc)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self._proc.returncode} while starting:\n"
                    f"{processes.tail(self.log_path)}"
                )
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.1)
        raise RuntimeError(
            f"postgres did not accept connections within {timeout}s ({last_error}):\n"
            f"{processes.tail(self.log_path)}"
        )

    def url(self, database: str) -> str:
        """A libpq URL for `database` on this cluster (the form cairn's --database-url takes)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "cairn") -> str:
        """Create a fresh, empty database and return its URL."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster by pid, then remove the cluster directory."""
        if self._proc is not None:
            processes.stop(self._proc, sig=signal.SIGINT, timeout=30.0)
            self._proc = None
        shutil.rmtree(self.base_dir, ignore_errors=True)
