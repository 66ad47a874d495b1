"""Parsers on generated fixtures (and real documents when installed): content, locations, errors."""

from __future__ import annotations

import glob
import io
import json
import os
import random
import zipfile

import pytest

from appliance.errors import ApplianceError, InvalidInput, UnsupportedFormat
from appliance.ingest.parsers import CSV, DOCX, HTML, JSON, MARKDOWN, PDF, SOURCE, TEXT, parse, sniff
from tests.ingest.pdf_fixture import build_pdf

R_PDFS = sorted(
    glob.glob("/usr/share/doc/r-doc-pdf/*.pdf") + glob.glob("/usr/share/doc/r-doc-pdf/manual/*.pdf")
)
PY_DOCS = "/usr/share/doc/python3.11-doc/html/library"


def _lines(data: str, loc) -> str:
    """The source text a location points at."""
    return "\n".join(data.split("\n")[loc.line_start - 1 : loc.line_end])


def _docx_bytes() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = ""
    d.add_heading("Quarterly Report", level=1)
    d.add_paragraph("Revenue grew in every region this quarter.")
    d.add_heading("Regional Results", level=2)
    d.add_paragraph("The north region led growth.")
    table = d.add_table(rows=3, cols=3)
    for r, row in enumerate(
        [["Region", "Revenue", "Growth"], ["North", "120", "12%"], ["South", "95", "4%"]]
    ):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_paragraph("First action item", style="List Bullet")
    d.add_paragraph("Second action item", style="List Bullet")
    d.add_heading("Outlook", level=2)
    d.add_paragraph("We expect steady demand.")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


# -- sniffing ------------------------------------------------------------------------------


def test_sniff_uses_content_before_extension():
    pdf = build_pdf([["Hello"]])
    assert sniff(pdf, "notes.txt") == PDF
    assert sniff(_docx_bytes(), "upload.bin") == DOCX
    assert sniff(b"<!DOCTYPE html><html><body><p>x</p></body></html>", "page.txt") == HTML
    assert sniff(b"<html><body>hi</body></html>") == HTML
    assert sniff(b'{"a": [1, 2, {"b": null}]}', "data.txt") == JSON
    assert sniff(b"name,age,city\nAda,36,London\nAlan,41,Wilmslow\nGrace,85,Arlington\n", "people.txt") == CSV
    assert sniff(b"# Title\n\nSome *text*.\n", "readme.md") == MARKDOWN
    assert sniff(b"# Title\n\nSome text.\n", "readme.txt") == TEXT
    assert sniff(b"def f():\n    return 1\n", "mod.py") == SOURCE
    assert sniff(b"#!/usr/bin/env python3\nprint('hi')\n") == SOURCE
    assert sniff(b"[1, 2, 3]\n", "mod.py") == SOURCE  # a source extension wins over a JSON-looking body
    assert sniff(b"a,b\n1,2\n", "t.csv") == CSV
    assert sniff(b"Just a sentence, with a comma.\nAnother line here.\n") == TEXT
    assert sniff(b"Notes on the format: files start with %PDF-1.7 and end with a trailer.\n") == TEXT


def test_sniff_detects_binary_and_archives():
    random.seed(7)
    noise = bytes(random.getrandbits(8) for _ in range(4096))
    assert sniff(noise, "file.txt") == "application/octet-stream"
    assert sniff(b"\x00\x01\x02binary\x00\x00stuff" * 50) == "application/octet-stream"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "not a word document")
    assert sniff(buf.getvalue(), "x.docx") == "application/zip"
    assert sniff(b"\x89PNG\r\n\x1a\n" + noise) == "image/png"


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  ", b"\x00\x00", b"\xef\xbb\xbf  \n"])
def test_empty_input_is_invalid(data):
    with pytest.raises(InvalidInput, match="'blank.txt' is empty"):
        parse(data, "blank.txt")


def test_binary_renamed_pdf_is_unsupported_with_clear_message():
    random.seed(3)
    noise = bytes(random.getrandbits(8) for _ in range(10_000))
    with pytest.raises(UnsupportedFormat) as err:
        parse(noise, "scan.pdf")
    assert "'scan.pdf'" in err.value.detail
    assert "binary data" in err.value.detail and ".pdf extension" in err.value.detail


