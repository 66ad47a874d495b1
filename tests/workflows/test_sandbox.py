"""`python` tools in the sandbox, through the engine: the code's result is the tool's output; escape
attempts (a socket, a fork bomb, a write outside the scratch directory, another process's /proc,
memory, CPU and file size past their limits, native code, the wall clock) fail the call with a clear
error, are never retried, and are reported for the audit log; nothing they tried happened."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from appliance.workflows import sandbox
from tests.workflows.harness import Harness

WORKFLOW = """
kind: Workflow
name: {name}
inputs: {{type: object}}
steps:
  - id: call
    tool: {name}
    with: {{value: 4, target: "{target}", pid: {pid}, port: {port}}}
    retry: {{attempts: 3, backoff_s: 0}}
outputs: {{out: "${{steps.call.output}}"}}
"""


def tool(name: str, code: str, sandbox_limits: str = "", timeout: float | None = None) -> str:
    body = "\n".join("  " + line for line in code.strip().splitlines())
    extra = f"sandbox: {sandbox_limits}\n" if sandbox_limits else ""
    extra += f"timeout_s: {timeout}\n" if timeout else ""
    return f"kind: Tool\nname: {name}\ntype: python\n{extra}code: |\n{body}\n"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("sandbox"))
    yield h
    h.close()


@pytest.fixture(scope="module")
def listener():
    """A socket on loopback the sandboxed code must not reach; counts who connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    done.set()
    thread.join(2)
    server.close()


def run(harness: Harness, name: str, code: str, limits: str = "", timeout=None, target="", port=0):
    harness.apply(
        tool(name, code, limits, timeout),
        WORKFLOW.format(name=name, target=target, pid=os.getpid(), port=port),
    )
    return harness.run(name)


def test_the_code_runs_and_writes_in_its_scratch_directory(harness):
    code = """
import json, math, os
def main(args):
    with open("note.txt", "w") as f:
        f.write(json.dumps(args))
    return {"root": math.sqrt(args["value"]), "note": open("note.txt").read(), "cwd": os.getcwd()}
"""
    run_id, outcome = run(harness, "ok-tool", code)
    assert outcome.state == "succeeded", outcome.error
    out = outcome.outputs["out"]
    assert out["root"] == 2.0 and '"value": 4' in out["note"]
    assert os.path.basename(out["cwd"]).startswith("wf-sandbox-") and not os.path.exists(out["cwd"])
    assert harness.services.refused == []
    # The tool and its workflow share a name: each kind keeps its own latest version.
    stored = harness.library.stored()
    assert stored["Tool"]["ok-tool"]["type"] == "python" and stored["Workflow"]["ok-tool"]["steps"]


ESCAPES = [
    (
        "socket",
        """
import socket
def main(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", args["port"]))
    return {}
""",
        "",
        "blocked",
        "network access (socket.__new__)",
    ),
    (
        "caught-socket",  # the refusal caught and ignored: the call fails all the same
        """
import socket
def main(args):
    try:
        socket.create_connection(("127.0.0.1", args["port"]), timeout=1)
    except Exception:
        pass
    return {"sneaky": True}
""",
        "",
        "blocked",
        "network access",
    ),
    (
        "fork-bomb",
        """
import os
def main(args):
    while True:
        os.fork()
""",
        "",
        "blocked",
        "starting or signalling a process (os.fork)",
    ),
    (
        "subprocess",
        """
import subprocess
def main(args):
    subprocess.run(["sh", "-c", "touch " + args["target"]])
    return {}
""",
        "",
        "blocked",
        "subprocess.Popen",
    ),
    (
        "write-outside",
        """
def main(args):
    with open(args["target"], "w") as f:
        f.write("escaped")
    return {}
""",
        "",
        "blocked",
        "(outside the scratch directory)",
    ),
    (
        "rename-outside",
        """
import os
def main(args):
    open("inside.txt", "w").close()
    os.rename("inside.txt", args["target"])
    return {}
""",
        "",
        "blocked",
        "os.rename on",
    ),
    (
        "other-proc",
        """
def main(args):
    return {"env": open("/proc/%d/environ" % args["pid"], "rb").read().decode("latin-1")}
""",
        "",
        "blocked",
        "reading another process's /proc/",
    ),
    (
        "ctypes",
        """
import ctypes
def main(args):
    return {}
""",
        "",
        "blocked",
        "native code (ctypes)",
    ),
    (
        "memory",
        """
def main(args):
    hoard = [bytearray(16 << 20) for _ in range(64)]
    return {"n": len(hoard)}
""",
        "{memory_mb: 128}",
        "memory",
        "stopped at the memory limit of 128 MiB",
    ),
    (
        "file-size",
        """
def main(args):
    with open("big.bin", "wb") as f:
        f.write(b"x" * (3 << 20))
    return {}
""",
        "{file_mb: 1}",
        "file_size",
        "a file reached the size limit of 1 MiB",
    ),
    (
        "cpu",
        """
def main(args):
    n = 0
    while True:
        n += 1
""",
        "{cpu_seconds: 1}",
        "cpu",
        "stopped at the CPU limit of 1 s",
    ),
]


