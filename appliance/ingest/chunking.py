"""Structure-aware chunking: blocks packed per section, oversized ones split at natural boundaries."""

from __future__ import annotations

import bisect
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.document import Block, Chunk, Location, ParsedDocument
from appliance.errors import InvalidInput

# A sentence ends at terminal punctuation (plus closing quotes/brackets) followed by whitespace.
# Linear on hostile text: a match may only start where a run of terminal punctuation starts
# (the lookbehind), and the possessive runs never give characters back, so a run of a million
# dots is scanned once rather than once from each of its positions.
_SENTENCE_END = re.compile(r"(?<![.!?…])[.!?…]++[\"'”’)\]]*+(?=\s)")
# Bounded, so a 10 MiB "word" comes back in pieces, one short regex call (and GIL hold) each.
_WORD = re.compile(r"\S{1,65536}")
_SENTENCE_WINDOW = 1 << 16  # characters one sentence-end scan covers before the GIL is let go
_OUTSIDE_SENTENCE_END = re.compile(r"[^.!?…\"'”’)\]]")
# A chunk holds at most this many characters per token of its budget. Real text averages 3-6
# characters per token; a run with no spaces or an over-long "word" counts as one unknown token
# however long it is, so the token budget alone would let a 10 MiB line through as one chunk.
# Spans longer than the cap are cut by characters before the tokenizer ever sees them, which
# also keeps each tokenizer call (and its memory) small whatever the document's line lengths.
MAX_CHARS_PER_TOKEN = 16


@dataclass(slots=True)
class _Unit:
    """A span of one block's text that is never split further: the packing atom."""

    block: int
    start: int
    end: int
    tokens: int
    oversized: bool  # comes from a block too large for one chunk (overlap applies)


def _grows(current: list[_Unit], unit: _Unit) -> int:
    """Characters `unit` adds to a chunk made of `current` (text between units of a block included)."""
    if current and current[-1].block == unit.block:
        return unit.end - current[-1].end
    return unit.end - unit.start + 2


def _trim(text: str, start: int, end: int, keep_indent: bool = False) -> tuple[int, int]:
    """Strip surrounding whitespace; with keep_indent, only blank lines go from the front
    (code and nested lists lose meaning without their first line's indentation)."""
    first = start
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if keep_indent and start < end:
        start = max(first, text.rfind("\n", first, start) + 1)
    return start, end


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, pos = [], start
    scan = start
    while scan < end:
        # One regex call holds the GIL for as long as it scans, so a huge span is scanned in
        # windows, each ending just after a character no sentence end contains: none can
        # straddle two windows, and the lookbehind still sees the character before a window.
        stop = end
        if end - scan > _SENTENCE_WINDOW:
            cut = _OUTSIDE_SENTENCE_END.search(text, scan + _SENTENCE_WINDOW, end)
            stop = cut.end() if cut else end
        for m in _SENTENCE_END.finditer(text, scan, stop):
            spans.append((pos, m.end()))
            pos = m.end()
        scan = stop
    spans.append((pos, end))
    return spans


def _lines(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, pos = [], start
    while (nl := text.find("\n", pos, end)) != -1:
        spans.append((pos, nl))
        pos = nl + 1
    spans.append((pos, end))
    return spans


class Chunker:
    """Turns a ParsedDocument into Chunks of at most `size` tokens (as `count_tokens` counts).

    Rules: a new heading path always starts a new chunk; small consecutive blocks of a
    section are packed together; a block larger than `size` is split at sentences (prose)
    or lines (code, lists, tables), then words, then characters, and consecutive pieces
    of it share about `overlap` tokens; table chunks always start with the header line.
    """

    def __init__(self, count_tokens: Callable[[str], int], size: int = 200, overlap: int = 32) -> None:
        if not callable(count_tokens):
            raise TypeError("count_tokens must be a callable taking a string and returning an int")
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or isinstance(overlap, bool)
            or not isinstance(overlap, int)
        ):
            raise ValueError(f"chunk size and overlap must be integers, got {size!r} and {overlap!r}")
        if not size > overlap >= 0:
            raise ValueError(
                f"chunk size must exceed overlap and overlap must be >= 0 (size={size}, overlap={overlap})"
            )
        self.count = count_tokens
        self.size = size
        self.overlap = overlap
        self.max_chars = size * MAX_CHARS_PER_TOKEN

    def chunk(self, doc: ParsedDocument, deadline: float | None = None) -> list[Chunk]:
        """The chunks of `doc`; past `deadline` (time.monotonic()) it stops with InvalidInput."""
        # One Chunker serves every job worker thread at once, so the per-document working state
        # lives in a _ChunkRun made for this call, never on self.
        return _ChunkRun(self, doc, deadline).run()


