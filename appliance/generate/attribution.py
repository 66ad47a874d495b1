"""Verified citations: each sentence of an answer checked against its sources, re-attributed or flagged."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.generate.citations import MARKER, markers_in
from appliance.generate.support import CitationVerifier, is_claim
from appliance.records import SentenceAttribution

# A sentence ends at . ! ? followed by a space, a newline, a marker or the end; a line break ends
# one too (list items, table rows). Decimals ("10.5") and abbreviations inside a word do not.
_END = re.compile(r"[.!?](?=\s|\[|$)|\n")
_TRAILING_PUNCT = re.compile(r"[.!?:;,]+$")


@dataclass(slots=True)
class Piece:
    body: str  # the sentence without its markers
    cited: list[int]  # the numbers its markers give, in order
    end: str  # the punctuation it ended with
    sep: str = " "  # what followed it: a newline keeps list items and rows on their lines


def split_answer(text: str) -> list[Piece]:
    """Sentences with the markers that belong to them: "X [1]." and "X. [1]" both cite [1] for X."""
    pieces: list[Piece] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _END.search(text, pos)
        stop = m.end() if m else n
        # Markers right after the sentence's end belong to it ("... 75 EUR. [2] Next ...").
        while True:
            k = stop
            while k < n and text[k] in " \t":
                k += 1
            marker = MARKER.match(text, k)
            if not marker:
                break
            stop = marker.end()
        chunk = text[pos:stop]
        pos = stop
        gap = stop
        while gap < n and text[gap].isspace():
            gap += 1
        sep = "\n" if chunk.endswith("\n") or "\n" in text[stop:gap] else " "
        cited = markers_in(chunk)
        body = " ".join(MARKER.sub("", chunk).split())
        if not body:
            if cited and pieces:
                pieces[-1].cited.extend(c for c in cited if c not in pieces[-1].cited)
            continue
        end_match = _TRAILING_PUNCT.search(body)
        end = end_match.group(0) if end_match else ""
        body = body[: len(body) - len(end)].rstrip() if end else body
        pieces.append(Piece(body, cited, end, sep))
    return pieces


@dataclass(slots=True)
class Attributed:
    text: str  # the answer as the reader sees it, markers placed by verification
    sentences: list[SentenceAttribution]
    cited: list[int]  # sources cited anywhere, in order of first use


def _render(piece: Piece, citations: list[int]) -> str:
    marks = f" [{', '.join(map(str, citations))}]" if citations else ""
    return f"{piece.body}{marks}{piece.end}"


def attribute(
    text: str,
    sources: Mapping[int, str],
    verifier: CitationVerifier,
    unsupported: str = "flag",
) -> Attributed:
    """Check each claim against every source: keep the cited sources that support it, replace a
    citation that does not with the source that does, attach one to an uncited claim, and flag
    (or, with `unsupported="remove"`, drop) a claim no source supports. `sources` maps each
    source number to its text; numbers outside it were already removed by check_citations."""
    numbers = sorted(sources)
    passages = [sources[n] for n in numbers]
    sentences: list[SentenceAttribution] = []
    rendered: list[tuple[str, str]] = []
    cited_order: list[int] = []
    for piece in split_answer(text):
        cited = [c for c in piece.cited if c in sources]
        if not is_claim(piece.body):
            sentence = SentenceAttribution(
                text=piece.body, citations=cited, claim=False, supported=True, score=1.0
            )
        else:
            scores = dict(zip(numbers, verifier.support(piece.body, passages), strict=True))
            supporting = [c for c in cited if scores[c] >= verifier.threshold]
            best = max(numbers, key=lambda n: scores[n]) if numbers else None
            if supporting:
                final, supported, changed = supporting, True, supporting != cited
            elif best is not None and scores[best] >= verifier.threshold:
                final, supported, changed = [best], True, True
            else:
                final, supported, changed = cited, False, False
            score = max((scores[c] for c in final), default=max(scores.values(), default=0.0))
            sentence = SentenceAttribution(
                text=piece.body,
                citations=final,
                claim=True,
                supported=supported,
                score=round(score, 4),
                original_citations=cited if changed else None,
            )
        sentences.append(sentence)
        if sentence.supported or unsupported == "flag":
            rendered.append((_render(piece, sentence.citations), piece.sep))
            cited_order.extend(c for c in sentence.citations if c not in cited_order)
    return Attributed(text=_join(rendered), sentences=sentences, cited=cited_order)


def _join(parts: list[tuple[str, str]]) -> str:
    return "".join(text + sep for text, sep in parts).strip()
