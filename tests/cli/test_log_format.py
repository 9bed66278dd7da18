"""Log lines: JSON for machines (its shape unchanged), text a person reads when stderr is a
terminal, and `CAIRN_LOG_FORMAT=json|text|auto` to choose. Terminals are real pseudo-terminals
(`os.openpty`)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn import logs
from cairn.config import from_environment
from cairn.errors import ConfigError
from tests.support import processes
from tests.support.server import cairn_executable

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO |WARNING|ERROR|CRITICAL) \S"
)


def _record(msg: str = "request", level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("cairn.http", level, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger after a test configured it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def pty_stream() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A text stream on a pseudo-terminal's secondary side, and its primary fd to read."""
    primary, secondary = os.openpty()
    stream = open(secondary, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
    try:
        yield stream, primary
    finally:
        stream.close()
        os.close(primary)


def _read(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


def test_json_lines_keep_their_shape() -> None:
    line = logs.JsonFormatter().format(
        _record(method="GET", status=200, color_message="x", _private=1)
    )
    doc = json.loads(line)
    assert list(doc) == ["ts", "level", "logger", "msg", "method", "status", "color_message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", doc["ts"])
    assert (doc["level"], doc["logger"], doc["msg"], doc["status"]) == (
        "info",
        "cairn.http",
        "request",
        200,
    )


def test_text_lines_are_time_level_event_and_pairs() -> None:
    fmt = logs.TextFormatter()
    line = fmt.format(
        _record(
            method="GET",
            path="/api/v2/ping",
            status=200,
            ms=1.5,
            detail='two "words"',
            empty="",
            tags=["a", "b"],
            color_message="dropped",
        )
    )
    assert TEXT_LINE.match(line), line
    assert line.split("Z INFO  ", 1)[1] == (
        'request  method=GET path=/api/v2/ping status=200 ms=1.5 detail="two \\"words\\"" '
        'empty="" tags=["a","b"] logger=cairn.http'
    )
    assert "\x1b" not in line
    # A message or value spanning lines stays on one line; the traceback follows it.
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record("first\nsecond", logging.ERROR, note="a\nb")
        record.exc_info = sys.exc_info()
    text = fmt.format(record)
    head, *rest = text.splitlines()
    assert 'ERROR "first\\nsecond"  note="a\\nb"' in head
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"


def test_auto_is_text_in_colour_on_a_terminal_and_json_elsewhere(
    root_logging: None, pty_stream: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream, primary = pty_stream
    logs.configure("info", stream=stream)
    logging.getLogger("cairn.http").info("request", extra={"status": 200})
    shown = _read(primary)
    assert "\x1b[" in shown, "colour on a terminal"
    plain = ANSI.sub("", shown).strip()
    assert TEXT_LINE.match(plain) and plain.endswith("request  status=200 logger=cairn.http")

    monkeypatch.setenv("NO_COLOR", "1")
    logs.configure("info", stream=stream)
    logging.getLogger("cairn.http").info("request", extra={"status": 200})
    assert "\x1b" not in _read(primary)

    piped = io.StringIO()
    logs.configure("info", stream=piped)
    logging.getLogger("cairn.http").info("request", extra={"status": 200})
    assert json.loads(piped.getvalue())["status"] == 200

    # Overrides: json on a terminal, text into a pipe (never coloured there).
    logs.configure("info", fmt="json", stream=stream)
    logging.getLogger("cairn.http").info("request")
    assert json.loads(_read(primary))["msg"] == "request"
    piped = io.StringIO()
    logs.configure("info", fmt="text", stream=piped)
    logging.getLogger("cairn.http").warning("slow")
    assert TEXT_LINE.match(piped.getvalue()) and "\x1b" not in piped.getvalue()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "auto"),
        ({"CAIRN_LOG_FORMAT": "json"}, "json"),
        ({"CAIRN_LOG_FORMAT": "TEXT"}, "text"),
        ({"CAIRN_LOG_PLAIN": "1"}, "text"),
        ({"CAIRN_LOG_PLAIN": "1", "CAIRN_LOG_FORMAT": "json"}, "json"),
    ],
)
def test_log_format_setting(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("CAIRN_LOG_FORMAT", "CAIRN_LOG_PLAIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert from_environment(data_dir=str(tmp_path)).log_format == expected


def test_a_bad_log_format_stops_the_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAIRN_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="CAIRN_LOG_FORMAT must be auto, json or text"):
        from_environment(data_dir=str(tmp_path))


@pytest.mark.e2e
def test_cairn_serve_logs_text_to_a_terminal(tmp_path: Path) -> None:
    """The real server with its stderr on a pseudo-terminal writes lines a person reads."""
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "NO_COLOR"))}
    env.update(CAIRN_DATA_DIR=str(tmp_path / "data"), CAIRN_LISTEN=f"127.0.0.1:{port}")
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [str(cairn_executable()), "serve", "--plain-http"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
    )
    processes.register(proc)
    os.close(secondary)
    seen = b""
    try:
        while b"startup complete" not in seen:
            ready, _, _ = select.select([primary], [], [], 60)
            assert ready, f"no startup line; so far: {seen!r}"
            try:
                seen += os.read(primary, 65536)
            except OSError:  # the server exited: the terminal closed
                break
    finally:
        processes.stop(proc)
        os.close(primary)
    lines = [ANSI.sub("", line) for line in seen.decode().splitlines()]
    started = [line for line in lines if "Application startup complete." in line]
    assert started, lines
    assert TEXT_LINE.match(started[0]), started[0]
    assert "logger=uvicorn.error" in started[0]
    assert not any(line.lstrip().startswith("{") for line in lines), lines
