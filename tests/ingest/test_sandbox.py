"""Sandboxed parsing with real child processes: same results as in-process, and hostile documents
(entity expansion, zip and flate bombs, floods, hangs, crashes) cost one document, not the server."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import zipfile
import zlib

import pytest

from appliance.config import ParsingSettings
from appliance.errors import ApplianceError, InvalidInput, NotReady, PayloadTooLarge, UnsupportedFormat
from appliance.ingest.parsers import parse
from appliance.ingest.sandbox import ParseFailed, SandboxedParser, make_parser
from tests.ingest.pdf_fixture import build_pdf, build_repeated_page_pdf

W_NS = b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


# ---- inputs -------------------------------------------------------------------------------


def _plain_docx() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Quarterly report"
    d.add_heading("Revenue", level=1)
    d.add_paragraph("Revenue grew in every region.")
    d.add_paragraph("first point", style="List Bullet")
    table = d.add_table(rows=2, cols=2)
    for (r, c), text in {(0, 0): "region", (0, 1): "growth", (1, 0): "EMEA", (1, 1): "4%"}.items():
        table.cell(r, c).text = text
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _docx_with_body(chunks) -> bytes:
    """A real DOCX whose word/document.xml is streamed from `chunks`, so a huge part stays small on disk."""
    src = zipfile.ZipFile(io.BytesIO(_plain_docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for info in src.infolist():
            if info.filename == "word/document.xml":
                with zf.open("word/document.xml", "w", force_zip64=True) as part:
                    part.write(b'<?xml version="1.0"?><w:document ' + W_NS + b"><w:body>")
                    for chunk in chunks:
                        part.write(chunk)
                    part.write(b"</w:body></w:document>")
            else:
                zf.writestr(info, src.read(info.filename))
    return out.getvalue()


def billion_laughs_docx() -> bytes:
    entities = b'<!ENTITY lol0 "lollollollollollollollollollol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10)
    )
    xml = (
        b'<?xml version="1.0"?><!DOCTYPE w:document [' + entities + b"]><w:document " + W_NS
        + b"><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
    )  # fmt: skip
    src = zipfile.ZipFile(io.BytesIO(_plain_docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            zf.writestr(info, xml if info.filename == "word/document.xml" else src.read(info.filename))
    return out.getvalue()


def zip_bomb_docx(mib: int) -> bytes:
    """Ordinary-looking paragraphs, `mib` MiB of them uncompressed, ~1% of that on disk."""
    chunk = b"<w:p><w:r><w:t>" + b"a" * 1000 + b"</w:t></w:r></w:p>"
    chunk *= 1024
    return _docx_with_body(chunk for _ in range((mib << 20) // len(chunk)))


def paragraph_flood_docx(mib: int) -> bytes:
    """Millions of empty paragraphs: few bytes each on disk, a costly node each in lxml and python-docx."""
    chunk = b"<w:p/>" * 100_000
    return _docx_with_body(chunk for _ in range((mib << 20) // len(chunk)))


def flate_bomb_pdf(mib: int) -> bytes:
    """A one-page PDF whose content stream inflates to `mib` MiB of spaces (~1 KiB per MiB on disk)."""
    block = b" " * (1 << 20)
    z = zlib.compressobj(9)
    first = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    # After a full flush the compressor starts over, so every further block compresses identically.
    again = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    end = z.flush()[:-4]
    adler = 1
    for _ in range(mib):
        adler = zlib.adler32(block, adler)
    stream = first + again * (mib - 1) + end + adler.to_bytes(4, "big")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


SAMPLES = {
    "notes.md": b"# Notes\n\nSome *text* here.\n\n## Part\n\n- one\n- two\n\n```python\nprint(1)\n```\n",
    "report.pdf": build_pdf([["Annual report", "Sales rose."], ["Second page text"]], title="Annual"),
    "report.docx": _plain_docx(),
    "page.html": b"<html><head><title>T</title></head><body><h1>Head</h1><p>Para</p>"
    b"<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table></body></html>",
    "rows.csv": b"name,age\nada,36\ngrace,45\n",
    "deep.json": b"[" * 50_000 + b"1" + b"]" * 50_000,
}


def outcome(fn, data: bytes, filename: str | None):
    """The document, or the error's class, detail and extra: what a caller can observe."""
    try:
        return fn(data, filename)
    except ApplianceError as e:
        return (type(e), e.detail, e.extra)


def settings(**overrides) -> ParsingSettings:
    return ParsingSettings(**overrides)


@pytest.fixture(scope="module")
def sandbox():
    parser = SandboxedParser(settings(), processes=2)
    yield parser
    parser.close()


# ---- same results as in-process ------------------------------------------------------------


@pytest.mark.parametrize("filename", sorted(SAMPLES))
def test_parse_equals_in_process(sandbox, filename):
    data = SAMPLES[filename]
    assert sandbox.parse(data, filename) == parse(data, filename)


