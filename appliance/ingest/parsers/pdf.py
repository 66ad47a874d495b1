"""PDF through pypdfium2: paragraphs per page with 1-based page numbers for citations."""

from __future__ import annotations

import re
import threading

from appliance.document import Block, Location, ParsedDocument
from appliance.errors import PayloadTooLarge, UnsupportedFormat
from appliance.ingest.parsers.text import first_line_title, paragraphs

MIME = "application/pdf"

# PDFium is not thread-safe; job workers are threads, so every call into it is serialised.
_PDFIUM_LOCK = threading.Lock()
# PDFium marks a hyphen it believes is a line-break hyphenation with U+FFFE (sometimes \x02).
_SOFT_HYPHEN_BREAK = re.compile(r"[\ufffe\x02]\n")
# Titles that authoring tools write for you say nothing about the document.
_JUNK_TITLE = re.compile(r"^(untitled|microsoft word - .*|.*\.(docx?|pdf|tex|dvi|indd))$", re.I)


def _page_text(raw: str) -> str:
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = _SOFT_HYPHEN_BREAK.sub("", text)
    return text.replace("\ufffe", "-").replace("\x02", "-").replace("\x00", "")


_EDGE_NUMBER = re.compile(r"^\s*(\d{1,5})\b|\b(\d{1,5})\s*$")


def _drop_running_lines(pages: list[str]) -> list[str]:
    """Remove running headers/footers: a first or last line that recurs (digits aside) on 3+
    pages, or that carries the printed page number (same offset from the page index on 3+ pages).

    They would otherwise be glued to every page's text and pull unrelated pages together in search.
    """
    if len(pages) < 3:
        return pages
    split = [[x for x in p.split("\n") if x.strip()] for p in pages]

    def key(line: str) -> str:
        return re.sub(r"\d+", "#", " ".join(line.split()))

    def offset(index: int, line: str) -> int | None:
        m = _EDGE_NUMBER.search(line) if len(line) < 120 else None
        return index - int(m.group(1) or m.group(2)) if m else None

    texts: dict[str, int] = {}
    offsets: dict[int, int] = {}
    for index, lines in enumerate(split):
        for line in {lines[0], lines[-1]} if lines else ():
            texts[key(line)] = texts.get(key(line), 0) + 1
            if (off := offset(index, line)) is not None:
                offsets[off] = offsets.get(off, 0) + 1
    page_offset = max(offsets, key=offsets.__getitem__) if offsets else None
    if page_offset is not None and offsets[page_offset] < 3:
        page_offset = None
    out = []
    for index, (page, lines) in enumerate(zip(pages, split, strict=True)):
        # Short pages are left alone: there, a repeated edge line is as likely to be content.
        drop = {
            i
            for i in {0, len(lines) - 1}
            if len(lines) >= 4
            and (
                texts[key(lines[i])] >= 3
                or (page_offset is not None and offset(index, lines[i]) == page_offset)
            )
        }
        out.append("\n".join(x for i, x in enumerate(lines) if i not in drop) if drop else page)
    return out


def parse(data: bytes, name: str, max_pages: int | None = None) -> ParsedDocument:
    import pypdfium2 as pdfium

    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as e:
            reason = str(e)
            if "password" in reason.lower():
                raise UnsupportedFormat(f"{name} is an encrypted PDF that needs a password") from e
            raise UnsupportedFormat(
                f"{name} is not a readable PDF: it is damaged or truncated ({reason})"
            ) from e
        try:
            page_count = len(pdf)
            if page_count == 0:
                raise UnsupportedFormat(f"{name} is a PDF with no pages (damaged or truncated)")
            if max_pages is not None and page_count > max_pages:
                # Counted from the page tree, before any page is read: a tiny file can list
                # 200,000 pages that all point at one object, each still costing a page of work.
                raise PayloadTooLarge(
                    f"{name} has {page_count:,} pages; the limit is {max_pages:,} (parsing.max_pages)"
                )
            meta = {k: v for k, v in pdf.get_metadata_dict(skip_empty=True).items() if isinstance(v, str)}
            pages = []
            for index in range(page_count):
                page = pdf[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        pages.append(_page_text(textpage.get_text_range()))
                    finally:
                        textpage.close()
                finally:
                    page.close()
        finally:
            pdf.close()

    title_page = next((p for p in pages if p.strip()), "")
    pages = _drop_running_lines(pages)
    blocks: list[Block] = []
    empty_pages = []
    for number, text in enumerate(pages, start=1):
        paras = paragraphs(text.split("\n"))
        if not paras:
            empty_pages.append(number)
        # PDF "lines" are layout artefacts, so only the page goes into the location.
        blocks.extend(Block("paragraph", body, Location(page=number)) for _, _, body in paras)
    if not blocks:
        raise UnsupportedFormat(
            f"{name} has {page_count} page(s) but no extractable text: it is probably scanned images, "
            "and OCR is not supported"
        )
    metadata: dict = {"page_count": page_count}
    if empty_pages:
        metadata["pages_without_text"] = empty_pages
    if b"%%EOF" not in data[-2048:]:
        metadata["warnings"] = ["the file looks truncated (no %%EOF marker); text may be incomplete"]
    for key in ("Author", "Subject", "Keywords", "Creator", "Producer"):
        if meta.get(key, "").strip():
            metadata[key.lower()] = meta[key].strip()
    title = meta.get("Title", "").strip()
    if not title or _JUNK_TITLE.match(title):
        title = first_line_title(title_page)
    return ParsedDocument(MIME, title, blocks, metadata)