def test_truncated_and_malformed_pdf_are_unsupported():
    pdf = build_pdf([["First page text."], ["Second page text."]])
    for bad in (pdf[: len(pdf) // 2], pdf[:60], b"%PDF-1.7\n" + b"garbage " * 100):
        with pytest.raises(UnsupportedFormat, match=r"'broken\.pdf' is not a readable PDF"):
            parse(bad, "broken.pdf")


def test_pdf_without_text_explains_scans():
    with pytest.raises(UnsupportedFormat, match="3 page.*no extractable text.*OCR"):
        parse(build_pdf([[], [], []]), "scanned.pdf")


def test_zip_renamed_docx_and_broken_docx_are_unsupported():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.csv", "a,b\n1,2\n")
    with pytest.raises(
        UnsupportedFormat, match=r"'report\.docx' cannot be ingested: it is a zip archive that is not a Word"
    ):
        parse(buf.getvalue(), "report.docx")
    # A zip that claims to be a DOCX but whose XML is broken: a library error, wrapped.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types")
        zf.writestr("word/document.xml", "<w:document")
    with pytest.raises(UnsupportedFormat, match=r"'fake\.docx' could not be read as application/vnd"):
        parse(buf.getvalue(), "fake.docx")


def test_weird_inputs_raise_only_appliance_errors():
    random.seed(11)
    pdf = build_pdf([["Some text here."]])
    docx_data = _docx_bytes()
    samples = [
        pdf[:-200], pdf.replace(b"/Root", b"/Rooo"), docx_data[: len(docx_data) // 2],
        b"PK\x03\x04" + b"\x00" * 100, b"<html>", b"<html><head><title>T</title></head></html>",
        b"{" * 100_000, b"[" * 3000 + b"]" * 3000, b"\xff\xfe" + "hi there".encode("utf-16-le"),
        bytes(random.getrandbits(8) for _ in range(2000)), b"a,b\n\"unterminated\n",
    ]  # fmt: skip
    for data in samples:
        try:
            doc = parse(data, "weird.bin")
        except ApplianceError as e:
            assert "'weird.bin'" in e.detail
        else:
            assert doc.blocks


# -- PDF -----------------------------------------------------------------------------------


def test_pdf_pages_are_one_based_and_title_from_metadata():
    pdf = build_pdf(
        [["Alpha page one.", "Still page one."], [], ["Gamma page three."]],
        title="Field Manual",
    )
    doc = parse(pdf, "manual.pdf")
    assert doc.mime_type == PDF and doc.title == "Field Manual"
    assert [(b.location.page, b.text) for b in doc.blocks] == [
        (1, "Alpha page one.\nStill page one."),
        (3, "Gamma page three."),
    ]
    assert doc.metadata["page_count"] == 3 and doc.metadata["pages_without_text"] == [2]


def test_pdf_title_falls_back_to_first_line_and_running_headers_go():
    pages = [
        [f"Acme Handbook page {n}", f"Body {n} (escaped) \\ ok.", "x" * n, f"Section {n} ends.", str(n)]
        for n in range(1, 5)
    ]
    doc = parse(build_pdf(pages), "handbook.pdf")
    assert doc.title == "Acme Handbook page 1"
    assert [b.location.page for b in doc.blocks] == [1, 2, 3, 4]
    assert all("Acme Handbook" not in b.text for b in doc.blocks)  # running header
    assert doc.blocks[2].text == "Body 3 (escaped) \\ ok.\nxxx\nSection 3 ends."  # page-number footer gone
    short = parse(build_pdf([["Same line 1"], ["Same line 2"], ["Same line 3"]]), "short.pdf")
    assert [b.text for b in short.blocks] == ["Same line 1", "Same line 2", "Same line 3"]


# -- DOCX ----------------------------------------------------------------------------------


def test_docx_headings_tables_and_lists():
    doc = parse(_docx_bytes(), "report.docx")
    assert doc.mime_type == DOCX and doc.title == "Quarterly Report"
    by_text = {b.text: b for b in doc.blocks}
    assert by_text["Revenue grew in every region this quarter."].location.heading_path == (
        "Quarterly Report",
    )
    assert by_text["The north region led growth."].location.heading_path == (
        "Quarterly Report",
        "Regional Results",
    )
    assert by_text["We expect steady demand."].location.heading_path == ("Quarterly Report", "Outlook")
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.header == "Region | Revenue | Growth"
    assert table.text == "Region: North; Revenue: 120; Growth: 12%\nRegion: South; Revenue: 95; Growth: 4%"
    assert table.location.heading_path == ("Quarterly Report", "Regional Results")
    lst = next(b for b in doc.blocks if b.kind == "list")
    assert lst.text == "- First action item\n- Second action item"
    kinds = [b.kind for b in doc.blocks]
    assert kinds.index("table") < kinds.index("list")  # document order is kept


# -- HTML ----------------------------------------------------------------------------------


HTML_PAGE = """<!DOCTYPE html>
<html><head><title>Install Guide</title><style>p { color: red }</style>
<script>var secret = "do not index";</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/docs">Docs</a></nav>
<h1>Installing</h1>
<p>Run the <b>installer</b> as root.</p>
<h2>Requirements</h2>
<ul><li>Linux x86-64</li><li>8 GB RAM<ul><li>16 GB recommended</li></ul></li></ul>
<table><thead><tr><th>Model</th><th>RAM</th></tr></thead>
<tbody><tr><td>small</td><td>4 GB</td></tr><tr><td>large</td><td>32 GB</td></tr></tbody></table>
<pre><code class="language-bash">sudo ./install.sh
appliance doctor</code></pre>
<h2>Troubleshooting</h2>
<div>Check the <i>logs</i>.<br>Then retry.</div>
<!-- a comment --><footer>Copyright 2024 Acme</footer>
</body></html>"""


def test_html_structure_headings_tables_and_noise_removed():
    doc = parse(HTML_PAGE.encode(), "guide.html")
    assert doc.mime_type == HTML and doc.title == "Install Guide"
    text = doc.text
    for noise in ("secret", "Home", "Copyright", "color: red", "a comment"):
        assert noise not in text
    para = next(b for b in doc.blocks if b.text.startswith("Run the"))
    assert para.text == "Run the installer as root." and para.location.heading_path == ("Installing",)
    lst = next(b for b in doc.blocks if b.kind == "list")
    assert lst.text == "- Linux x86-64\n- 8 GB RAM\n  - 16 GB recommended"
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.header == "Model | RAM"
    assert table.text == "Model: small; RAM: 4 GB\nModel: large; RAM: 32 GB"
    assert table.location.heading_path == ("Installing", "Requirements")
    code = next(b for b in doc.blocks if b.kind == "code")
    assert code.language == "shell" and code.text == "sudo ./install.sh\nappliance doctor"
    last = doc.blocks[-1]
    assert last.text == "Check the logs. Then retry."
    assert last.location.heading_path == ("Installing", "Troubleshooting")


def test_html_without_body_or_text_is_invalid_and_deep_nesting_is_fine():
    with pytest.raises(InvalidInput, match="no text"):
        parse(b"<html><head><title>Only a title</title></head></html>", "empty.html")
    for depth in (1000, 5000):  # beyond libxml2's limits: flat text rather than silent loss
        deep = "<html><body><p>before</p>" + "<div>" * depth + "deep text" + "</div>" * depth + "<p>after</p>"
        doc = parse(deep.encode(), "deep.html")
        assert "before" in doc.text and "deep text" in doc.text and "after" in doc.text
    doc = parse(b"<p>No html or body tags, <b>just</b> a fragment.</p>", "frag.html")
    assert doc.blocks[0].text == "No html or body tags, just a fragment."


# -- Markdown ------------------------------------------------------------------------------


MARKDOWN_DOC = """---
title: Front Title
---
# Guide

Intro paragraph line one
continues here.

## Setup

- step one
- step two
  continued

```python
def main():
    return 42
```

| Name | Port |
|------|-----:|
| api  | 8080 |
| db   | 5432 |

Sub Section
-----------

> quoted text

    indented code
"""


def test_markdown_blocks_heading_paths_and_exact_lines():
    doc = parse(MARKDOWN_DOC.encode(), "guide.md")
    assert doc.mime_type == MARKDOWN and doc.title == "Guide"
    blocks = {b.kind + ":" + b.text.split("\n")[0]: b for b in doc.blocks}
    intro = blocks["paragraph:Intro paragraph line one"]
    assert (intro.location.line_start, intro.location.line_end) == (6, 7)
    assert intro.location.heading_path == ("Guide",)
    lst = blocks["list:- step one"]
    assert (lst.location.line_start, lst.location.line_end) == (11, 13)
    assert lst.location.heading_path == ("Guide", "Setup")
    code = blocks["code:def main():"]
    assert code.language == "python" and (code.location.line_start, code.location.line_end) == (16, 17)
    table = blocks["table:Name: api; Port: 8080"]
    assert table.header == "Name | Port" and table.text.split("\n")[1] == "Name: db; Port: 5432"
    assert (table.location.line_start, table.location.line_end) == (22, 23)
    quote = blocks["paragraph:quoted text"]
    assert quote.location.heading_path == ("Guide", "Sub Section") and quote.location.line_start == 28
    indented = blocks["code:indented code"]
    assert indented.location.line_start == 30
    for b in doc.blocks:  # every block has lines, and line-aligned blocks quote their source
        assert b.location.line_start is not None
        if b.kind in ("paragraph", "list", "code") and b.text != "quoted text":
            assert _lines(MARKDOWN_DOC, b.location).strip().endswith(b.text.split("\n")[-1].strip())


def test_markdown_front_matter_title_used_without_h1():
    doc = parse(b"---\ntitle: 'Notes'\n---\n\n## Part\n\ntext\n", "n.md")
    assert doc.title == "Notes"
    assert doc.blocks[-1].location.heading_path == ("Part",) and doc.blocks[-1].location.line_start == 7


# -- CSV / JSON ----------------------------------------------------------------------------


def test_csv_rows_with_header_and_line_numbers():
    data = 'id,name,notes\n1,Ada,"first"\n2,Alan,"two\nlines"\n3,Grace,third\n'
    doc = parse(data.encode(), "people.csv")
    assert doc.mime_type == CSV
    rows = [(b.text, b.location.line_start, b.location.line_end, b.header) for b in doc.blocks]
    assert rows == [
        ("id: 1; name: Ada; notes: first", 2, 2, "id | name | notes"),
        ("id: 2; name: Alan; notes: two lines", 3, 4, "id | name | notes"),
        ("id: 3; name: Grace; notes: third", 5, 5, "id | name | notes"),
    ]
    tsv = parse(b"a\tb\n1\t2\n", "t.tsv")
    assert tsv.blocks[0].text == "a: 1; b: 2" and tsv.metadata["delimiter"] == "\t"


def test_json_flattened_with_line_numbers_and_deep_nesting():
    data = json.dumps({"service": {"name": "api", "ports": [80, 443]}, "tags": [], "on": True}, indent=2)
    doc = parse(data.encode(), "config.json")
    assert doc.mime_type == JSON
    lines = data.split("\n")
    texts = [line for b in doc.blocks for line in b.text.split("\n")]
    assert texts == [
        "service.name: api",
        "service.ports[0]: 80",
        "service.ports[1]: 443",
        "tags: []",
        "on: true",
    ]
    first = doc.blocks[0]
    assert '"name": "api"' in lines[first.location.line_start - 1]
    assert "443" in lines[first.location.line_end - 1]
    deep = b"[" * 5000 + b'"core"' + b"]" * 5000
    doc = parse(deep, "deep.json")
    assert doc.blocks[0].text.endswith(": core") and len(doc.blocks[0].text) < 200


def test_many_json_records_become_blocks_with_tight_line_ranges():
    records = [{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(300)]
    data = json.dumps(records, indent=1)
    doc = parse(data.encode(), "items.json")
    assert len(doc.blocks) == 300
    b = doc.blocks[123]
    assert b.text == "[123].id: 123\n[123].name: item 123\n[123].tags[0]: a\n[123].tags[1]: b"
    cited = data.split("\n")[b.location.line_start - 1 : b.location.line_end]
    assert cited == ['  "id": 123,', '  "name": "item 123",', '  "tags": [', '   "a",', '   "b"']


# -- text and code -------------------------------------------------------------------------


def test_text_paragraphs_cp1252_nul_and_crlf():
    raw = "Café prices – “quoted”\r\nsecond line\r\n\r\nNext paragraph\x00 here.\r\n".encode("cp1252")
    raw = raw.replace(b"\x00", b"") + b""
    doc = parse(raw.replace(b"Next paragraph", b"Next paragraph\x00"), "notes.txt")
    assert doc.mime_type == TEXT and doc.title == "Café prices – “quoted”"
    assert [(b.text, b.location.line_start, b.location.line_end) for b in doc.blocks] == [
        ("Café prices – “quoted”\nsecond line", 1, 2),
        ("Next paragraph here.", 4, 4),
    ]
    utf16 = parse("Hello wörld\n".encode("utf-16"), "u16.txt")
    assert utf16.blocks[0].text == "Hello wörld"


def test_large_single_line_text():
    data = ("word " * 400_000).encode()  # 2 MB, one line
    doc = parse(data, "big.txt")
    assert len(doc.blocks) == 1 and doc.blocks[0].location.line_start == doc.blocks[0].location.line_end == 1
    assert doc.title == "big.txt"  # first line too long to be a title


PY_SOURCE = '''"""Module doc."""

import os


@decorator
def first(x):
    y = x + 1

    return y


class Second:
    def method(self):
        pass
'''


def test_python_source_blocks_per_definition_with_lines():
    doc = parse(PY_SOURCE.encode(), "pkg/mod.py")
    assert doc.mime_type == SOURCE and doc.title == "mod.py"
    spans = [(b.location.line_start, b.location.line_end, b.language, b.kind) for b in doc.blocks]
    assert spans == [(1, 1, "python", "code"), (3, 3, "python", "code"), (6, 10, "python", "code"),
                     (13, 15, "python", "code")]  # fmt: skip
    for b in doc.blocks:
        assert _lines(PY_SOURCE, b.location) == b.text


def test_other_languages_get_their_language():
    go = b"package main\n\nfunc main() {\n\tx := 1\n\n\tprintln(x)\n}\n"
    doc = parse(go, "main.go")
    assert [b.language for b in doc.blocks] == ["go", "go"]
    assert (doc.blocks[1].location.line_start, doc.blocks[1].location.line_end) == (3, 7)
    assert parse(b"key: value\nother: 2\n", "conf.yaml").blocks[0].language == "yaml"
    assert parse(b"SELECT 1;\n", "q.sql").blocks[0].language == "sql"


# -- real documents, when installed --------------------------------------------------------


@pytest.mark.skipif(not R_PDFS, reason="r-doc-pdf not installed (apt-get install r-doc-pdf)")
def test_real_pdfs_parse_with_valid_pages():
    for path in R_PDFS[:4]:
        data = open(path, "rb").read()
        doc = parse(data, os.path.basename(path))
        pages = doc.metadata["page_count"]
        assert doc.title and doc.blocks
        assert all(1 <= b.location.page <= pages for b in doc.blocks)
        assert [b.location.page for b in doc.blocks] == sorted(b.location.page for b in doc.blocks)


@pytest.mark.skipif(
    not os.path.isdir(PY_DOCS), reason="python3.11-doc not installed (apt-get install python3.11-doc)"
)
def test_real_html_docs_have_heading_paths():
    path = os.path.join(PY_DOCS, "json.html")
    doc = parse(open(path, "rb").read(), "json.html")
    assert "json" in doc.title.lower()
    assert any(len(b.location.heading_path) >= 2 for b in doc.blocks)
    assert any(b.kind == "code" for b in doc.blocks)