@pytest.mark.parametrize(
    ("data", "filename", "cls"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "photo.png", UnsupportedFormat),
        (b"PK\x05\x06" + b"\x00" * 18, "archive.zip", UnsupportedFormat),
        (b" \n\t ", "blank.txt", InvalidInput),
        (b"%PDF-1.4\ngarbage", "broken.pdf", UnsupportedFormat),
    ],
)
def test_parse_errors_come_back_as_the_same_exception(sandbox, data, filename, cls):
    with pytest.raises(cls) as sandboxed:
        sandbox.parse(data, filename)
    with pytest.raises(cls) as in_process:
        parse(data, filename)
    assert type(sandboxed.value) is type(in_process.value)
    assert sandboxed.value.detail == in_process.value.detail
    assert sandboxed.value.extra == in_process.value.extra


def test_billion_laughs_docx_is_refused_quickly(sandbox):
    data = billion_laughs_docx()
    started = time.monotonic()
    result = outcome(sandbox.parse, data, "laughs.docx")
    assert time.monotonic() - started < 10
    assert result == outcome(parse, data, "laughs.docx")
    assert result[0] is UnsupportedFormat  # libxml2 refuses the amplification; nothing expanded


def test_child_runs_with_limits_and_a_clean_environment(monkeypatch):
    monkeypatch.setenv("APPLIANCE_TEST_SECRET", "hunter2")
    parser = SandboxedParser(settings(memory_mb=700), processes=1)
    try:
        parser.parse(SAMPLES["notes.md"], "notes.md")
        (pid,) = parser.child_pids()
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if item)
        assert b"APPLIANCE_TEST_SECRET" not in env
        assert env[b"HF_HUB_OFFLINE"] == b"1"
        with open(f"/proc/{pid}/limits") as f:
            limits = {line[:26].strip(): line[26:].split() for line in f.read().splitlines()[1:]}
        assert limits["Max address space"][0] == str(700 << 20)
        assert limits["Max file size"][0] == "0"
        assert limits["Max core file size"][0] == "0"
    finally:
        parser.close()


# ---- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "filename"),
    [
        (lambda: zip_bomb_docx(256), "bomb.docx"),  # refused from the zip directory
        (lambda: paragraph_flood_docx(40), "flood.docx"),  # libxml2 allocation fails
        (lambda: flate_bomb_pdf(512), "bomb.pdf"),  # PDFium aborts on a failed allocation
        (lambda: b"several words on a line\n" * 1_600_000, "big.txt"),  # Python MemoryError
    ],
    ids=["docx-zip-bomb", "docx-paragraph-flood", "pdf-flate-bomb", "huge-text"],
)
def test_memory_limit(make, filename):
    parser = SandboxedParser(settings(memory_mb=200, max_output_chars=10**9), processes=1)
    try:
        with pytest.raises(ParseFailed) as failed:
            parser.parse(make(), filename)
        assert failed.value.reason == "memory"
        assert failed.value.status == 422
        assert failed.value.detail.startswith("parser exceeded its memory limit (200 MB)")
        # The next document gets a healthy child.
        assert parser.parse(SAMPLES["notes.md"], "notes.md") == parse(SAMPLES["notes.md"], "notes.md")
    finally:
        parser.close()


def test_cpu_time_limit():
    parser = SandboxedParser(settings(cpu_seconds=1, wall_seconds=60), processes=1)
    try:
        started = time.monotonic()
        with pytest.raises(ParseFailed) as failed:
            parser.parse(paragraph_flood_docx(8), "flood.docx")
        assert failed.value.reason == "cpu_time"
        assert failed.value.detail == "parser exceeded its CPU time limit (1 s)"
        assert time.monotonic() - started < 30
        assert parser.parse(SAMPLES["rows.csv"], "rows.csv") == parse(SAMPLES["rows.csv"], "rows.csv")
    finally:
        parser.close()


def test_wall_clock_limit_kills_and_replaces_the_child():
    parser = SandboxedParser(settings(wall_seconds=0.5), processes=1)
    try:
        parser.parse(SAMPLES["notes.md"], "notes.md")  # start the child outside the timed part
        (first,) = parser.child_pids()
        started = time.monotonic()
        with pytest.raises(ParseFailed) as failed:
            parser.parse(paragraph_flood_docx(8), "flood.docx")
        assert time.monotonic() - started < 5
        assert failed.value.reason == "timeout"
        assert failed.value.detail == "parser did not finish within 0.5 s"
        assert parser.child_pids() == []
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)
        assert parser.parse(SAMPLES["notes.md"], "notes.md") == parse(SAMPLES["notes.md"], "notes.md")
        assert parser.child_pids() != [first]
    finally:
        parser.close()


def test_output_limit():
    parser = SandboxedParser(settings(max_output_chars=200), processes=1)
    try:
        small = b"# Short\n\nfits easily\n"
        assert parser.parse(small, "small.md") == parse(small, "small.md")
        with pytest.raises(ParseFailed) as failed:
            parser.parse(b"# Long\n\n" + b"word " * 100, "long.md")
        assert failed.value.reason == "output_too_large"
        assert failed.value.detail == "parser produced more than 200 characters"
        assert parser.parse(small, "small.md") == parse(small, "small.md")
    finally:
        parser.close()


