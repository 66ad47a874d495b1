"""Sandboxed parsing: a small pool of long-lived, resource-limited child processes runs the parsers.

A PDF bomb, a zip bomb, an XML entity attack, a parser hang or a parser crash then costs one
document (ParseFailed, HTTP 422) instead of the server. Each child limits its own address space,
CPU time per document, file writes and descriptors; the parent enforces wall-clock time and how
many bytes it reads back, and replaces a child that died or had to be killed.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

import msgspec

from appliance import errors
from appliance.config import ParsingSettings
from appliance.document import ParsedDocument
from appliance.errors import ApplianceError, NotReady, PayloadTooLarge
from appliance.ingest import sandbox_child as wire

# Start-up imports take ~0.3 s on an idle machine; this only catches a child that cannot start.
_STARTUP_SECONDS = 60.0
# A long-lived child accumulates heap fragmentation and whatever a parser library leaks.
_DOCUMENTS_PER_CHILD = 500
# Environment a child keeps from ours; everything else (keys, tokens, proxies) stays behind.
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")
_CHILD_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
}
_REASONS = {wire.MEMORY, wire.CPU_TIME, wire.TIMEOUT, wire.OUTPUT_TOO_LARGE, wire.CRASHED}


class ParseFailed(ApplianceError):
    """A document broke a parser limit (memory, CPU, wall time, output size) or crashed the parser.

    `reason` is a short code: "memory", "cpu_time", "timeout", "output_too_large" or "crashed".
    """

    status = 422
    title = "Document could not be parsed"

    def __init__(self, detail: str, reason: str, **extra: object) -> None:
        super().__init__(detail, reason=reason, **extra)
        self.reason = reason


class DocumentParser(Protocol):
    """What make_parser returns: `parse` as a callable that can be closed, and parse-then-redact."""

    def __call__(self, data: bytes, filename: str | None) -> ParsedDocument: ...

    def parse_redacted(self, data: bytes, filename: str | None) -> tuple[ParsedDocument, dict[str, int]]:
        """The document with its secrets redacted, and how many of each kind were found."""
        ...

    def close(self) -> None: ...


def max_frame_bytes(max_output_chars: int) -> int:
    """Largest reply the parent reads: UTF-8 text at its widest plus room for locations and metadata."""
    return 4 * max_output_chars + (64 << 20)


def _error_class(name: str) -> type[ApplianceError]:
    """The ApplianceError subclass a child named; the base class if it names nothing we know."""
    candidates: list[type[ApplianceError]] = [ApplianceError]
    while candidates:
        cls = candidates.pop()
        if cls.__name__ == name:
            return cls
        candidates.extend(cls.__subclasses__())
    return ApplianceError


def _rebuild_error(reply: wire.Refused) -> ApplianceError:
    cls = _error_class(reply.error)
    try:
        return cls(reply.detail, **reply.extra)
    except TypeError:  # a subclass whose constructor takes other arguments
        error = ApplianceError(reply.detail)
        error.extra = dict(reply.extra)
        return error


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Child:
    """One parser process and the framed pipe to it; used by one thread at a time."""

    def __init__(self, settings: ParsingSettings) -> None:
        self.settings = settings
        self.max_frame = max_frame_bytes(settings.max_output_chars)
        self.documents = 0
        root = str(Path(errors.__file__).resolve().parents[1])
        env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ} | _CHILD_ENV
        env["PYTHONPATH"] = root
        argv = [
            sys.executable, "-m", "appliance.ingest.sandbox_child", str(settings.memory_mb),
            str(settings.cpu_seconds), str(settings.max_output_chars), str(self.max_frame),
            str(settings.max_pages), str(settings.max_blocks),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd="/",
            close_fds=True,
            start_new_session=True,  # a Ctrl-C on the server's terminal is the server's to handle
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_child, self.from_child = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self.to_child, False)
        os.set_blocking(self.from_child, False)
        self.decoder = msgspec.msgpack.Decoder(wire.Reply)
        self.encoder = msgspec.msgpack.Encoder()
        try:
            ready = self._receive(time.monotonic() + _STARTUP_SECONDS)
        except ParseFailed as e:
            raise ParseFailed(f"the parser process did not start: {e.detail}", e.reason) from e
        if not isinstance(ready, wire.Ready):
            self.kill()
            raise ParseFailed("the parser process did not start: unexpected first message", wire.CRASHED)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def parse(self, data: bytes, filename: str | None, redact: bool = False) -> wire.Parsed:
        deadline = time.monotonic() + self.settings.wall_seconds
        self.documents += 1
        self._send(self.encoder.encode(wire.Request(data, filename, redact)), deadline)
        reply = self._receive(deadline)
        if isinstance(reply, (wire.Parsed, wire.Refused)) and reply.retire:
            self.kill()  # its peak address space stays high and would taint the next document's verdict
        if isinstance(reply, wire.Parsed):
            return reply
        if isinstance(reply, wire.Refused):
            raise _rebuild_error(reply)
        if isinstance(reply, wire.Failed):
            self.kill()  # after a breach the child's heap is suspect; the next document gets a fresh one
            raise self._failure(reply.reason, reply.detail)
        self.kill()
        raise ParseFailed("parser crashed (it sent an unexpected message)", wire.CRASHED)

    def _failure(self, reason: str, why: str = "") -> ParseFailed:
        s = self.settings
        detail = {
            wire.MEMORY: f"parser exceeded its memory limit ({s.memory_mb} MB)",
            wire.CPU_TIME: f"parser exceeded its CPU time limit ({s.cpu_seconds:g} s)",
            wire.TIMEOUT: f"parser did not finish within {s.wall_seconds:g} s",
            wire.OUTPUT_TOO_LARGE: f"parser produced more than {s.max_output_chars:,} characters",
        }.get(reason, "parser crashed")
        return ParseFailed(
            f"{detail}: {why}" if why else detail, reason if reason in _REASONS else wire.CRASHED
        )

    def _died(self) -> ParseFailed:
        """The child closed its end mid-conversation: name the cause from how it ended."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return self._failure(wire.CRASHED, "it closed its output without exiting")
        self.kill()
        if code == -signal.SIGXCPU:
            return self._failure(wire.CPU_TIME)
        if code == -signal.SIGABRT:
            # PDFium and C++ libraries abort() when an allocation fails under RLIMIT_AS; other
            # aborts (failed assertions, heap corruption) are far rarer in practice.
            return self._failure(
                wire.MEMORY, "the parser aborted (SIGABRT), as C libraries do when an allocation fails"
            )
        if code == -signal.SIGKILL:
            # We never SIGKILL a child mid-document without saying so: this was the kernel's OOM killer.
            return self._failure(wire.MEMORY, "the system's out-of-memory killer ended the parser")
        if code < 0:
            return ParseFailed(f"parser crashed (signal {_signal_name(-code)})", wire.CRASHED)
        return ParseFailed(f"parser crashed (exit status {code})", wire.CRASHED)

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, event)
                if sel.select(remaining):
                    return
        self.kill()
        raise self._failure(wire.TIMEOUT)

    def _send(self, payload: bytes, deadline: float) -> None:
        view = memoryview(wire.FRAME_HEADER.pack(len(payload)) + payload)
        while view:
            self._wait(self.to_child, selectors.EVENT_WRITE, deadline)
            try:
                written = os.write(self.to_child, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise self._died() from None
            view = view[written:]

    def _read(self, size: int, deadline: float) -> bytearray:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            self._wait(self.from_child, selectors.EVENT_READ, deadline)
            try:
                n = os.readv(self.from_child, [view[got:]])
            except BlockingIOError:
                continue
            if n == 0:
                raise self._died()
            got += n
        return buf

    def _receive(self, deadline: float) -> wire.Reply:
        (size,) = wire.FRAME_HEADER.unpack(self._read(wire.FRAME_HEADER.size, deadline))
        if size > self.max_frame:
            self.kill()
            raise self._failure(wire.OUTPUT_TOO_LARGE)
        body = self._read(size, deadline)
        try:
            return self.decoder.decode(body)
        except msgspec.DecodeError as e:
            self.kill()
            raise ParseFailed(f"parser crashed (it sent a malformed reply: {e})", wire.CRASHED) from e

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def stop(self) -> None:
        """Polite shutdown: end of input makes the child exit; kill it if it does not."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class SandboxedParser:
    """`parse` in a pool of `processes` child processes, started lazily; safe to call from many threads."""

    def __init__(self, settings: ParsingSettings, processes: int) -> None:
        self.settings = settings
        self.processes = max(1, processes)
        self._lock = threading.Condition()
        self._idle: list[_Child] = []
        self._started = 0  # children alive or being started, idle or busy
        self._children: set[_Child] = set()
        self._closed = False

    def __call__(self, data: bytes, filename: str | None) -> ParsedDocument:
        return self.parse(data, filename)

    def parse(self, data: bytes, filename: str | None) -> ParsedDocument:
        return self._parse(data, filename, redact=False).document

    def parse_redacted(self, data: bytes, filename: str | None) -> tuple[ParsedDocument, dict[str, int]]:
        """Parse and redact secrets, both in the child: the regex work stays off the server's GIL."""
        reply = self._parse(data, filename, redact=True)
        return reply.document, dict(reply.redactions)

    def _parse(self, data: bytes, filename: str | None, redact: bool) -> wire.Parsed:
        if len(data) >= 1 << 62:
            raise PayloadTooLarge("the document is too large to parse")
        child = self._acquire()
        try:
            return child.parse(data, filename, redact)
        finally:
            self._release(child)

    def _acquire(self) -> _Child:
        with self._lock:
            while True:
                if self._closed:
                    raise NotReady("the parser sandbox is shut down")
                while self._idle:
                    child = self._idle.pop()
                    if child.alive:
                        return child
                    # Died while idle (killed from outside): replace it rather than fail a document.
                    self._children.discard(child)
                    self._started -= 1
                    child.kill()
                if self._started < self.processes:
                    self._started += 1
                    break
                self._lock.wait()
        try:
            child = _Child(self.settings)  # outside the lock: start-up takes a while
        except BaseException:
            with self._lock:
                self._started -= 1
                self._lock.notify()
            raise
        with self._lock:
            self._children.add(child)
        return child

    def _release(self, child: _Child) -> None:
        retire = not child.alive or child.documents >= _DOCUMENTS_PER_CHILD
        with self._lock:
            keep = not retire and not self._closed
            if keep:
                self._idle.append(child)
            else:
                self._started -= 1
                self._children.discard(child)
            self._lock.notify()
        if not keep:
            child.stop()

    def child_pids(self) -> list[int]:
        """Process ids of the running children, idle or busy (for monitoring)."""
        with self._lock:
            return sorted(c.proc.pid for c in self._children if c.alive)

    def close(self) -> None:
        """Stop idle children now; busy ones stop when their document is done. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._started -= len(idle)
            self._children.difference_update(idle)
            self._lock.notify_all()
        for child in idle:
            child.stop()


class InProcessParser:
    """The unsandboxed path (`sandbox = false`, and fast tests): the same work in this process."""

    def __init__(self, max_pages: int | None = None) -> None:
        self.max_pages = max_pages

    def __call__(self, data: bytes, filename: str | None) -> ParsedDocument:
        from appliance.ingest.parsers import parse

        return parse(data, filename, max_pages=self.max_pages)

    def parse_redacted(self, data: bytes, filename: str | None) -> tuple[ParsedDocument, dict[str, int]]:
        from appliance.ingest.secrets import redact_document

        return redact_document(self(data, filename))

    def close(self) -> None:
        pass


def make_parser(settings: ParsingSettings, processes: int) -> DocumentParser:
    """The parser the pipeline should call: sandboxed unless the settings turn the sandbox off."""
    if settings.sandbox:
        return SandboxedParser(settings, processes)
    return InProcessParser(settings.max_pages)


__all__ = ["DocumentParser", "InProcessParser", "ParseFailed", "SandboxedParser", "make_parser"]
