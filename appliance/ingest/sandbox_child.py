"""The parser child process and its wire protocol: documents in on stdin, parsed documents out on stdout.

Run as `python -m appliance.ingest.sandbox_child MEMORY_MB CPU_SECONDS MAX_CHARS MAX_FRAME_BYTES
MAX_PAGES MAX_BLOCKS` by appliance.ingest.sandbox, never by hand. Frames are an 8-byte big-endian length followed by a
msgpack body. msgpack rather than pickle: the parent decodes replies into fixed types, so a child
taken over by a malicious document can lie about a document but cannot run code in the server.
"""

from __future__ import annotations

import gc
import io
import math
import os
import resource
import struct
import sys
import zipfile

import msgspec

from appliance.document import ParsedDocument
from appliance.errors import ApplianceError

FRAME_HEADER = struct.Struct(">Q")

# Limit breaches the child reports itself; the parent turns them into ParseFailed.
MEMORY = "memory"
CPU_TIME = "cpu_time"
TIMEOUT = "timeout"
OUTPUT_TOO_LARGE = "output_too_large"
CRASHED = "crashed"

Scalar = str | int | float | bool | None


class Request(msgspec.Struct, tag="request", forbid_unknown_fields=True):
    data: bytes
    filename: str | None
    # Secret scanning is CPU-bound regex work over the whole text: here it costs the child's
    # CPU and wall budget, and never the server's interpreter lock.
    redact: bool = False


class Ready(msgspec.Struct, tag="ready", forbid_unknown_fields=True):
    pid: int


class Parsed(msgspec.Struct, tag="parsed", forbid_unknown_fields=True):
    document: ParsedDocument
    retire: bool = False  # this child came close to its memory limit: replace it
    redactions: dict[str, int] = {}  # secrets replaced per kind, when the request asked for it


class Refused(msgspec.Struct, tag="refused", forbid_unknown_fields=True):
    """An ordinary parse error (an ApplianceError subclass), to be raised again in the parent."""

    error: str  # the class name
    detail: str
    extra: dict[str, Scalar] = {}
    retire: bool = False


class Failed(msgspec.Struct, tag="failed", forbid_unknown_fields=True):
    """A limit the child caught before the kernel had to: `reason` is one of the codes above."""

    reason: str
    detail: str = ""


Reply = Ready | Parsed | Refused | Failed


def document_chars(doc: ParsedDocument) -> int:
    """Characters of extracted text, the quantity `max_output_chars` caps."""
    return len(doc.title) + sum(len(b.text) + len(b.header or "") for b in doc.blocks)


def declared_unzipped_size(data: bytes) -> int | None:
    """Total uncompressed size a zip container declares, or None if `data` is no zip.

    Python's zipfile stops inflating a member at its declared size (and then fails its CRC), so
    the declared total really bounds what python-docx can inflate.
    """
    if not data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None  # the parser reports the damage in its own words


def _read_exactly(fd: int, size: int) -> bytearray | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            return None
        got += n
    return buf


def _read_frame(fd: int) -> bytearray | None:
    header = _read_exactly(fd, FRAME_HEADER.size)
    if header is None:
        return None
    return _read_exactly(fd, FRAME_HEADER.unpack(header)[0])


