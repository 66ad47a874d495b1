"""Structured logging: JSON lines for journals and collectors, readable lines on a terminal, plus an in-memory ring."""

from __future__ import annotations

import itertools
import json
import logging
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from typing import TextIO

# Record attributes that are not the caller's `extra` fields; uvicorn's `color_message` is an ANSI
# copy of the message.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _record_fields(record: logging.LogRecord) -> dict:
    out = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = _record_fields(record)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        line = f"{datetime.fromtimestamp(record.created).strftime('%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


LEVELS = ("debug", "info", "warning", "error", "critical")


class LogRing(logging.Handler):
    """The latest structured log lines, in memory, for `GET /api/v1/admin/logs` (the console's
    log view): the stream handler's output may go to a journal the API cannot read."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__(level=logging.DEBUG)
        self._lines: deque[dict] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._ring_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = _record_fields(record)
            # Round-trip through JSON now: extras may be live objects that change or are not
            # serialisable later, when a client reads them.
            line = json.loads(json.dumps(fields, default=str))
            if record.exc_info:
                line["exc"] = logging.Formatter().formatException(record.exc_info)
        except Exception:
            self.handleError(record)
            return
        with self._ring_lock:
            line["seq"] = next(self._seq)
            self._lines.append(line)

    def recent(self, level: str | None = None, limit: int = 200, after: int = 0) -> list[dict]:
        """Oldest first; `level` keeps that level and above, `after` only lines with a greater seq."""
        floor = _rank(level or "debug")
        with self._ring_lock:
            lines = list(self._lines)
        kept = [ln for ln in lines if ln["seq"] > after and _rank(ln["level"]) >= floor]
        return kept[-limit:] if limit > 0 else []


def _rank(level: str) -> int:
    # A custom level name ranks with info: shown unless the reader asks for warnings and above.
    return LEVELS.index(level) if level in LEVELS else 1


_ring: LogRing | None = None
_ring_guard = threading.Lock()


def log_ring() -> LogRing:
    """The process's ring, attached to the root logger on first use (logging is process-wide)."""
    global _ring
    with _ring_guard:
        if _ring is None:
            _ring = LogRing()
        root = logging.getLogger()
        if _ring not in root.handlers:
            root.addHandler(_ring)
        return _ring


def choose_format(fmt: str, stream: TextIO) -> str:
    """ "json" or "text": an explicit choice stands; "auto" is text for a person at a terminal
    (`make run`) and JSON otherwise (systemd's journal, a pipe, a file)."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # no fileno, or already closed: not a terminal
        return "json"


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if choose_format(fmt, sys.stderr) == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    log_ring()
    root.setLevel(level.upper())
    # Huey logs every task at INFO; that is noise next to our own job logs.
    logging.getLogger("huey").setLevel(logging.WARNING)
    for noisy in ("httpx", "sentence_transformers", "transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