@pytest.mark.parametrize(("name", "code", "limits", "kind", "message"), ESCAPES, ids=[e[0] for e in ESCAPES])
def test_an_escape_attempt_fails_clearly_is_not_retried_and_is_audited(
    harness, listener, tmp_path, name, code, limits, kind, message
):
    port, accepted = listener
    target = tmp_path / f"{name}.txt"
    before = len(harness.services.refused)
    run_id, outcome = run(harness, name, code, limits, target=str(target), port=port)
    assert outcome.state == "failed"
    assert outcome.error.startswith(f"tool {name!r}: python tool {name}: ") and message in outcome.error
    step = harness.steps(run_id)["call"]
    assert step["attempts"] == 1  # three attempts allowed: an escape is not tried again
    (audited,) = harness.services.refused[before:]
    assert audited["tool"] == name and audited["kind"] == kind and audited["run_id"] == run_id
    if kind == "blocked":
        assert any(message in b for b in audited["blocked"])
    assert not target.exists() and accepted == []


def test_the_wall_clock_kills_the_code_and_its_children(harness):
    code = """
import time
def main(args):
    time.sleep(60)
"""
    before = len(harness.services.refused)
    run_id, outcome = run(harness, "sleeper", code, timeout=1)
    assert outcome.state == "failed" and "killed at the wall-clock limit of 1 s" in outcome.error
    assert harness.services.refused[before]["kind"] == "timeout"


def test_an_ordinary_error_is_a_clear_failure_retried_by_policy_and_not_audited(harness):
    code = """
def main(args):
    return {"x": 1 / 0}
"""
    before = len(harness.services.refused)
    run_id, outcome = run(harness, "buggy", code)
    assert outcome.state == "failed" and "ZeroDivisionError: division by zero" in outcome.error
    assert harness.steps(run_id)["call"]["attempts"] == 3
    assert len(harness.services.refused) == before


def test_the_network_namespace_is_used_where_the_kernel_allows_it():
    prefix = sandbox.namespace_prefix()
    if not prefix:
        pytest.skip("this kernel or user may not create namespaces: the audit hook alone refuses sockets")
    # Even past the Python-level refusal, the child's namespace has no way out: no interface is up.
    out = sandbox.run(
        "def main(args):\n    return {'ifaces': open('/proc/net/dev').read().count(':')}",
        {},
        sandbox.Limits(),
    )
    assert out.network_namespace and out.result["ifaces"] == 1  # only its own loopback


def test_with_the_audit_hook_tampered_with_the_kernel_still_refuses_writes_outside(tmp_path):
    """The audit hook is the first layer (it refuses and reports); Landlock is the kernel's. Code that
    rewrites the hook's state through a frame gets past the first and not the second."""
    target = tmp_path / "tampered.txt"
    code = """
import sys
def main(args):
    up = sys._getframe(1).f_locals
    for cell in up["inside"].__closure__:
        if cell.cell_contents == up["scratch"]:
            cell.cell_contents = ""  # now every path looks inside the scratch directory
    out = {"hook_fooled": up["inside"]("/etc")}
    try:
        with open(args["target"], "w") as f:
            f.write("escaped")
    except OSError as exc:
        out["error"] = str(exc)
    return out
"""
    done = sandbox.run(code, {"target": str(target)}, sandbox.Limits())
    if done.landlock == 0:
        pytest.skip("no Landlock in this kernel: only the audit hook keeps writes in the scratch directory")
    assert done.result["hook_fooled"] is True
    assert "Permission denied" in done.result["error"] and not target.exists()
