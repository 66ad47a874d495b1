"""Plain text: decoding with sensible fallbacks, and paragraphs with exact line ranges."""

from __future__ import annotations

import codecs

from appliance.document import Block, Location, ParsedDocument

MIME = "text/plain"

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def bom_encoding(data: bytes) -> tuple[str, int] | None:
    """The encoding announced by a byte-order mark and the mark's length, if any."""
    for bom, enc in _BOMS:  # UTF-32-LE first: its BOM starts with UTF-16-LE's
        if data.startswith(bom):
            return enc, len(bom)
    return None


def decode_text(data: bytes) -> str:
    """Bytes to text with normalised newlines and no NULs.

    UTF-8 is tried strictly first; cp1252 next because real-world non-UTF-8 files are
    overwhelmingly Windows Western text and it maps smart quotes/euro correctly where
    latin-1 would yield C1 control characters; latin-1 last since it never fails.
    """
    found = bom_encoding(data)
    if found:
        enc, skip = found
        text = data[skip:].decode(enc, errors="replace")
    else:
        for enc in ("utf-8", "cp1252", "latin-1"):
            try:
                text = data.decode(enc)
                break
            except UnicodeDecodeError:
                continue
    # Normalising CR/CRLF keeps our 1-based line numbers equal to what an editor shows.
    return text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


def paragraphs(lines: list[str], first_line: int = 1) -> list[tuple[int, int, str]]:
    """Blank-line separated runs as (line_start, line_end, text), 1-based and inclusive.

    The text keeps its own line breaks so that a later split can still map each piece
    back to its exact source lines.
    """
    out: list[tuple[int, int, str]] = []
    start: int | None = None
    for i, line in enumerate(lines + [""]):
        if line.strip():
            if start is None:
                start = i
        elif start is not None:
            out.append(
                (first_line + start, first_line + i - 1, "\n".join(x.rstrip() for x in lines[start:i]))
            )
            start = None
    return out


def first_line_title(text: str, limit: int = 120) -> str:
    for line in text.split("\n"):
        line = line.strip()
        if line:
            return line if len(line) <= limit else ""
    return ""


def parse(text: str, name: str) -> ParsedDocument:
    blocks = [
        Block("paragraph", body, Location(line_start=a, line_end=b))
        for a, b, body in paragraphs(text.split("\n"))
    ]
    return ParsedDocument(MIME, first_line_title(text), blocks)