class _ChunkRun:
    """One document being chunked: the working state of a single Chunker.chunk() call."""

    __slots__ = ("_count", "size", "overlap", "max_chars", "_deadline", "_doc", "_newlines", "_out")

    def __init__(self, chunker: Chunker, doc: ParsedDocument, deadline: float | None = None) -> None:
        self._count = chunker.count
        self.size = chunker.size
        self.overlap = chunker.overlap
        self.max_chars = chunker.max_chars
        self._deadline = deadline
        self._doc = doc
        self._newlines: dict[int, list[int] | None] = {}
        self._out: list[Chunk] = []

    def run(self) -> list[Chunk]:
        doc = self._doc
        blocks = doc.blocks
        sections: list[list[int]] = []
        for i, b in enumerate(blocks):
            if not b.text.strip() and not (b.header or "").strip():
                continue
            if sections and blocks[sections[-1][0]].location.heading_path == b.location.heading_path:
                sections[-1].append(i)
            else:
                sections.append([i])
        carry: list[int] = []
        for section in sections:
            path = blocks[section[0]].location.heading_path
            if carry:
                carry_path = blocks[carry[-1]].location.heading_path
                if path[: len(carry_path)] != carry_path:
                    self._section(carry)
                    carry = []
            if all(blocks[i].kind == "heading" for i in section):
                # A heading with nothing under it but subsections: prefix it to its first child
                # rather than emitting a chunk that is only a title.
                carry += section
                continue
            self._section(carry + section, path)
            carry = []
        if carry:
            self._section(carry)
        return [Chunk(n, c.text, c.location, c.token_count) for n, c in enumerate(self._out)]

    def count(self, text: str) -> int:
        # Every tokenizer call passes here, so this is where the time budget is checked.
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise InvalidInput("chunking the document took longer than its time budget")
        return self._count(text)

    def fits(self, start: int, end: int) -> bool:
        """Whether a span is short enough in characters to be counted and kept whole."""
        return end - start <= self.max_chars

    # -- sections -------------------------------------------------------------------------

    def _section(self, indices: list[int], path: tuple[str, ...] | None = None) -> None:
        blocks = self._doc.blocks
        if path is None:
            path = blocks[indices[-1]].location.heading_path
        current: list[_Unit] = []
        used = chars = 0
        k = 0
        while k < len(indices):
            block = blocks[indices[k]]
            if block.kind == "table" and block.header is not None:
                lead = self._lead_in(current)
                self._emit(current[: len(current) - len(lead)], path)
                current, used, chars = [], 0, 0
                stream = [indices[k]]
                while (
                    k + 1 < len(indices)
                    and blocks[indices[k + 1]].kind == "table"
                    and (blocks[indices[k + 1]].header == block.header)
                ):
                    k += 1
                    stream.append(indices[k])
                self._table(stream, path, lead)
                k += 1
                continue
            for unit in self._units(indices[k]):
                if current and (
                    used + unit.tokens > self.size or chars + _grows(current, unit) > self.max_chars
                ):
                    previous = current
                    self._emit(current, path)
                    current, used = self._overlap(previous, unit)
                    chars = current[-1].end - current[0].start if current else 0
                chars += _grows(current, unit)
                current.append(unit)
                used += unit.tokens
            k += 1
        self._emit(current, path)

    def _lead_in(self, current: list[_Unit]) -> list[_Unit]:
        """The trailing units of `current` that introduce the table after them.

        A one-line lead-in ("... receive a daily allowance for meals:") on its own is a chunk no
        reader or model can use, and the table without it loses what its numbers are; so it rides
        with the table's first chunk. A lead-in is the last paragraph when it ends with a colon,
        or everything before the table when that is short (a heading and a sentence), within a
        quarter of the chunk size either way.
        """
        if not current:
            return []
        blocks = self._doc.blocks
        budget = self.size // 4
        k = len(current)
        while k > 0 and current[k - 1].block == current[-1].block:
            k -= 1
        last = blocks[current[-1].block]
        if last.kind not in ("paragraph", "heading") or any(u.oversized for u in current[k:]):
            return []
        colon = last.text.rstrip().endswith(":")
        tail = current[k:]
        while k > 0 and blocks[current[k - 1].block].kind == "heading" and not current[k - 1].oversized:
            k -= 1
        if sum(u.tokens for u in current[k:]) <= budget and (k == 0 or colon):
            return current[k:]
        return tail if colon and sum(u.tokens for u in tail) <= budget else []

    def _overlap(self, previous: list[_Unit], unit: _Unit) -> tuple[list[_Unit], int]:
        """Trailing units of the same oversized block to repeat before `unit`."""
        if not (self.overlap and unit.oversized and previous[-1].block == unit.block):
            return [], 0
        kept: list[_Unit] = []
        used = 0
        for u in reversed(previous):
            if (
                u.block != unit.block
                or used + u.tokens > self.overlap
                or used + u.tokens + unit.tokens > self.size
                or unit.end - u.start > self.max_chars
            ):
                break
            kept.insert(0, u)
            used += u.tokens
        return kept, used

    # -- units ----------------------------------------------------------------------------

    def _units(self, index: int) -> list[_Unit]:
        block = self._doc.blocks[index]
        keep_indent = block.kind in ("code", "list")
        start, end = _trim(block.text, 0, len(block.text), keep_indent)
        if start == end:
            return []
        if self.fits(start, end) and (n := self.count(block.text[start:end])) <= self.size:
            return [_Unit(index, start, end, n, False)]
        levels = [_lines] if block.kind in ("code", "list", "table") else [_sentences, _lines]
        pieces = self._split(block.text, start, end, levels, self.size, keep_indent)
        return [_Unit(index, s, e, t, True) for s, e, t in pieces]

    def _split(
        self, text: str, start: int, end: int, levels: list, limit: int, keep_indent: bool = False
    ) -> list[tuple[int, int, int]]:
        """Spans of text[start:end], each within `limit` tokens, cut at the coarsest level that works.

        Each piece is counted once at each level it passes through, so the cost stays linear
        in practice rather than re-counting growing prefixes.
        """
        if not levels:
            return self._words(text, start, end, limit)
        out: list[tuple[int, int, int]] = []
        for s, e in levels[0](text, start, end):
            s, e = _trim(text, s, e, keep_indent)
            if s == e:
                continue
            if self.fits(s, e) and (n := self.count(text[s:e])) <= limit:
                out.append((s, e, n))
            else:
                out.extend(self._split(text, s, e, levels[1:], limit))
        return out

    def _words(self, text: str, start: int, end: int, limit: int) -> list[tuple[int, int, int]]:
        # Windows of ~1.5 characters per token of budget are usually a third to a half of the
        # budget, so most are counted once and the packer still fills chunks well.
        window = min(max(8, int(limit * 1.5)), self.max_chars)
        out: list[tuple[int, int, int]] = []
        s = None
        last = start
        for m in _WORD.finditer(text, start, end):
            if s is None:
                s = m.start()
            elif m.end() - s > window:
                out.extend(self._bisect(text, s, last, limit))
                s = m.start()
            last = m.end()
        if s is not None:
            out.extend(self._bisect(text, s, last, limit))
        return out

    def _bisect(self, text: str, start: int, end: int, limit: int) -> list[tuple[int, int, int]]:
        s, e = _trim(text, start, end)
        if s == e:
            return []
        if e - s > self.max_chars:
            # One over-long "word" (a base64 blob, a minified line): fixed slices, never counted whole.
            return [
                p
                for a in range(s, e, self.max_chars)
                for p in self._bisect(text, a, min(a + self.max_chars, e), limit)
            ]
        n = self.count(text[s:e])
        if n <= limit or e - s == 1:
            return [(s, e, n)]
        # Cut into as many parts as the count says are needed (with a tenth to spare), at word
        # starts where there are words, else at characters: most parts then fit at the first
        # count, where halving would count the whole span again at every level.
        parts = min(e - s, -(-n * 10 // (limit * 9)))
        words = [m.start() for m in _WORD.finditer(text, s, e)]
        cuts = [s]
        for i in range(1, parts):
            target = s + (e - s) * i // parts
            if len(words) > 1:
                target = words[max(1, min(len(words) - 1, bisect.bisect_right(words, target) - 1))]
            if target > cuts[-1]:
                cuts.append(target)
        cuts.append(e)
        if len(cuts) == 2:  # no cut landed inside: halve by characters
            cuts.insert(1, (s + e) // 2)
        return [p for a, b in itertools.pairwise(cuts) for p in self._bisect(text, a, b, limit)]

    # -- tables ---------------------------------------------------------------------------

    def _table(self, stream: list[int], path: tuple[str, ...], lead: list[_Unit]) -> None:
        blocks = self._doc.blocks
        header = blocks[stream[0]].header.strip()
        if len(header) > self.max_chars // 2:
            header = header[: self.max_chars // 2]
        header_tokens = self.count(header)
        if header_tokens > self.size // 2:
            # A header this wide would leave no room for rows; keep its start, which names the key columns.
            s, e, header_tokens = self._split(header, 0, len(header), [], self.size // 2)[0]
            header = header[s:e] + " …"
            header_tokens = self.count(header)
        budget = max(1, self.size - header_tokens)
        lead_tokens = self.count(self._joined(lead)) if lead else 0
        if lead_tokens + header_tokens >= self.size:
            self._emit(lead, path)  # no room for a row beside it: the lead-in stands alone after all
            lead, lead_tokens = [], 0
        rows: list[_Unit] = []
        for index in stream:
            text = blocks[index].text
            for s, e in _lines(text, 0, len(text)):
                s, e = _trim(text, s, e)
                if s == e:
                    continue
                if self.fits(s, e) and (n := self.count(text[s:e])) <= budget:
                    rows.append(_Unit(index, s, e, n, False))
                else:
                    rows.extend(
                        _Unit(index, a, b, t, True) for a, b, t in self._split(text, s, e, [], budget)
                    )
        # Rows are records, not prose: repeating rows as overlap would only duplicate hits;
        # the repeated header is the context every table chunk needs.
        # The first chunk also carries the lead-in, ahead of the header.
        current: list[_Unit] = []
        used, chars = lead_tokens, sum(u.end - u.start for u in lead)
        for row in rows:
            if current and (used + row.tokens > budget or chars + _grows(current, row) > self.max_chars):
                self._emit(current, path, header, lead)
                current, used, chars, lead = [], 0, 0, []
            chars += _grows(current, row)
            current.append(row)
            used += row.tokens
        self._emit(current, path, header, lead)

    # -- output ---------------------------------------------------------------------------

    def _joined(self, units: list[_Unit], sep: str = "\n\n") -> str:
        """The text of consecutive units, one part per block."""
        blocks = self._doc.blocks
        parts: list[str] = []
        group_start = 0
        for i in range(1, len(units) + 1):
            if i == len(units) or units[i].block != units[group_start].block:
                first, last = units[group_start], units[i - 1]
                parts.append(blocks[first.block].text[first.start : last.end])
                group_start = i
        return sep.join(parts)

    def _emit(
        self,
        units: list[_Unit],
        path: tuple[str, ...],
        header: str | None = None,
        lead: list[_Unit] | None = None,
    ) -> None:
        if not units:
            return
        lead = lead or []
        if header is None:
            text = self._joined(units)
        else:
            rows = self._joined(units, sep="\n")
            text = f"{header}\n{rows}"
            if lead:
                text = f"{self._joined(lead)}\n\n{text}"
        tokens = units[0].tokens if len(units) == 1 and header is None else self.count(text)
        if tokens > self.size and len(units) > 1:
            # Only when count_tokens is not additive over concatenation (e.g. some BPE merges).
            half = len(units) // 2
            self._emit(units[:half], path, header, lead)
            self._emit(units[half:], path, header)
            return
        if tokens > self.size and lead:
            self._emit(lead, path)  # the rare table row that only fits without the lead-in
            self._emit(units, path, header)
            return
        self._out.append(Chunk(len(self._out), text, self._location(lead + units, path), tokens))

    def _location(self, units: list[_Unit], path: tuple[str, ...]) -> Location:
        blocks = self._doc.blocks
        page = next((blocks[u.block].location.page for u in units if blocks[u.block].location.page), None)
        starts, ends = [], []
        for u in units:
            loc = blocks[u.block].location
            if loc.line_start is None:
                continue
            line_end = loc.line_end if loc.line_end is not None else loc.line_start
            offsets = self._line_offsets(u.block)
            if offsets is None:
                starts.append(loc.line_start)
                ends.append(line_end)
            else:
                starts.append(loc.line_start + bisect.bisect_right(offsets, u.start - 1))
                ends.append(loc.line_start + bisect.bisect_right(offsets, u.end - 1))
        if not starts:
            return Location(page=page, heading_path=path)
        return Location(page=page, heading_path=path, line_start=min(starts), line_end=max(ends))

    def _line_offsets(self, index: int) -> list[int] | None:
        """Newline offsets of a block whose text maps 1:1 onto its source lines, else None."""
        if index not in self._newlines:
            block: Block = self._doc.blocks[index]
            loc = block.location
            offsets = [m.start() for m in re.finditer("\n", block.text)]
            aligned = loc.line_start is not None and loc.line_end is not None
            self._newlines[index] = (
                offsets if aligned and len(offsets) == loc.line_end - loc.line_start else None
            )
        return self._newlines[index]


def tokenizer_counter(tokenizer_json: str | Path) -> Callable[[str], int]:
    """A count_tokens for a Hugging Face `tokenizer.json` (e.g. all-MiniLM-L6-v2's).

    Truncation and padding are switched off: the shipped all-MiniLM-L6-v2 tokenizer.json pads
    and truncates to 128, so a naive `len(encode(text).ids)` returns 128 for every text.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count