def _write_frame(fd: int, payload: bytes) -> None:
    view = memoryview(FRAME_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


def _warm_up() -> None:
    """Import every parser now, so neither start-up cost nor import memory is charged to a document."""
    import lxml.etree  # noqa: F401
    import lxml.html  # noqa: F401
    import pypdfium2.raw  # noqa: F401  (loads the PDFium shared library)

    import appliance.ingest.parsers  # noqa: F401
    import appliance.ingest.secrets  # noqa: F401
    from appliance.ingest.parsers import docx, html, markdown, pdf  # noqa: F401

    try:
        import docx as python_docx  # noqa: F401
    except ImportError:
        pass


def _limit_resources(memory_mb: int) -> None:
    memory = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # No core files from a killed child, no files written at all, few descriptors.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = 64 if hard == resource.RLIM_INFINITY else min(64, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))


def _allow_cpu(seconds: float) -> None:
    """Move the CPU soft limit to `seconds` past what this process has used so far.

    Past it the kernel sends SIGXCPU, whose default action ends the process even inside C code
    (PDFium), which a Python-level timer could not interrupt. The hard limit stays where it is so
    the soft one can be raised again for the next document.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def peak_address_space() -> int | None:
    """The most address space this process has ever held (VmPeak), in bytes; None off Linux."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return None


class Limits(msgspec.Struct, frozen=True):
    """What one document may cost the child and produce."""

    memory_mb: int
    cpu_seconds: float
    max_chars: int
    max_pages: int
    max_blocks: int


def _handle(request: Request, limits: Limits) -> Reply:
    from appliance.ingest.parsers import parse
    from appliance.ingest.secrets import redact_document

    memory_mb, cpu_seconds, max_chars = limits.memory_mb, limits.cpu_seconds, limits.max_chars

    _allow_cpu(cpu_seconds)
    limit = memory_mb << 20
    declared = declared_unzipped_size(request.data)
    if declared is not None and declared > limit:
        # A bomb that would only fail after eating the whole limit: refuse it from its directory.
        return Failed(MEMORY, f"the archive expands to {declared >> 20} MiB when unzipped")
    try:
        doc = parse(request.data, request.filename, max_pages=limits.max_pages)
    except MemoryError:
        return Failed(MEMORY)
    except ApplianceError as e:
        # C libraries report a failed allocation in their own words (libxml2 under RLIMIT_AS:
        # XMLSyntaxError "unknown error"), which parse() wraps as UnsupportedFormat. A grown
        # buffer's failed request is as large as the buffer, so past half the limit the limit
        # is the likelier culprit than the format.
        strained = (peak_address_space() or 0) > limit // 2
        if strained and e.__cause__ is not None and not isinstance(e.__cause__, ApplianceError):
            return Failed(MEMORY, f"{type(e.__cause__).__name__}: {e.__cause__}"[:300])
        extra = {k: v for k, v in e.extra.items() if isinstance(v, Scalar)}
        return Refused(type(e).__name__, e.detail, extra, retire=strained)
    except Exception as e:  # a defect in our own code, not the document's doing
        return Failed(CRASHED, f"{type(e).__name__}: {e}")
    if document_chars(doc) > max_chars:
        return Failed(OUTPUT_TOO_LARGE)
    if len(doc.blocks) > limits.max_blocks:
        # Each block costs the server a few hundred bytes once decoded, whatever its length.
        detail = (
            f"the document splits into {len(doc.blocks):,} blocks of text; "
            f"the limit is {limits.max_blocks:,} (parsing.max_blocks)"
        )
        return Refused("PayloadTooLarge", detail)
    redactions: dict[str, int] = {}
    if request.redact:
        doc, redactions = redact_document(doc)
    return Parsed(doc, retire=(peak_address_space() or 0) > limit // 2, redactions=redactions)


def serve(limits: Limits, max_frame: int) -> int:
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    reply_fd, request_fd = os.dup(1), os.dup(0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr

    _warm_up()
    gc.collect()
    # What the warm-up imported lives as long as the child: out of the collector's sight, the
    # collection after each document walks only that document's objects (5 ms -> well under 1 ms
    # per short document; the libraries' objects were most of the heap).
    gc.freeze()
    _limit_resources(limits.memory_mb)
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(Request)
    _write_frame(reply_fd, encoder.encode(Ready(os.getpid())))
    while True:
        body = _read_frame(request_fd)
        if body is None:
            return 0  # the parent closed our stdin: it is shutting down
        try:
            request = decoder.decode(body)
            del body
            reply = _handle(request, limits)
            del request
            payload = encoder.encode(reply)
            del reply
        except MemoryError:
            payload = encoder.encode(Failed(MEMORY))
        if len(payload) > max_frame:
            payload = encoder.encode(Failed(OUTPUT_TOO_LARGE))
        _write_frame(reply_fd, payload)
        del payload
        gc.collect()


if __name__ == "__main__":
    memory_arg, cpu_arg, chars_arg, frame_arg, pages_arg, blocks_arg = sys.argv[1:7]
    child_limits = Limits(int(memory_arg), float(cpu_arg), int(chars_arg), int(pages_arg), int(blocks_arg))
    sys.exit(serve(child_limits, int(frame_arg)))
