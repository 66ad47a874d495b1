"""The installer's readiness wait: it ends at once when the server it started has exited."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from appliance.ops.install_support import wait_ready
from tests.conftest import free_port


def test_a_server_that_exited_ends_the_wait_at_once(tmp_path, capsys):
    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[server]\nport = {free_port()}\n')
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    while dead.poll() is None:
        time.sleep(0.05)
    assert wait_ready(str(config), timeout=600, pid=dead.pid) == 1
    assert f"the server (pid {dead.pid}) exited" in capsys.readouterr().err


def test_an_exited_child_not_yet_reaped_counts_as_gone(tmp_path):
    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[server]\nport = {free_port()}\n')
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{zombie.pid}/stat")
    deadline = time.monotonic() + 60
    # Exited and not waited for (no poll(), which would reap it): a zombie until the end of this test.
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert wait_ready(str(config), timeout=600, pid=zombie.pid) == 1
    finally:
        zombie.wait()


def test_without_a_pid_it_waits_for_the_timeout(tmp_path):
    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[server]\nport = {free_port()}\n')
    assert wait_ready(str(config), timeout=1.5) == 1
