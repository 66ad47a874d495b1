"""What a parser yields: a document as structured blocks, each with a precise location."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "code", "table", "list"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a piece of text sits in its source, so a citation can point at it.

    Every field is optional because formats differ: a PDF has pages, Markdown has
    heading paths and lines, a CSV has row numbers (carried as lines).
    """

    page: int | None = None  # 1-based
    heading_path: tuple[str, ...] = ()
    line_start: int | None = None  # 1-based, inclusive
    line_end: int | None = None  # 1-based, inclusive

    def to_dict(self) -> dict:
        out: dict = {}
        if self.page is not None:
            out["page"] = self.page
        if self.heading_path:
            out["heading_path"] = list(self.heading_path)
        if self.line_start is not None:
            out["line_start"] = self.line_start
            out["line_end"] = self.line_end if self.line_end is not None else self.line_start
        return out

    @staticmethod
    def from_dict(data: dict | None) -> Location:
        data = data or {}
        return Location(
            page=data.get("page"),
            heading_path=tuple(data.get("heading_path") or ()),
            line_start=data.get("line_start"),
            line_end=data.get("line_end"),
        )


@dataclass(frozen=True, slots=True)
class Block:
    """One structural unit of a document.

    For `table` blocks, `header` holds the header row text and `text` holds the
    body rows, one per line, so the chunker can repeat the header in every chunk.
    """

    kind: BlockKind
    text: str
    location: Location = field(default_factory=Location)
    header: str | None = None
    language: str | None = None  # for code blocks


@dataclass(slots=True)
class ParsedDocument:
    """A parsed document: a title (may be empty), its detected MIME type and blocks."""

    mime_type: str
    title: str
    blocks: list[Block]
    metadata: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(b.text if b.header is None else f"{b.header}\n{b.text}" for b in self.blocks)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document sized for the embedding model, keeping its location."""

    ordinal: int
    text: str
    location: Location
    token_count: int
