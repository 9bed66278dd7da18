"""The data directory (findings M5 and L4): private modes whatever the umask, SQLite's WAL and
SHM as private as the database, loose modes tightened, one lock holder per SQLite database
(another process is refused; the lock goes with its holder, even on kill -9)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cairn import datadir
from cairn.config import from_environment, parse_proxies
from cairn.db.engine import make_engine
from cairn.errors import ConfigError


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_database_wal_and_shm_are_0600_under_umask_022(
    tmp_path: Path, loose_umask: None
) -> None:
    db = tmp_path / "cairn.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        names = {p.name: _mode(p) for p in tmp_path.iterdir()}
    finally:
        engine.dispose()
    assert {"cairn.db", "cairn.db-wal", "cairn.db-shm"} <= set(names)
    assert set(names.values()) == {0o600}, names


def test_prepare_creates_private_and_tightens_loose_modes(
    tmp_path: Path, loose_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "new" / "data"
    datadir.prepare(data, f"sqlite:///{data / 'cairn.db'}")
    assert _mode(data) == 0o700
    assert _mode(data / "cairn.db") == 0o600
    assert not caplog.records

    for path, mode in ((data, 0o755), (data / "cairn.db", 0o644)):
        path.chmod(mode)
    (data / "blobs").mkdir(mode=0o755)
    (data / "cairn.db-wal").touch(mode=0o644)
    datadir.prepare(data, f"sqlite:///{data / 'cairn.db'}")
    for path in (data, data / "blobs"):
        assert _mode(path) == 0o700
    for path in (data / "cairn.db", data / "cairn.db-wal"):
        assert _mode(path) == 0o600
    (warning,) = caplog.records
    assert "access was taken away" in warning.getMessage()


def test_postgres_data_dir_is_private_but_takes_no_lock(tmp_path: Path) -> None:
    url = "postgresql://cairn@db.example/cairn"
    datadir.prepare(tmp_path / "d", url)
    assert _mode(tmp_path / "d") == 0o700
    first, second = datadir.lock(tmp_path / "d", url), datadir.lock(tmp_path / "d", url)
    assert first.fds == [] and second.fds == []


_HOLD = """
import sys, time
from pathlib import Path
from cairn import datadir
held = datadir.lock(Path(sys.argv[1]), sys.argv[2])
print("locked", flush=True)
time.sleep(600)
"""


def test_lock_refuses_another_process_and_is_freed_by_kill9(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cairn.db'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path), url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(ConfigError) as refused:
            datadir.lock(tmp_path, url)
        assert f"pid {holder.pid}" in str(refused.value)
        assert "PostgreSQL" in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    datadir.lock(tmp_path, url).release()  # at once: the kernel released it


def test_a_database_outside_the_data_dir_is_locked_too(tmp_path: Path) -> None:
    elsewhere = tmp_path / "db" / "shared.db"
    elsewhere.parent.mkdir()
    url = f"sqlite:///{elsewhere}"
    (tmp_path / "a").mkdir()
    held = datadir.lock(tmp_path / "a", url)
    assert len(held.fds) == 2  # the data dir's lock and the database's
    (tmp_path / "b").mkdir()
    script = (
        "import sys; from pathlib import Path; from cairn import datadir; "
        "datadir.lock(Path(sys.argv[1]), sys.argv[2])"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "b"), url],
        capture_output=True,
        text=True,
        check=False,
    )
    held.release()
    assert other.returncode != 0 and "another cairn server" in other.stderr


def test_trusted_proxies_and_timeouts_are_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_proxies(" 10.0.0.5, 10.1.0.0/16 ,::1,") == ("10.0.0.5", "10.1.0.0/16", "::1")
    with pytest.raises(ConfigError, match="CIDR"):
        parse_proxies("10.0.0.5,proxy.example")
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path))
    defaults = from_environment()
    assert defaults.trusted_proxies == ()
    assert defaults.header_timeout.total_seconds() == 10
    assert defaults.body_timeout.total_seconds() == 60
    monkeypatch.setenv("CAIRN_HEADER_TIMEOUT", "0")
    with pytest.raises(ConfigError, match="CAIRN_HEADER_TIMEOUT"):
        from_environment()
