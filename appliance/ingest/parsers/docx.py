"""DOCX through python-docx: heading styles give the heading path; tables keep their header row."""

from __future__ import annotations

import io
import re
import zipfile

from appliance.document import Block, Location, ParsedDocument
from appliance.errors import UnsupportedFormat
from appliance.ingest.parsers.structured import row_text

MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.I)
# Limits against zip bombs: python-docx inflates every part into memory.
_MAX_UNCOMPRESSED = 1 << 30
_MAX_RATIO = 200


def _check_zip(data: bytes, name: str) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UnsupportedFormat(f"{name} is not a readable DOCX: the zip container is damaged ({e})") from e
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    if total > _MAX_UNCOMPRESSED or (total > 50 << 20 and total / packed > _MAX_RATIO):
        raise UnsupportedFormat(
            f"{name} expands to {total >> 20} MiB when unzipped; refusing it as a zip bomb"
        )


def _heading_level(paragraph) -> int | None:
    """Level from the style name, else from the outline level (localised Word uses other names)."""
    style = paragraph.style
    while style is not None:
        if m := _HEADING_STYLE.match(style.name or ""):
            return int(m.group(1))
        for lvl in style.element.xpath("./w:pPr/w:outlineLvl/@w:val"):
            if lvl.isdigit() and int(lvl) < 9:
                return int(lvl) + 1
        style = style.base_style
    for lvl in paragraph._p.xpath("./w:pPr/w:outlineLvl/@w:val"):
        if lvl.isdigit() and int(lvl) < 9:
            return int(lvl) + 1
    return None


def _is_list(paragraph) -> bool:
    name = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
    return name.startswith("list") or bool(paragraph._p.xpath("./w:pPr/w:numPr"))


def _table_rows(table) -> list[list[str]]:
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans; keep it once.
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(cells)
    return rows


def parse(data: bytes, name: str) -> ParsedDocument:
    _check_zip(data, name)
    import docx
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    list_items: list[str] = []
    title = (document.core_properties.title or "").strip()
    style_title = first_h1 = ""

    def loc() -> Location:
        return Location(heading_path=tuple(t for _, t in path))

    def emit_list() -> None:
        if list_items:
            blocks.append(Block("list", "\n".join(list_items), loc()))
            list_items.clear()

    # Walk body children in order so tables stay between the paragraphs around them;
    # content controls (w:sdt, e.g. a table of contents) are descended into.
    stack = list(reversed(list(document.element.body.iterchildren())))
    while stack:
        el = stack.pop()
        if el.tag == qn("w:sdt"):
            for content in el.iterchildren(qn("w:sdtContent")):
                stack.extend(reversed(list(content.iterchildren())))
        elif el.tag == qn("w:tbl"):
            emit_list()
            rows = _table_rows(Table(el, document))
            if len(rows) > 1:
                # Word has no reliable header marker: the first row is the header by convention.
                text = "\n".join(row_text(rows[0], r) for r in rows[1:])
                blocks.append(Block("table", text, loc(), header=" | ".join(rows[0])))
            elif rows:
                blocks.append(Block("paragraph", " | ".join(rows[0]), loc()))
        elif el.tag == qn("w:p"):
            para = Paragraph(el, document)
            text = para.text.strip()
            if not text:
                continue
            style_name = (para.style.name or "") if para.style is not None else ""
            if style_name.lower() == "title":
                emit_list()
                style_title = style_title or text
                blocks.append(Block("heading", text, loc()))
            elif (level := _heading_level(para)) is not None:
                emit_list()
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, " ".join(text.split())))
                first_h1 = first_h1 or (text if level == 1 else "")
                blocks.append(Block("heading", text, loc()))
            elif _is_list(para):
                list_items.append("- " + text)
            else:
                emit_list()
                blocks.append(Block("paragraph", text, loc()))
    emit_list()
    return ParsedDocument(MIME, title or style_title or first_h1, blocks)
