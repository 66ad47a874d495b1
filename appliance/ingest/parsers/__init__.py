"""Format detection by content and dispatch to one parser per format, with clear errors."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import PurePath

from appliance.document import ParsedDocument
from appliance.errors import ApplianceError, InvalidInput, UnsupportedFormat
from appliance.ingest.parsers import code, structured, text
from appliance.ingest.parsers.text import bom_encoding, decode_text

TEXT = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
SOURCE = "text/x-source"
JSON = "application/json"
CSV = "text/csv"
SUPPORTED = (TEXT, MARKDOWN, HTML, PDF, DOCX, SOURCE, JSON, CSV)
BINARY = "application/octet-stream"

# Recognisable formats we do not parse, so the error can say what the file actually is.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "a PNG image"),
    (b"\xff\xd8\xff", "image/jpeg", "a JPEG image"),
    (b"GIF8", "image/gif", "a GIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage",
     "a legacy Office file (.doc/.xls/.ppt); save it as .docx"),
    (b"{\\rtf", "application/rtf", "an RTF document; save it as .docx"),
    (b"\x1f\x8b", "application/gzip", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed", "a 7-Zip archive"),
    (b"Rar!", "application/vnd.rar", "a RAR archive"),
    (b"\x7fELF", "application/x-executable", "an executable program"),
    (b"%!PS", "application/postscript", "a PostScript file"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3", "an SQLite database"),
)  # fmt: skip
_DESCRIBE = {mime: what for _, mime, what in _MAGIC} | {
    "application/zip": "a zip archive that is not a Word (.docx) document",
    BINARY: "binary data of an unknown format",
}
_MARKDOWN_EXT = {"md", "markdown", "mdown", "mkd", "mkdn", "mdx"}
_TEXT_EXT = {"txt", "text", "log", "rst", "adoc", "asciidoc", "org", "me", "1st", "nfo"}
_HTML_EXT = {"html", "htm", "xhtml", "shtml"}
_CSV_EXT = {"csv", "tsv", "tab"}
# Every pattern here meets untrusted text, so each is linear-time: no two quantifiers can share
# characters, or the one that could is possessive/atomic. A comment ends at its first "-->" (the
# atomic group): letting it stretch to a later one made 200 bytes of "<!---->" take hours.
_HTML_STRONG = re.compile(rb"^(?>(?:\s|<!--.*?-->)*)<(?:!doctype\s+html|html[\s>])", re.I | re.S)
_HTML_WEAK = re.compile(rb"<(?:head|body|title|div|p|table|h[1-6]|ul|meta|link)[\s>/]", re.I)
# Line-start signals look within their own line only ([^\S\n]: whitespace but newline), and a
# link target cannot contain "]", so no position's attempt rescans what another's already did.
_MD_SIGNAL = re.compile(
    r"^(?:#{1,6} \S|```|~~~|[^\S\n]*+[-*] \[[ x]\] |\|?[^\S\n]*+:?-{3,}+:?[^\S\n]*+\|)"
    r"|\]\([^)\s\]]++\)",
    re.M,
)
_PY_SIGNAL = re.compile(r"^(?:def \w+\(|class \w+[(:]|import \w|from [\w.]+ import )", re.M)


def _ext(filename: str | None) -> str:
    return PurePath(filename.replace("\\", "/")).suffix[1:].lower() if filename else ""


def _name(filename: str | None) -> str:
    return repr(PurePath(filename.replace("\\", "/")).name) if filename else "the document"


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "word/document.xml" in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


_CONTROL_BYTES = bytes([*range(0, 8), 11, *range(14, 27), *range(28, 32), 127])


def _looks_binary(sample: bytes) -> bool:
    """Control bytes (NUL above all) rarely occur in text; invalid UTF-8 alone is not enough,
    since legacy 8-bit text is invalid UTF-8 too, so it only tips the balance."""
    if not sample:
        return False
    size = len(sample)
    controls = (size - len(sample.translate(None, _CONTROL_BYTES))) / size
    invalid = sample.decode("utf-8", errors="replace").count("\ufffd") / size
    nuls = sample.count(0)
    return (nuls >= 4 and nuls / size > 0.01) or controls > 0.05 or (invalid > 0.3 and controls > 0.01)


def binary_type(data: bytes) -> str | None:
    """The MIME type of `data` if it is not text (PDF, DOCX, images, archives, unknown binary),
    from magic bytes and a 64 KiB sample; None for text, whose exact kind only `sniff` decides.

    Cheap and linear, so intake can refuse what no parser reads while the request waits; the
    text heuristics of `sniff` run later, in the parser sandbox.
    """
    # The spec tolerates junk before the header; a text merely quoting "%PDF-" has no %%EOF trailer.
    if data.lstrip()[:5] == b"%PDF-" or (b"%PDF-" in data[:1024] and b"%%EOF" in data[-2048:]):
        return PDF
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return DOCX if _is_docx(data) else "application/zip"
    for magic, mime, _ in _MAGIC:
        if data.startswith(magic):
            return mime
    if bom_encoding(data) is None and _looks_binary(data[:65536]):
        return BINARY
    return None


def sniff(data: bytes, filename: str | None = None) -> str:
    """The MIME type of `data`, decided by content; the filename only breaks ties among text types."""
    ext = _ext(filename)
    if (mime := binary_type(data)) is not None:
        return mime
    sample = decode_text(data[:65536])
    stripped = sample.lstrip("\ufeff \t\n")
    source_like = ext in code._LANGUAGES or ext in _MARKDOWN_EXT or code.language_for(filename) is not None
    if _HTML_STRONG.match(sample.encode("utf-8", "ignore")[:4096]):
        return HTML
    if stripped[:1] in ("{", "[") and not source_like:
        try:
            json.loads(decode_text(data))
            return JSON
        except RecursionError:
            return JSON  # valid-looking but deeper than json.loads goes; the JSON parser copes
        except ValueError:
            pass
    if ext in _HTML_EXT and stripped.startswith("<"):
        return HTML
    if not ext and stripped.startswith("<") and _HTML_WEAK.search(stripped[:4096].encode("utf-8", "ignore")):
        return HTML
    if ext in _CSV_EXT:
        return CSV
    if not source_like and structured.csv_delimiter(sample, complete=len(data) <= 65536):
        return CSV
    if ext in _MARKDOWN_EXT:
        return MARKDOWN
    if source_like:
        return SOURCE
    if ext in _TEXT_EXT or ext:
        return TEXT
    # No extension at all: weigh content signals.
    if stripped.startswith("#!") and code.language_for(None, stripped):
        return SOURCE
    if len(_PY_SIGNAL.findall(sample)) >= 2:
        return SOURCE
    if len(_MD_SIGNAL.findall(sample)) >= 2:
        return MARKDOWN
    return TEXT


def unsupported_reason(data: bytes, filename: str | None = None) -> str | None:
    """Why `data` cannot be ingested, judged cheaply from its content (None: it may be parsed)."""
    if not data.strip(b" \t\r\n\x0b\x0c\x00"):
        return "empty file"
    mime = binary_type(data)  # text of every kind is supported: no need for sniff's heuristics
    if mime is None or mime in SUPPORTED:
        return None
    ext = _ext(filename)
    hint = f" (despite its .{ext} extension)" if ext else ""
    return f"unsupported format: {_DESCRIBE.get(mime, mime)}{hint}"


def parse(data: bytes, filename: str | None = None, *, max_pages: int | None = None) -> ParsedDocument:
    """Parse `data` into a ParsedDocument; raises InvalidInput or UnsupportedFormat with a clear message.

    `max_pages` refuses (PayloadTooLarge) a PDF with more pages before any page is read."""
    name = _name(filename)
    if not data or not data.strip(b" \t\r\n\x0b\x0c\x00"):
        raise InvalidInput(f"{name} is empty")
    mime = sniff(data, filename)
    ext = _ext(filename)
    if mime not in SUPPORTED:
        what = _DESCRIBE.get(mime, mime)
        hint = f" (despite its .{ext} extension)" if ext else ""
        raise UnsupportedFormat(f"{name} cannot be ingested: it is {what}{hint}", mime_type=mime)
    try:
        doc = _dispatch(mime, data, name, filename, max_pages)
    except ApplianceError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # a parser library's own exception must not escape as a crash
        raise UnsupportedFormat(
            f"{name} could not be read as {mime}: {type(e).__name__}: {e}", mime_type=mime
        ) from e
    if not doc.blocks:
        raise InvalidInput(f"{name} contains no text once its markup is removed", mime_type=mime)
    if not doc.title and filename:
        doc.title = PurePath(filename.replace("\\", "/")).name
    return doc


def _dispatch(
    mime: str, data: bytes, name: str, filename: str | None, max_pages: int | None
) -> ParsedDocument:
    if mime == PDF:
        from appliance.ingest.parsers import pdf

        return pdf.parse(data, name, max_pages)
    if mime == DOCX:
        from appliance.ingest.parsers import docx

        return docx.parse(data, name)
    content = decode_text(data)
    if not content.strip():
        raise InvalidInput(f"{name} is empty")
    if mime == HTML:
        from appliance.ingest.parsers import html

        return html.parse(content, name)
    if mime == MARKDOWN:
        from appliance.ingest.parsers import markdown

        return markdown.parse(content, name)
    if mime == SOURCE:
        return code.parse(content, name, filename)
    if mime == JSON:
        return structured.parse_json(content, name)
    if mime == CSV:
        return structured.parse_csv(content, name, "\t" if _ext(filename) in ("tsv", "tab") else None)
    return text.parse(content, name)
