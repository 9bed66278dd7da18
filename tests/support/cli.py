"""The `cairn` client commands as users run them: the installed console script in a subprocess,
against a real server (`cli_server`: one HTTPS server on SQLite per test module, with the
development CA).

`CliRunner` runs `cairn ARGS…` with CAIRN_URL / CAIRN_TOKEN / CAIRN_DATA_DIR for the server, in
an environment free of the machine's CAIRN_* and SSL_CERT_* settings, with an empty XDG data
home and an empty working directory, so no trust leaks in from the machine. `ok` and `failed`
check a `Result` the way every CLI test does.

Fixtures (registered by the conftest.py of tests/cli, tests/tokens and tests/audit):
`cli_server`, `admin` (an httpx client for it, as the site admin) and `cairn` (a `CliRunner` as
the site admin).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server
from tests.support.server import CairnServer, cairn_executable


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(
    server: CairnServer,
    token: str,
    *args: str,
    cwd: Path,
    home: Path,
    env: Mapping[str, str | None] | None = None,
    stdin: str = "",
) -> Result:
    """`cairn ARGS…` against `server` with `token`, run in `cwd` with XDG_DATA_HOME=`home`.
    `env` entries override the environment (None removes a variable)."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CAIRN_", "SSL_CERT_")) and k != "COLUMNS"
    }
    environ.update(
        XDG_DATA_HOME=str(home),
        CAIRN_URL=server.url,
        CAIRN_TOKEN=token,
        CAIRN_DATA_DIR=str(server.data_dir),
    )
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    proc = subprocess.run(
        [str(cairn_executable()), *args],
        env=environ,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class CliRunner:
    """`cairn ARGS…` for one server as one person (`token=` runs one command as someone
    else), in a working directory and XDG data home of the test's own."""

    server: CairnServer
    token: str
    workdir: Path
    home: Path

    @classmethod
    def in_dir(cls, server: CairnServer, token: str, tmp_path: Path) -> CliRunner:
        """A runner using `tmp_path/cwd` and `tmp_path/xdg` (created, empty)."""
        workdir, home = tmp_path / "cwd", tmp_path / "xdg"
        workdir.mkdir(exist_ok=True)
        home.mkdir(exist_ok=True)
        return cls(server, token, workdir, home)

    def __call__(
        self,
        *args: str,
        token: str | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: Path | None = None,
        stdin: str = "",
    ) -> Result:
        return run_cli(
            self.server,
            token or self.token,
            *args,
            cwd=cwd or self.workdir,
            home=self.home,
            env=env,
            stdin=stdin,
        )


def ok(result: Result) -> Result:
    assert result.returncode == 0, str(result)
    assert "error" not in result.stderr.lower(), str(result)
    return result


def failed(result: Result, *says: str) -> str:
    """Assert exit 1 with an `error: …` line on stderr containing each of `says`; return it."""
    assert result.returncode == 1, str(result)
    assert result.stdout == "", str(result)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, str(result)
    for text in says:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert "Traceback" not in result.stderr
    return lines[0]


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_server(
    request: pytest.FixtureRequest, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CairnServer]:
    """One HTTPS server on SQLite for the whole module."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    srv = start_server(request, tmp_path_factory.mktemp(f"cairn-{name}"), "sqlite", admin_token)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def admin(cli_server: CairnServer, admin_token: str) -> Iterator[httpx.Client]:
    """An httpx client for `cli_server`, as the site admin."""
    with cli_server.client(admin_token) as client:
        yield client


@pytest.fixture
def cairn(cli_server: CairnServer, admin_token: str, tmp_path: Path) -> CliRunner:
    """Run `cairn ARGS…` against `cli_server` as the site admin."""
    return CliRunner.in_dir(cli_server, admin_token, tmp_path)
