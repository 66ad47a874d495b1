"""The program a sandboxed python tool runs in (read as text by sandbox.py and run with `python -c`,
never imported): limits, the audit hook, the tool's code, its result on stdout."""


def _sandbox():
    import io
    import json
    import os
    import resource
    import signal
    import sys

    payload = json.loads(sys.stdin.read())
    limits, scratch = payload["limits"], os.path.realpath(payload["scratch"])
    result_mark, blocked_mark = payload["marks"]
    mb = 1 << 20
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mb, limits["file_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb, limits["memory_mb"] * mb))
    # Counts the user's every process: a backstop for a non-root service user (root is exempt).
    procs = len([p for p in os.listdir("/proc") if p.isdigit()]) + limits["processes"]
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (procs, procs))
    except (ValueError, OSError):
        pass
    # Landlock (Linux 5.13+, no privilege needed): the kernel itself refuses writes outside the
    # scratch directory, and TCP bind and connect where the ABI has them, whatever the code does to
    # the audit hook below. ctypes is used here, before the hook, and then forgotten.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    landlock = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION): the ABI
    if landlock >= 1:
        fs = sum(1 << n for n in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make *
        fs |= (1 << 13 if landlock >= 2 else 0) | (1 << 14 if landlock >= 3 else 0)  # refer, truncate
        net = 3 if landlock >= 4 else 0  # bind and connect TCP
        scoped = 3 if landlock >= 6 else 0  # abstract unix sockets and signals outside the sandbox

        class Ruleset(ctypes.Structure):
            _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

        class Beneath(ctypes.Structure):
            _pack_ = 1
            _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

        size = 24 if landlock >= 6 else (16 if landlock >= 4 else 8)
        ruleset = libc.syscall(444, ctypes.byref(Ruleset(fs, net, scoped)), size, 0)
        parent = os.open(scratch, os.O_PATH | os.O_CLOEXEC)
        ok = ruleset >= 0 and libc.syscall(445, ruleset, 1, ctypes.byref(Beneath(fs, parent)), 0) == 0
        ok = ok and libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS, which restrict_self needs
        ok = ok and libc.syscall(446, ruleset, 0) == 0
        os.close(parent)
        landlock = landlock if ok else 0
    del libc, ctypes
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]
    me = os.readlink("/proc/self")  # as /proc numbers it (another pid namespace's getpid() differs)
    blocked = []

    class CPULimit(BaseException):
        pass

    def cpu_spent(signum, frame):
        raise CPULimit()

    signal.signal(signal.SIGXCPU, cpu_spent)  # the soft limit: a result saying so; the hard one kills
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    process = frozenset(
        {
            "os.fork",
            "os.forkpty",
            "os.system",
            "os.exec",
            "os.posix_spawn",
            "os.spawn",
            "subprocess.Popen",
            "os.kill",
            "os.killpg",
            "pty.spawn",
        }
    )
    paths = frozenset(
        {
            "os.remove",
            "os.rmdir",
            "os.mkdir",
            "os.rename",
            "os.symlink",
            "os.link",
            "os.chmod",
            "os.chown",
            "os.truncate",
            "os.utime",
            "os.mkfifo",
            "os.mknod",
            "shutil.rmtree",
            "shutil.copyfile",
            "shutil.move",
        }
    )
    introspection = frozenset(
        {
            "sys._current_frames",
            "sys._current_exceptions",
            "gc.get_objects",
            "gc.get_referrers",
            "gc.get_referents",
            "sys.settrace",
            "sys.setprofile",
        }
    )
    realpath, join, getcwd, fsdecode, write = os.path.realpath, os.path.join, os.getcwd, os.fsdecode, os.write
    dumps, pathlike = json.dumps, (str, bytes, os.PathLike)

    def inside(path):
        real = realpath(join(getcwd(), fsdecode(path)))
        return real == scratch or real.startswith(scratch + "/")

    def refuse(what):
        blocked.append(what)
        write(2, ("\n" + blocked_mark + dumps(what) + "\n").encode())
        raise PermissionError("sandbox: " + what + " is not allowed")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int) or path is None:
                return
            text = fsdecode(path)
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or bool(
                (flags or 0) & write_flags
            )
            if writing and not inside(text):
                refuse("writing " + text + " (outside the scratch directory)")
            parts = realpath(join(getcwd(), text)).split("/")
            if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != me:
                refuse("reading another process's /proc/" + parts[2])
        elif event.startswith("socket."):
            refuse("network access (" + event + ")")
        elif event in process:
            refuse("starting or signalling a process (" + event + ")")
        elif event.startswith("ctypes.") or (event == "import" and args[0] in ("ctypes", "_ctypes")):
            refuse("native code (ctypes)")
        elif event in introspection:
            refuse("introspection of the interpreter (" + event + ")")
        elif event in paths:
            for path in args:
                if isinstance(path, pathlike) and not inside(path):
                    refuse(event + " on " + fsdecode(path) + " (outside the scratch directory)")

    out = sys.stdout
    sys.stdout = sys.stderr = io.StringIO()  # the tool's prints are not the result
    namespace = {"__name__": "sandboxed_tool"}
    code = compile(payload["code"], "<tool>", "exec")
    args = payload["args"]
    del payload
    sys.addaudithook(hook)
    try:
        exec(code, namespace)
        result, error = namespace["main"](args), None
    except MemoryError:
        result, error = None, {"kind": "memory", "message": "memory limit reached"}
    except CPULimit:
        result, error = None, {"kind": "cpu", "message": "CPU limit reached"}
    except BaseException as exc:
        kind = "file_size" if isinstance(exc, OSError) and exc.errno == 27 else "error"
        result, error = None, {"kind": kind, "message": type(exc).__name__ + ": " + str(exc)}
    try:
        line = dumps({"result": result, "error": error, "blocked": blocked, "landlock": landlock})
    except (TypeError, ValueError) as exc:
        problem = {"kind": "error", "message": "the result is not JSON: " + str(exc)}
        line = dumps({"result": None, "error": problem, "blocked": blocked})
    out.write("\n" + result_mark + line + "\n")
    out.flush()


if __name__ == "__main__":  # run by `python -c`; importing it does nothing
    _sandbox()
