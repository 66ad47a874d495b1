"""The sandbox of `python` tools: the tool's code runs in a child interpreter with no network (its own
network namespace where the kernel allows one, and the socket calls refused), CPU, memory, file-size
and process limits, a scratch directory as the only writable place, and a wall-clock kill. What it
tried and was refused comes back with the failure, to be audited."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_OUTPUT_BYTES = 1 << 20
MARK = "\x1e=sandbox-result="  # the child's result line starts with this
BLOCKED = "\x1e=sandbox-blocked="  # a refusal, written to stderr the moment it happens
DEFAULTS = {"cpu_seconds": 10, "memory_mb": 256, "file_mb": 16, "processes": 1}
DEFAULT_TIMEOUT_S = 30.0

# The child: limits first, then an audit hook (which nothing in the process can remove) refusing
# sockets, new processes, native calls, introspection that reaches frames or code objects (the way
# to the hook's own state), other processes' /proc and writes outside the scratch directory; then the
# tool's code. Everything lives in one function's locals, out of reach of `import __main__`, and each
# refusal is written to stderr as it happens, so clearing state afterwards cannot hide it.
# Run as `python -I -S -B -c CHILD`: no site-packages, no PYTHON* variables, no bytecode written.
CHILD = (Path(__file__).parent / "sandbox_child.py").read_text()


class SandboxError(Exception):
    """The code failed or was stopped; `kind`: error | blocked | memory | cpu | file_size | timeout |
    output; `blocked` lists what it tried that was refused."""

    def __init__(self, kind: str, message: str, blocked: list[str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.blocked = blocked or []

    @property
    def escape(self) -> bool:
        """An attempt to leave the sandbox or its limits (audited), not an ordinary bug."""
        return self.kind != "error"


@dataclass
class Limits:
    cpu_seconds: int = DEFAULTS["cpu_seconds"]
    memory_mb: int = DEFAULTS["memory_mb"]
    file_mb: int = DEFAULTS["file_mb"]
    processes: int = DEFAULTS["processes"]
    wall_seconds: float = DEFAULT_TIMEOUT_S

    @classmethod
    def of(cls, spec: dict | None, timeout_s: float | None) -> Limits:
        given = {k: v for k, v in (spec or {}).items() if k in DEFAULTS}
        return cls(**given, wall_seconds=float(timeout_s or DEFAULT_TIMEOUT_S))


@dataclass
class Outcome:
    result: dict
    network_namespace: bool
    seconds: float
    blocked: list[str] = field(default_factory=list)
    landlock: int = 0  # the Landlock ABI that confined it (0: none; the audit hook alone)


@functools.lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...]:
    """`unshare` with a network namespace of its own (no interface but a downed loopback) and a pid
    namespace (the child's processes end with it), when the kernel lets this user make them; else
    nothing: the audit hook alone keeps the code off the network."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return ()
    prefix = [unshare, "--net", "--pid", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        prefix.append("--map-root-user")
    try:
        done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(prefix) if done.returncode == 0 else ()


def run(code: str, args: dict, limits: Limits, stop=None) -> Outcome:
    """Run the code's `main(args)` in the sandbox; its return value (a JSON object) is the result.
    Raises SandboxError for a failure, a refused attempt or a limit reached."""
    scratch = tempfile.mkdtemp(prefix="wf-sandbox-")
    prefix = namespace_prefix()
    payload = json.dumps(
        {
            "code": code,
            "args": args,
            "scratch": scratch,
            "limits": _child_limits(limits),
            "marks": [MARK, BLOCKED],
        }
    ).encode()
    started = time.monotonic()
    env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"}
    try:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-I", "-S", "-B", "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=scratch,
            env=env,
            start_new_session=True,  # its own process group: the wall-clock kill takes everything
            close_fds=True,
        )
        try:
            out, err = _wait(proc, payload, limits.wall_seconds, stop)
        finally:
            _kill(proc)
        return _outcome(proc.returncode, out, err, limits, bool(prefix), time.monotonic() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _child_limits(limits: Limits) -> dict:
    return {
        "cpu_seconds": max(1, int(limits.cpu_seconds)),
        "memory_mb": max(32, int(limits.memory_mb)),
        "file_mb": max(0, int(limits.file_mb)),
        "processes": max(0, int(limits.processes)),
    }


def _wait(proc: subprocess.Popen, payload: bytes, wall: float, stop) -> tuple[bytes, bytes]:
    deadline = time.monotonic() + wall
    pending: bytes | None = payload
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SandboxError("timeout", f"killed at the wall-clock limit of {wall:g} s")
        if stop is not None and stop.is_set():
            from appliance.workflows.builtins import Interrupted

            raise Interrupted("stopped during a sandboxed call")
        try:
            out, err = proc.communicate(pending, timeout=min(0.25, left))
            return out[: MAX_OUTPUT_BYTES + 1], err
        except subprocess.TimeoutExpired:
            pending = None  # sent already: communicate() keeps it


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait()


def _blocked(err: bytes) -> list[str]:
    """The refusals the child reported on stderr as they happened."""
    found = []
    for line in err.decode("utf-8", "replace").split("\n"):
        if line.startswith(BLOCKED):
            try:
                found.append(str(json.loads(line[len(BLOCKED) :])))
            except ValueError:
                found.append("an attempt the sandbox refused")
    return found


def _outcome(code: int, out: bytes, err: bytes, limits: Limits, netns: bool, seconds: float) -> Outcome:
    text = out.decode("utf-8", "replace")
    # split("\n"), not splitlines(): \x1e, which starts the marks, ends a line there.
    line = next((x for x in reversed(text.split("\n")) if x.startswith(MARK)), None)
    if line is None and _blocked(err):
        # Refused, then it ended without a result (it exited, or tampered with its state).
        raise SandboxError("blocked", f"refused: {_blocked(err)[0]}", _blocked(err))
    if line is None:
        # Killed at the hard CPU limit (through unshare, a signal's death reads as an odd status):
        # only a process that ran at least as long as its CPU allowance can have spent it.
        if code != 0 and seconds >= limits.cpu_seconds:
            raise SandboxError("cpu", f"stopped at the CPU limit of {limits.cpu_seconds} s")
        if len(out) > MAX_OUTPUT_BYTES:
            raise SandboxError("output", f"wrote more than {MAX_OUTPUT_BYTES} bytes to its output")
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        if "MemoryError" in tail[0]:
            raise SandboxError("memory", f"stopped at the memory limit of {limits.memory_mb} MiB")
        raise SandboxError("error", f"the sandboxed process ended without a result: {tail[0][:300]}")
    report = json.loads(line[len(MARK) :])
    blocked = list(dict.fromkeys(_blocked(err) + (report.get("blocked") or [])))
    if blocked:
        raise SandboxError("blocked", f"refused: {blocked[0]}", blocked)
    error = report.get("error")
    if error is not None:
        kind = error["kind"]
        message = {
            "memory": f"stopped at the memory limit of {limits.memory_mb} MiB",
            "file_size": f"a file reached the size limit of {limits.file_mb} MiB",
            "cpu": f"stopped at the CPU limit of {limits.cpu_seconds} s",
        }.get(kind, error["message"])
        raise SandboxError(kind, message[:500])
    result = report.get("result")
    if not isinstance(result, dict):
        raise SandboxError("error", f"main() must return a JSON object, not {type(result).__name__}")
    return Outcome(result, netns, seconds, landlock=int(report.get("landlock") or 0))
