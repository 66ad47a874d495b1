"""Every regex that meets untrusted text, fed 1 MB of what makes backtracking engines blow up.

Each case runs in a forked child with a generous cap (30 s): a linear pass over 1 MB takes well
under a second even on a loaded machine, while the quadratic or exponential patterns these
replace ran for minutes or hours on the same input. Reaching the cap is the failure signal; no
test asserts a duration. Each case also checks what the function returned.
"""

from __future__ import annotations

import multiprocessing
import pickle

import pytest

from appliance.config import LimitSettings
from appliance.document import Block, Location, ParsedDocument
from appliance.ingest import chunking
from appliance.ingest.chunking import Chunker
from appliance.ingest.intake import NewDocument, make_job_item
from appliance.ingest.parsers import HTML, MARKDOWN, TEXT, html, markdown, sniff, structured
from appliance.ingest.secrets import redact_secrets

MB = 1 << 20
CAP_SECONDS = 30.0


def finishes(fn, *args):
    """fn(*args), computed in a forked child that is killed past CAP_SECONDS (a test failure)."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def run() -> None:
        try:
            send.send_bytes(pickle.dumps(("ok", fn(*args))))
        except BaseException as e:  # report it to the parent rather than die silently
            send.send_bytes(pickle.dumps(("error", f"{type(e).__name__}: {e}")))

    child = ctx.Process(target=run, daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(CAP_SECONDS):
            pytest.fail(
                f"{getattr(fn, '__name__', fn)} did not finish within {CAP_SECONDS:g} s: super-linear"
            )
        status, value = pickle.loads(receive.recv_bytes())
    finally:
        child.kill()
        child.join()
        receive.close()
    if status == "error":
        pytest.fail(f"{getattr(fn, '__name__', fn)} raised {value}")
    return value


# -- chunking: sentence ends --------------------------------------------------------------------


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    return chunking._sentences(text, 0, len(text))


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("." * MB, 1),  # a run of dots: 77 s of /healthz for 100 KB before
        ("!?" * (MB // 2), 1),
        (".)" * (MB // 2), 1),
        ("." * MB + " tail", 2),
        ("a" + ")" * MB, 1),
        ("Word. " * (MB // 6), MB // 6 + 1),
    ],
    ids=["dots", "bangs", "dot-paren", "dots-then-space", "parens", "sentences"],
)
def test_sentence_split_is_linear(text, spans):
    out = finishes(_sentence_spans, text)
    assert len(out) == spans
    assert out[0][0] == 0 and out[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(out, out[1:], strict=False))  # contiguous, nothing lost


def _chunk_plain(text: str) -> list[tuple[int, int]]:
    # A cheap counter (one token per 4 characters or per word, whichever is more) keeps the test
    # about the chunker's own work; the real tokenizer is exercised in test_chunking.py.
    def count(t: str) -> int:
        return max(len(t) // 4, len(t.split()), 1)

    doc = ParsedDocument(TEXT, "", [Block("paragraph", text, Location(line_start=1, line_end=1))])
    chunks = Chunker(count, size=128, overlap=16).chunk(doc)
    return [(len(c.text), c.token_count) for c in chunks]


@pytest.mark.parametrize(
    "text",
    ["." * MB, "a. " * (MB // 4), "x" * MB, "a=" * (MB // 2), "a" + " \t" * (MB // 2) + "b"],
    ids=["dots", "short-sentences", "one-word", "a=a=", "spaces-tabs"],
)
def test_chunking_hostile_paragraphs_is_linear_and_bounded(text):
    chunks = finishes(_chunk_plain, text)
    assert chunks
    assert all(chars <= 128 * chunking.MAX_CHARS_PER_TOKEN and tokens <= 128 for chars, tokens in chunks)


# -- format detection and intake ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"\n" * MB, TEXT),  # 65 KB of newlines kept the upload's POST busy for 42 s
        (b" \t" * (MB // 2) + b"x", TEXT),
        (b"](" * (MB // 2), TEXT),
        (b"\n- [ ] " * (MB // 7), MARKDOWN),
        (b"|" + b" " * MB + b"---", TEXT),
        (b"<!---->" * 580 + b"x", TEXT),  # inside the 4 KiB HTML probe: exponential before
        (b"<!---->" * 580 + b"<html><p>hi</p></html>", HTML),
        (b"a," * (MB // 2), TEXT),
        (b"\r\n" * (MB // 2), TEXT),
    ],
    ids=[
        "newlines",
        "spaces-tabs",
        "link-openers",
        "task-lines",
        "table-rule",
        "comments",
        "comments-html",
        "commas",
        "crlf",
    ],
)
def test_sniff_is_linear(data, mime):
    assert finishes(sniff, data, None) == mime


def _intake(content: bytes) -> str:
    item = make_job_item(0, "c", NewDocument(content=content, filename="x"), True, LimitSettings())
    return item.source_id


def test_upload_intake_does_no_text_heuristics():
    """What runs while the POST waits is magic bytes and a 64 KiB binary check: linear and small."""
    assert finishes(_intake, b"\n" * (64 * 1024) + b"x") == "x"
    assert finishes(_intake, b"<!---->" * 100 + b"x") == "x"


# -- Markdown ------------------------------------------------------------------------------------


def _markdown(text: str) -> tuple[str, list[tuple[str, str]]]:
    doc = markdown.parse(text, "t.md")
    return doc.title, [(b.kind, b.text[:40]) for b in doc.blocks]


def test_markdown_heading_with_a_megabyte_of_blanks():
    title, blocks = finishes(_markdown, "# Title" + " \t" * (MB // 2) + "end #\nbody")
    assert title == "Title" + " \t" * (MB // 2) + "end"
    assert blocks[-1] == ("paragraph", "body")


def test_markdown_table_rule_hr_and_setext_lines():
    text = "a | b\n-" + " " * MB + "x\n\n" + "- " * (MB // 2) + "x\n\nT\n" + "=" * MB + " y\n"
    _, blocks = finishes(_markdown, text)
    assert [k for k, _ in blocks] == ["paragraph", "list", "paragraph"]


def test_markdown_front_matter_title():
    title, _ = finishes(_markdown, '---\ntitle: "A' + " " * MB + 'b"\n---\nbody\n')
    assert title == "A" + " " * MB + "b"


def test_markdown_escaped_headings_keep_their_text():
    assert finishes(_markdown, "## Heading ##\n# #\n#\tx #y\n")[1] == [
        ("heading", "Heading"),
        ("heading", "#"),
        ("heading", "x #y"),
    ]


# -- HTML fallback and headings -------------------------------------------------------------------


def _fallback(text: str) -> list[str]:
    return [b.text for b in html._fallback(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!--" * (MB // 4), ["<!--" * (MB // 4)]),  # an unclosed comment is text, as before
        ("<script>" * (MB // 8) + "x", ["x"]),
        ("<" * MB + "a", ["<" * MB + "a"]),
        ("<b>keep</b><!-- drop --><style>p{}</style> this", ["keep this"]),
        ("<script>a</script>b<SCRIPT >c</script  >d", ["b d"]),
    ],
    ids=["open-comments", "open-scripts", "open-angles", "mixed", "case-and-blanks"],
)
def test_html_fallback_is_linear(text, expected):
    out = finishes(_fallback, text)
    assert [" ".join(t.split()) for t in out] == [" ".join(t.split()) for t in expected]


def _html_headings(text: str) -> list[str]:
    return [b.text for b in html.parse(text, "t.html").blocks if b.kind == "heading"]


def test_html_heading_permalink_strip():
    heading = "Intro" + "#" * MB + " x"
    assert finishes(_html_headings, f"<html><body><h1>{heading} ¶</h1><p>text</p></body></html>") == [heading]


# -- JSON ------------------------------------------------------------------------------------------


def _json_leaves(text: str) -> int:
    return len(structured._leaves(text))


def test_json_scan_of_long_strings_and_escapes():
    assert finishes(_json_leaves, '{"a": "' + "x" * MB + '"}') == 1
    assert finishes(_json_leaves, '["' + "\\n" * (MB // 2) + '"]') == 1
    assert finishes(_json_leaves, "[" * 100_000 + "]" * 100_000) == 1


# -- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a=" * (MB // 2),
        "password:" * (MB // 9),
        "token: " * (MB // 7),
        "secret_key " + " " * MB + "= x",
        "bearer " * (MB // 7),
        "sk-" * (MB // 3),
        "a://" * (MB // 4),
        ".eyJ" * (MB // 4),
        "xoxa- " * (MB // 6),
        "-----BEGIN " * (MB // 11),
        "." * MB,
        "\n" * MB,
        " \t" * (MB // 2),
        "&" * MB,
        "token=" + "(" * MB,
    ],
    ids=[
        "a=a=", "password:", "token:", "secret-key-blanks", "bearer", "sk-", "scheme", "jwt-starts",
        "slack", "pem-begin", "dots", "newlines", "spaces-tabs", "ampersands", "token-parens",
    ],
)  # fmt: skip
def test_secret_scan_is_linear_and_leaves_hostile_non_secrets_alone(text):
    out, counts = finishes(redact_secrets, text)
    assert counts == {} and out == text


def test_secret_scan_still_finds_secrets_among_a_megabyte_of_noise():
    text = "a=" * (MB // 4) + " password=Hunter2Hunter2 " + "." * (MB // 2)
    out, counts = finishes(redact_secrets, text)
    assert counts == {"password": 1}
    assert "Hunter2" not in out and out.endswith("." * (MB // 2))
