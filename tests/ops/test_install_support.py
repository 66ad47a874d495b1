"""The installer's readiness wait: it ends at once when the server it started has exited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from appliance.index.sync import REBUILD_PROGRESS
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


def test_a_rebuild_that_reports_progress_is_waited_for_past_the_timeout(tmp_path, capsys):
    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[server]\nport = {free_port()}\n')
    progress = tmp_path / "index" / REBUILD_PROGRESS
    progress.parent.mkdir()

    def rebuild() -> None:  # ten reports 0.3 s apart: the last comes well after a 1 s timeout
        for n in range(1, 11):
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"index": "vectors", "chunks_done": n * 1000, "chunks": 10_000, "seconds": n})
            )
            os.replace(tmp, progress)
            time.sleep(0.3)

    writer = threading.Thread(target=rebuild)
    writer.start()
    try:
        assert wait_ready(str(config), timeout=1.0) == 1  # no server ever answers
    finally:
        writer.join()
    out = capsys.readouterr().out
    assert "rebuilding the vectors index from the catalogue: 10000 of 10000 chunks" in out


def test_a_stale_progress_file_does_not_extend_the_wait(tmp_path, capsys):
    config = tmp_path / "appliance.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[server]\nport = {free_port()}\n')
    progress = tmp_path / "index" / REBUILD_PROGRESS
    progress.parent.mkdir()
    progress.write_text(json.dumps({"index": "bm25", "chunks_done": 5, "chunks": 9, "seconds": 1}))
    an_hour_ago = time.time() - 3600
    os.utime(progress, (an_hour_ago, an_hour_ago))  # left by a rebuild that crashed
    assert wait_ready(str(config), timeout=1.0) == 1
    captured = capsys.readouterr()
    assert "rebuilding" not in captured.out and "not ready after 1s" in captured.err
