"""HTML: visible text as blocks under their h1..h6 heading path; tables keep their header row."""

from __future__ import annotations

import re

from appliance.document import Block, Location, ParsedDocument
from appliance.ingest.parsers.code import normalise_language
from appliance.ingest.parsers.structured import row_text

MIME = "text/html"

# Boilerplate and non-visible content: it would only add noise to search results.
_DROP = {
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "footer",
    "head",
    "iframe",
    "object",
    "svg",
    "button",
}
_BLOCK = {
    "p", "div", "section", "article", "main", "header", "aside", "blockquote", "ul", "ol", "dl", "dt",
    "dd", "figure", "figcaption", "address", "hr", "form", "fieldset", "details", "summary", "center",
    "caption", "body", "html", "tr", "td", "th", "menu", "legend",
}  # fmt: skip
_DROP_ROLES = {"navigation", "search", "contentinfo", "banner"}
_PERMALINK = " ¶§#🔗"  # trailing characters of Sphinx/GitHub permalink anchors (after _clean)
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)
# The fallback below meets markup libxml2 refused, so it must stay linear: an element or comment
# is found by its opener, then its closer by one forward search (a lazy ".*?" tried from every
# opener rescanned the rest of the text each time); a tag cannot contain "<".
_INVISIBLE_OPEN = re.compile(r"<(?:(script|style|noscript|template)\b|!--)", re.I)
_TAG = re.compile(r"<[^<>]*+>")


def _drop_invisible(text: str) -> str:
    """`text` with script, style, noscript and template elements and comments replaced by a space."""
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()  # closers absent from the rest of the text: no later opener closes
    for m in _INVISIBLE_OPEN.finditer(text):
        if m.start() < pos:
            continue  # inside an element or comment already dropped
        kind = (m.group(1) or "!--").lower()
        if kind in unclosed:
            continue
        if kind == "!--":
            end = text.find("-->", m.end())
            end = end + 3 if end >= 0 else -1
        else:
            closer = re.compile(rf"</{kind}\s*+>", re.I).search(text, m.end())
            end = closer.end() if closer else -1
        if end < 0:
            unclosed.add(kind)
            continue
        out += (text[pos : m.start()], " ")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _fallback(text: str) -> list[Block]:
    """Unstructured text for markup libxml2 gives up on (nesting beyond its depth limit)."""
    import html as stdlib_html

    plain = stdlib_html.unescape(_TAG.sub(" ", _drop_invisible(text)))
    paras = [_clean(p) for p in re.split(r"\n\s*\n", plain)]
    return [Block("paragraph", p) for p in paras if p]


def _clean(text: str) -> str:
    return " ".join(text.split())


def _hidden(el) -> bool:
    return (
        el.get("role") in _DROP_ROLES
        or el.get("aria-hidden") == "true"
        or el.get("hidden") is not None
        or not {"headerlink", "footer", "sidebar"}.isdisjoint((el.get("class") or "").split())
    )


def table_rows(table) -> tuple[list[str] | None, list[list[str]]]:
    """Header cells (if the table marks one) and body rows of an lxml <table>."""
    rows: list[tuple[bool, list[str]]] = []
    for tr in table.iter("tr"):
        if tr.getparent() is not None and _owning_table(tr) is not table:
            continue  # rows of a nested table stay inside the cell that holds it
        cells = [c for c in tr if isinstance(c.tag, str) and c.tag in ("td", "th")]
        texts = [_clean(c.text_content()) for c in cells]
        if any(texts):
            in_thead = tr.getparent() is not None and tr.getparent().tag == "thead"
            rows.append((in_thead or all(c.tag == "th" for c in cells), texts))
    header = None
    if rows and rows[0][0]:
        header = rows.pop(0)[1]
    return header, [r for _, r in rows]


def _owning_table(el):
    el = el.getparent()
    while el is not None and el.tag != "table":
        el = el.getparent()
    return el


