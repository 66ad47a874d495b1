"""The log format: readable lines on a terminal, JSON lines elsewhere (systemd, pipes), unless set."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from appliance.config import load_settings
from tests.conftest import REPO

PROBE = (
    "import logging, sys\n"
    "from appliance.observability.logs import configure_logging\n"
    "configure_logging('info', sys.argv[1])\n"
    # uvicorn passes an ANSI copy of its message along; neither format repeats it
    "logging.getLogger('probe').info('hello', extra={'n': 1, 'color_message': 'hello!'})\n"
)


def _stderr_line(fmt: str, terminal: bool) -> str:
    """What a process that configured logging with `fmt` writes to its stderr, a pty or a pipe."""
    command = [sys.executable, "-c", PROBE, fmt]
    if not terminal:
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120).stderr.strip()
    controller, terminal_end = pty.openpty()
    try:
        subprocess.run(
            command, stderr=terminal_end, stdout=subprocess.DEVNULL, cwd=REPO, timeout=120, check=True
        )
        return os.read(controller, 65536).decode().strip()
    finally:
        os.close(terminal_end)
        os.close(controller)


def test_auto_is_text_on_a_terminal_and_json_otherwise():
    on_terminal = _stderr_line("auto", terminal=True)
    assert (
        "INFO" in on_terminal and on_terminal.endswith("probe: hello n=1") and not on_terminal.startswith("{")
    )
    piped = json.loads(_stderr_line("auto", terminal=False))
    assert piped.pop("ts") and piped == {"level": "info", "logger": "probe", "msg": "hello", "n": 1}


def test_an_explicit_format_wins():
    assert json.loads(_stderr_line("json", terminal=True))["msg"] == "hello"
    assert "probe: hello n=1" in _stderr_line("text", terminal=False)


def test_the_default_is_auto_and_the_environment_sets_it(monkeypatch, tmp_path):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("APPLIANCE_LOG_FORMAT", raising=False)
    assert load_settings().log_format == "auto"
    monkeypatch.setenv("APPLIANCE_LOG_FORMAT", "text")
    assert load_settings().log_format == "text"
