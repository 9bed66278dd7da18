"""Structured logging on stderr: JSON lines for machines, or lines a person reads on a terminal.

The format (``CAIRN_LOG_FORMAT``):

- ``json``: one JSON object per line (``ts``, ``level``, ``logger``, ``msg`` and the record's
  extra fields) — what log shippers and the tests read; its shape does not change;
- ``text``: ``2026-12-01 02:36:29.737Z INFO  request  method=GET status=200 … logger=cairn.http``
  — time (UTC), level, event, then ``key=value`` pairs (values with spaces quoted as JSON), in
  colour when the stream is a terminal and ``NO_COLOR`` is not set;
- ``auto`` (the default): ``text`` when stderr is a terminal, ``json`` otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["auto", "json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "text")

# The events of the request in progress that ride on its access-log line (set by
# ``cairn.tfeapi.observe`` for the requests it logs): one line per request, not one more per
# audit event. None outside such a request.
request_events: ContextVar[list[dict[str, Any]] | None] = ContextVar(
    "cairn_request_events", default=None
)


def join_request_line(fields: dict[str, Any]) -> bool:
    """Add ``fields`` to the access-log line of the request in progress; False when there is
    none (then the caller logs a line of its own)."""
    events = request_events.get()
    if events is None:
        return False
    events.append(fields)
    return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
# Extras that repeat the message for another medium (uvicorn's ANSI-coloured copy).
_TEXT_SKIPPED = frozenset({"color_message"})


def _extras(record: logging.LogRecord) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")]


_ENCODER = json.JSONEncoder(default=str)  # made once: json.dumps(default=...) makes one per call


class JsonFormatter(logging.Formatter):
    """One JSON object per record (hot: every access-log line goes through it)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def _timestamp(self, created: float) -> str:
        """``2026-12-01T02:36:29.737123Z``; the part up to the second is made once a second."""
        second = int(created)
        micros = round((created - second) * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{micros:06d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record):
            out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(out)


_LEVEL_STYLE = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[1;31m",
    "CRITICAL": "\x1b[1;37;41m",
}
_DIM, _BOLD, _RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"


def text_value(value: Any) -> str:
    """A value of a ``key=value`` pair: bare when it is one plain word, JSON otherwise (so a
    line splits unambiguously, and control characters never reach the terminal)."""
    if isinstance(value, str):
        plain = value and value.isprintable() and not any(c in value for c in ' ="\\')
        return value if plain else json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    return text_value(str(value))


class TextFormatter(logging.Formatter):
    """One line per record for a person: time, level, event, ``key=value`` pairs."""

    def __init__(self, *, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        stamp = at.strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        level = record.levelname
        message = record.getMessage()
        # A message spanning lines would pass for several records.
        event = message if message.isprintable() else json.dumps(message, ensure_ascii=False)
        pairs = [(k, text_value(v)) for k, v in _extras(record) if k not in _TEXT_SKIPPED] + [
            ("logger", record.name)
        ]
        if self.colour:
            style = _LEVEL_STYLE.get(level, "")
            head = f"{_DIM}{stamp}{_RESET} {style}{level:<5}{_RESET} {_BOLD}{event}{_RESET}"
            tail = " ".join(f"{_DIM}{k}={_RESET}{v}" for k, v in pairs)
        else:
            head = f"{stamp} {level:<5} {event}"
            tail = " ".join(f"{k}={v}" for k, v in pairs)
        text = f"{head}  {tail}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


# The previous name of the text formatter.
PlainFormatter = TextFormatter


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def resolve_format(fmt: str, stream: TextIO) -> Literal["json", "text"]:
    """``json`` or ``text`` for ``fmt`` (``auto``: text on a terminal)."""
    if fmt == "json":
        return "json"
    if fmt == "text":
        return "text"
    return "text" if _is_terminal(stream) else "json"


def make_formatter(fmt: str, stream: TextIO) -> logging.Formatter:
    if resolve_format(fmt, stream) == "json":
        return JsonFormatter()
    return TextFormatter(colour=_is_terminal(stream) and not os.environ.get("NO_COLOR"))


def configure(
    level: str = "info",
    *,
    fmt: str = "auto",
    json_lines: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every log record to ``stream`` (stderr) in ``fmt`` (``auto``, ``json``, ``text``).
    ``json_lines`` (older callers) forces ``json`` (True) or ``text`` (False)."""
    if json_lines is not None:
        fmt = "json" if json_lines else "text"
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(make_formatter(fmt, out))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel("WARNING")  # cairn logs requests itself
    # httpx logs every request of the executors at info (claims, log chunks): the server logs
    # them already, and an agent's own lines say what it does.
    logging.getLogger("httpx").setLevel("WARNING")
