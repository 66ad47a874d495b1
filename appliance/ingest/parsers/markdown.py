"""Markdown: headings give the heading path; fences, tables, lists and paragraphs keep exact lines."""

from __future__ import annotations

import re

from appliance.document import Block, Location, ParsedDocument
from appliance.ingest.parsers.code import normalise_language
from appliance.ingest.parsers.structured import row_text

MIME = "text/markdown"

# Each pattern meets untrusted lines, so each is linear-time: runs of spaces or tabs between two
# optional parts are consumed possessively (never split two ways), and what a lazy group plus a
# trailing-space test did quadratically (heading text, front-matter title) is done with str methods.
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]++(.*))?$")
_SETEXT = re.compile(r"^ {0,3}(=++|-++)[ \t]*+$")
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`]*)")
_HR = re.compile(r"^ {0,3}([-*_])(?:[ \t]*+\1){2,}+[ \t]*+$")
_LIST = re.compile(r"^ {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_QUOTE = re.compile(r"^ {0,3}>[ ]?")
_TABLE_DELIM = re.compile(r"^[ \t]*+\|?[ \t]*+:?-++:?[ \t]*+(?:\|[ \t]*+:?-++:?[ \t]*+)*+\|?[ \t]*+$")


def _heading_text(body: str | None) -> str:
    """An ATX heading's text: trailing blanks and a closing run of #s (after a blank) removed."""
    text = (body or "").rstrip(" \t")
    bare = text.rstrip("#")
    if bare != text and bare[-1:] in (" ", "\t"):
        return bare.rstrip(" \t")
    return text


def _front_title(line: str) -> str | None:
    """The value of a `title:` line of YAML front matter, without its quotes; None for other lines."""
    if not line.startswith("title:"):
        return None
    value = line[6:].strip()
    if value[:1] in ("'", '"'):
        value = value[1:]
    if value[-1:] in ("'", '"'):
        value = value[:-1]
    return value


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _interrupts(line: str) -> bool:
    """Lines that end a paragraph without a blank line before them (as in CommonMark)."""
    return bool(_ATX.match(line) or _FENCE.match(line) or _QUOTE.match(line) or _HR.match(line))


class _Parser:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.blocks: list[Block] = []
        self.path: list[tuple[int, str]] = []  # (level, title) of the open headings
        self.title = ""
        self.front_title = ""

    def loc(self, a: int, b: int) -> Location:
        """Location for 0-based lines a..b inclusive."""
        return Location(heading_path=tuple(t for _, t in self.path), line_start=a + 1, line_end=b + 1)

    def add(self, kind: str, a: int, b: int, text: str, **kw: object) -> None:
        if text.strip():
            self.blocks.append(Block(kind, text, self.loc(a, b), **kw))  # type: ignore[arg-type]

    def heading(self, level: int, title: str, line: int) -> None:
        title = title.strip()
        if not title:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, title))
        if level == 1 and not self.title:
            self.title = title
        self.add("heading", line, line, title)

    def run(self) -> ParsedDocument:
        lines, n = self.lines, len(self.lines)
        i = self.front_matter()
        while i < n:
            line = lines[i]
            if not line.strip():
                i += 1
            elif m := _FENCE.match(line):
                i = self.fence(i, m)
            elif m := _ATX.match(line):
                self.heading(len(m.group(1)), _heading_text(m.group(2)), i)
                i += 1
            elif _HR.match(line):
                i += 1
            elif self.table_starts(i):
                i = self.table(i)
            elif _LIST.match(line):
                i = self.list_(i)
            elif _QUOTE.match(line):
                i = self.quote(i)
            elif line.lstrip().startswith("<!--"):
                i = self.comment(i)
            elif line.startswith(("    ", "\t")):
                i = self.indented_code(i)
            else:
                i = self.paragraph(i)
        title = self.title or self.front_title
        return ParsedDocument(MIME, title, self.blocks)

    def front_matter(self) -> int:
        # YAML front matter is metadata, not prose; its title is a fallback document title.
        if not self.lines or self.lines[0].strip() != "---":
            return 0
        for j in range(1, min(len(self.lines), 200)):
            if self.lines[j].strip() in ("---", "..."):
                for line in self.lines[1:j]:
                    if (title := _front_title(line)) is not None:
                        self.front_title = title
                return j + 1
        return 0

    def fence(self, i: int, m: re.Match) -> int:
        marker = m.group(2)
        close = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$")
        j = i + 1
        while j < len(self.lines) and not close.match(self.lines[j]):
            j += 1
        body = self.lines[i + 1 : j]
        # The block spans the content lines only, so its text maps 1:1 onto source lines.
        self.add(
            "code", i + 1, j - 1, "\n".join(x.rstrip() for x in body), language=normalise_language(m.group(3))
        )
        return j + 1

    def table(self, i: int) -> int:
        header = _cells(self.lines[i])
        j = i + 2
        rows = []
        while j < len(self.lines) and self.lines[j].strip() and "|" in self.lines[j]:
            rows.append(row_text(header, _cells(self.lines[j])))
            j += 1
        # The block spans the body rows only: one text line per source line.
        if rows:
            self.add("table", i + 2, j - 1, "\n".join(rows), header=" | ".join(header))
        else:
            self.add("paragraph", i, i, " | ".join(header))
        return j

    def list_(self, i: int) -> int:
        lines, n = self.lines, len(self.lines)
        j, last = i + 1, i
        while j < n:
            line = lines[j]
            if not line.strip():
                # After a blank line the list goes on only with an indented line or a new item.
                k = j + 1
                while k < n and not lines[k].strip():
                    k += 1
                if k < n and (lines[k][:1] in " \t" or _LIST.match(lines[k])):
                    j = k
                    continue
                break
            if not (_LIST.match(line) or line[:1] in " \t") and (_interrupts(line) or self.table_starts(j)):
                break
            last, j = j, j + 1  # an item, an indented line, or a lazy continuation
        self.add("list", i, last, "\n".join(x.rstrip() for x in lines[i : last + 1]))
        return last + 1

    def table_starts(self, i: int) -> bool:
        lines = self.lines
        return (
            "|" in lines[i]
            and i + 1 < len(lines)
            and "-" in lines[i + 1]
            and bool(_TABLE_DELIM.match(lines[i + 1]))
        )

    def quote(self, i: int) -> int:
        j = i
        while (
            j < len(self.lines)
            and self.lines[j].strip()
            and (_QUOTE.match(self.lines[j]) or not _interrupts(self.lines[j]))
        ):
            j += 1
        text = "\n".join(_QUOTE.sub("", x, count=1).rstrip() for x in self.lines[i:j])
        self.add("paragraph", i, j - 1, text)
        return j

    def comment(self, i: int) -> int:
        j = i
        while j < len(self.lines) and "-->" not in self.lines[j]:
            j += 1
        return j + 1

    def indented_code(self, i: int) -> int:
        j, last = i, i
        while j < len(self.lines) and (not self.lines[j].strip() or self.lines[j].startswith(("    ", "\t"))):
            if self.lines[j].strip():
                last = j
            j += 1
        body = [x[4:] if x.startswith("    ") else x[1:] for x in self.lines[i : last + 1]]
        self.add("code", i, last, "\n".join(x.rstrip() for x in body))
        return last + 1

    def paragraph(self, i: int) -> int:
        lines, j = self.lines, i
        while j < len(lines) and lines[j].strip():
            if j > i and (
                _interrupts(lines[j])
                or _SETEXT.match(lines[j])
                or _LIST.match(lines[j])
                or self.table_starts(j)
            ):
                break
            j += 1
        if j < len(lines) and j > i and (m := _SETEXT.match(lines[j])):
            level = 1 if m.group(1)[0] == "=" else 2
            if j - 1 > i:
                self.add("paragraph", i, j - 2, "\n".join(x.rstrip() for x in lines[i : j - 1]))
            self.heading(level, lines[j - 1], j - 1)
            return j + 1
        self.add("paragraph", i, j - 1, "\n".join(x.rstrip() for x in lines[i:j]))
        return j


def parse(text: str, name: str) -> ParsedDocument:
    return _Parser(text).run()