def test_a_crashing_child_costs_one_document():
    parser = SandboxedParser(settings(), processes=1)
    try:
        parser.parse(SAMPLES["notes.md"], "notes.md")
        (pid,) = parser.child_pids()
        flood = paragraph_flood_docx(8)
        result: list = []
        worker = threading.Thread(target=lambda: result.append(outcome(parser.parse, flood, "x.docx")))
        worker.start()
        time.sleep(1.0)  # the flood keeps the child busy for seconds
        os.kill(pid, signal.SIGSEGV)
        worker.join(30)
        ((cls, detail, extra),) = result
        assert cls is ParseFailed
        assert detail == "parser crashed (signal SIGSEGV)"
        assert extra == {"reason": "crashed"}
        assert parser.parse(SAMPLES["notes.md"], "notes.md") == parse(SAMPLES["notes.md"], "notes.md")
    finally:
        parser.close()


def test_a_child_that_died_while_idle_is_replaced_silently(sandbox):
    sandbox.parse(SAMPLES["notes.md"], "notes.md")
    for pid in sandbox.child_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert sandbox.parse(SAMPLES["rows.csv"], "rows.csv") == parse(SAMPLES["rows.csv"], "rows.csv")


# ---- the pool -------------------------------------------------------------------------------


def test_concurrent_parses_from_threads_share_a_small_pool():
    parser = SandboxedParser(settings(), processes=2)
    names = sorted(SAMPLES) * 3
    results: dict[int, object] = {}
    most_children = 0

    def work(i: int) -> None:
        nonlocal most_children
        results[i] = outcome(parser.parse, SAMPLES[names[i]], names[i])
        most_children = max(most_children, len(parser.child_pids()))

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(names))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == len(names)
        for i, name in enumerate(names):
            assert results[i] == outcome(parse, SAMPLES[name], name), name
        assert 1 <= most_children <= 2
    finally:
        parser.close()


def test_close_stops_children_and_refuses_further_work():
    parser = SandboxedParser(settings(), processes=1)
    parser.parse(SAMPLES["notes.md"], "notes.md")
    (pid,) = parser.child_pids()
    parser.close()
    parser.close()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(NotReady):
        parser.parse(SAMPLES["notes.md"], "notes.md")


def test_make_parser_honours_the_sandbox_switch():
    in_process = make_parser(settings(sandbox=False), processes=4)
    assert not isinstance(in_process, SandboxedParser)
    assert in_process(SAMPLES["notes.md"], "notes.md") == parse(SAMPLES["notes.md"], "notes.md")
    in_process.close()
    sandboxed = make_parser(settings(), processes=1)
    try:
        assert isinstance(sandboxed, SandboxedParser)
        assert sandboxed(SAMPLES["rows.csv"], "rows.csv") == parse(SAMPLES["rows.csv"], "rows.csv")
    finally:
        sandboxed.close()


def test_page_block_limits_and_redaction_happen_in_the_child():
    """A page-count bomb is refused from its page tree, a flood of blocks by count, each with a
    clear reason naming the setting; secrets are redacted before the text leaves the child."""
    parser = SandboxedParser(settings(max_pages=5, max_blocks=10), processes=1)
    try:
        with pytest.raises(PayloadTooLarge) as pages:
            parser.parse(build_repeated_page_pdf(200_000), "bomb.pdf")
        assert pages.value.detail == "'bomb.pdf' has 200,000 pages; the limit is 5 (parsing.max_pages)"
        assert len(parser.parse(build_repeated_page_pdf(5), "five.pdf").blocks) == 5

        with pytest.raises(PayloadTooLarge) as blocks:
            parser.parse(b"a\n\n" * 11, "many.txt")
        assert "splits into 11 blocks of text; the limit is 10 (parsing.max_blocks)" in blocks.value.detail

        text = b"Notes\n\nConnect with password=Hunter2Hunter2 today.\n"
        doc, counts = parser.parse_redacted(text, "creds.txt")
        assert counts == {"password": 1}
        assert doc.blocks[1].text == "Connect with password=[REDACTED:password] today."
        assert "Hunter2Hunter2" in parser.parse(text, "creds.txt").blocks[1].text  # not asked to
    finally:
        parser.close()


def test_in_process_parser_applies_the_same_page_limit():
    parser = make_parser(settings(sandbox=False, max_pages=3), processes=1)
    with pytest.raises(PayloadTooLarge, match="has 4 pages; the limit is 3"):
        parser(build_repeated_page_pdf(4), "four.pdf")
    doc, counts = parser.parse_redacted(b"Config\n\ntoken = 'abcdefgh12345'\n", "t.txt")
    assert counts == {"secret": 1} and "abcdefgh12345" not in doc.blocks[1].text
