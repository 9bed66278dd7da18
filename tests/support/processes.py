"""Child processes the harness started, and how to stop them.

Every long-running child (cairn servers, the PostgreSQL postmaster) is registered here so that
an interrupted session still leaves nothing behind: fixtures stop their own processes at
teardown, and `reap_all` runs at interpreter exit for whatever survived. Processes are only
ever signalled by the pid we got from `subprocess.Popen`, never by name.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import socket
import subprocess

_live: set[subprocess.Popen[bytes]] = set()


def register(proc: subprocess.Popen[bytes]) -> None:
    """Remember a child so that `reap_all` can stop it if its owner never does."""
    _live.add(proc)


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Send `sig` to the child, wait up to `timeout` seconds, then SIGKILL it.

    Returns the exit status (negative for "killed by signal", as `Popen.returncode`).
    """
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=timeout)
        return proc.returncode
    finally:
        _live.discard(proc)


def kill(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL the child at once (a crash, as far as it can tell) and reap it."""
    return stop(proc, sig=signal.SIGKILL, timeout=15.0)


@atexit.register
def reap_all() -> None:
    """Kill every registered child that is still running (interpreter exit)."""
    for proc in list(_live):
        kill(proc)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: object, limit: int = 8000) -> str:
    """The last `limit` characters of a log file, for error messages ('' if unreadable)."""
    try:
        with open(str(path), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return ""
    return text[-limit:]