class _Builder:
    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.path: list[tuple[int, str]] = []
        self.buf: list[str] = []
        self.list_items: list[str] = []
        self.li_depth = 0
        self.first_h1 = ""

    def loc(self) -> Location:
        return Location(heading_path=tuple(t for _, t in self.path))

    def flush(self) -> None:
        text = _clean("".join(self.buf))
        self.buf = []
        if self.li_depth:
            # Nested items are indented so the list still reads as a hierarchy.
            if text:
                self.list_items.append("  " * (self.li_depth - 1) + "- " + text)
        elif text:
            self.emit_list()
            self.blocks.append(Block("paragraph", text, self.loc()))

    def emit_list(self) -> None:
        if self.list_items:
            self.blocks.append(Block("list", "\n".join(self.list_items), self.loc()))
            self.list_items = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        self.emit_list()
        text = _clean(text).rstrip(_PERMALINK)  # Sphinx/GitHub permalink anchors
        if not text:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))
        if level == 1 and not self.first_h1:
            self.first_h1 = text
        self.blocks.append(Block("heading", text, self.loc()))

    def table(self, el) -> None:
        self.flush()
        self.emit_list()
        header, rows = table_rows(el)
        # Rows become `column: value` lines (see structured.row_text for the measurement) and
        # the header stays apart so the chunker repeats it at the top of every table chunk.
        if header is not None and rows:
            text = "\n".join(row_text(header, r) for r in rows)
            self.blocks.append(Block("table", text, self.loc(), header=" | ".join(header)))
        elif rows or header:
            body = rows if header is None else [header]
            self.blocks.append(Block("paragraph", "\n".join(" | ".join(r) for r in body), self.loc()))

    def pre(self, el) -> None:
        self.flush()
        self.emit_list()
        text = el.text_content().strip("\n")
        if text.strip():
            # Highlighters put the language on the <pre>, its <code>, or a wrapper (Sphinx: highlight-python3).
            around = [el, *el.iter("code"), *list(el.iterancestors())[:3]]
            classes = " ".join(x.get("class", "") for x in around)
            m = re.search(r"(?:language|lang|highlight)-([\w+#]+)", classes)
            self.blocks.append(
                Block("code", text, self.loc(), language=normalise_language(m.group(1) if m else None))
            )


def parse(text: str, name: str) -> ParsedDocument:
    from lxml import etree
    from lxml import html as lhtml

    # huge_tree lifts libxml2's nesting limit from 256 to 2048; generated pages exceed 256.
    parser = lhtml.HTMLParser(huge_tree=True)
    root = lhtml.document_fromstring(_XML_DECL.sub("", text, count=1), parser=parser)
    title_el = root.find(".//title")
    title = _clean(title_el.text_content()) if title_el is not None else ""
    b = _Builder()
    heading: tuple[int, list[str]] | None = None
    # Iterative walk: deeply nested markup must not hit Python's recursion limit.
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag.lower() if isinstance(el.tag, str) else None
        if event == "start":
            if tag is None or tag in _DROP or _hidden(el):
                walker.skip_subtree()
            elif tag in _HEADINGS:
                heading = (_HEADINGS[tag], [el.text or ""])
            elif heading is not None:
                heading[1].append(el.text or "")
            elif tag == "table":
                b.table(el)
                walker.skip_subtree()
            elif tag == "pre":
                b.pre(el)
                walker.skip_subtree()
            elif tag == "li":
                b.flush()
                b.li_depth += 1
                b.buf.append(el.text or "")
            elif tag == "br":
                b.buf.append("\n")
            else:
                if tag in _BLOCK:
                    b.flush()
                b.buf.append(el.text or "")
            continue
        # end event: close the element, then its tail text belongs to the parent
        if tag in _HEADINGS and heading is not None:
            b.heading(heading[0], "".join(heading[1]))
            heading = None
        elif tag == "li":
            b.flush()
            b.li_depth -= 1
        elif tag in _BLOCK:
            b.flush()
        tail = el.tail or ""
        (heading[1] if heading is not None else b.buf).append(tail)
    b.flush()
    b.emit_list()
    metadata: dict = {}
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        # libxml2 stopped part-way, so the tree lacks text: better flat text than silent loss.
        b.blocks = _fallback(text)
        metadata["warnings"] = ["markup nested too deeply to parse; text extracted without structure"]
    return ParsedDocument(MIME, title or b.first_h1, b.blocks, metadata)
