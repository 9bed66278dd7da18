"""The data directory: private to the account that runs cairn, and used by one server at a time.

What it holds is as sensitive as the server itself: ``cairn.db`` keeps every state output
(sensitive ones included) in clear, user emails and the audit log; ``secret.key`` seals the
signing keys; ``blobs/`` holds the state files. So:

- **private** (``prepare``): the directory is 0700, the SQLite database and its ``-wal``,
  ``-shm`` and ``-journal`` files 0600, ``blobs/`` and ``tls/`` 0700, whatever the umask. SQLite
  gives a database's WAL, SHM and journal the mode of the database file, so a database created
  0600 (``private_file``) keeps them private; ``cairn serve`` also runs with umask 077, so
  nothing it creates later (blob directories, temporary files) is readable by others. An
  existing directory or database that others can read is **tightened** at start, with a
  warning: taking access away cannot break cairn, while refusing to start would leave the data
  exposed until someone acts (``secret.key`` is refused instead, by ``crypto``, because a key
  that others could read must be replaced, which only the operator can decide).
- **one server** (``lock``): two ``cairn serve`` on one SQLite database would each keep their
  own in-memory view of the signing keys (SQLite has no NOTIFY), so an emergency rotation on
  one would not reach the other. The second is refused at start: each server holds an
  exclusive ``flock`` on ``cairn.lock`` in the data directory (and on ``<database>.lock`` when
  the database lives elsewhere) for its whole life; the kernel releases it when the process
  ends, even by ``kill -9``, so a restart never finds a stale lock. PostgreSQL replicas share a
  database by design and take no lock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cairn.errors import ConfigError

log = logging.getLogger("cairn")

DIR_MODE = 0o700
FILE_MODE = 0o600
# The files SQLite keeps beside a database.
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
# Directories inside the data dir that hold private data.
PRIVATE_SUBDIRS = ("blobs", "tls")
LOCK_NAME = "cairn.lock"


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a ``sqlite:///PATH`` URL; None for other databases and in-memory ones."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        return None
    path = database_url[len(prefix) :].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


def private_dir(path: Path) -> list[str]:
    """Create ``path`` (and missing parents) 0700, or tighten it to 0700 if others may enter
    or read it. Returns what was tightened (for the start warning)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return _tighten(path, DIR_MODE)


def private_file(path: Path) -> list[str]:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite then gives its WAL,
    SHM and journal the same mode), or tighten it to 0600. Returns what was tightened."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return _tighten(path, FILE_MODE)
    os.close(fd)
    return []


def private_sqlite(database: Path) -> list[str]:
    """The database file (created if missing) and whichever of its WAL, SHM and journal exist,
    0600; nothing when its directory is missing (SQLite then says so). Returns what was
    tightened."""
    if not database.parent.is_dir():
        return []
    changed = private_file(database)
    for suffix in SQLITE_SUFFIXES[1:]:
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            changed += _tighten(companion, FILE_MODE)
    return changed


def prepare(data_dir: Path, database_url: str) -> None:
    """Make the data directory private (see the module docstring): 0700 directories, 0600
    SQLite files, existing ones tightened with a warning. Raises ConfigError when a mode cannot
    be changed (another account owns the file)."""
    changed = private_dir(data_dir)
    for name in PRIVATE_SUBDIRS:
        sub = data_dir / name
        # The directories inside are unreachable for others once these are 0700 (walking a
        # large blob store at every start would cost more than it adds).
        if sub.is_dir():
            changed += _tighten(sub, DIR_MODE)
    database = sqlite_path(database_url)
    if database is not None:
        changed += private_sqlite(database)
    if changed:
        log.warning(
            "other users could read cairn's data; access was taken away. Whatever they could "
            "read (state outputs, emails, the audit log) may have been copied already",
            extra={"tightened": changed},
        )


def _tighten(path: Path, mode: int) -> list[str]:
    current = stat.S_IMODE(path.stat().st_mode)
    if not current & 0o077:
        return []
    try:
        os.chmod(path, current & ~0o077 | (mode & 0o700))
    except PermissionError as exc:
        raise ConfigError(
            f"{path} is readable by other users (mode {current:o}) and cairn cannot change "
            f"that (it belongs to another account); run: chmod {mode:o} {path}"
        ) from exc
    return [f"{path} {current:o}→{current & ~0o077 | (mode & 0o700):o}"]


@dataclass
class DataDirLock:
    """Exclusive locks held for the life of the process (see ``lock``)."""

    fds: list[int] = field(default_factory=list)

    def release(self) -> None:
        """Give the locks up (the kernel does it anyway when the process ends)."""
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def lock(data_dir: Path, database_url: str) -> DataDirLock:
    """Take the data directory's lock (and the SQLite database's, when it lives elsewhere) for
    this process; PostgreSQL: no lock. Raises ConfigError naming the other server's pid when
    another process holds it."""
    held = DataDirLock()
    database = sqlite_path(database_url)
    if database is None:
        return held
    paths = [data_dir / LOCK_NAME]
    if database.parent.resolve() != data_dir.resolve():
        paths.append(database.with_name(database.name + ".lock"))
    try:
        for path in paths:
            held.fds.append(_lock_file(path, data_dir, database))
    except BaseException:
        held.release()
        raise
    return held


def _lock_file(path: Path, data_dir: Path, database: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"cannot lock {path}: {exc.strerror}") from exc
        who = f"pid {other}" if other.isdigit() else "another process"
        raise ConfigError(
            f"another cairn server ({who}) is already using the data directory {data_dir} "
            f"(SQLite database {database}); stop it first. Several servers need PostgreSQL "
            "(CAIRN_DATABASE_URL=postgresql://…), one data directory each"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
