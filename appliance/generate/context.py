"""Builds the numbered source context that fits the model's window (and the answer's budget)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.generate.support import sentences_of, terms
from appliance.records import Hit

# Two chunks sharing this much of their vocabulary say the same thing (a copied paragraph, an
# overlapping window): the second only costs prompt tokens.
NEAR_DUPLICATE = 0.85
MIN_USEFUL_TOKENS = 48  # less of a chunk than this is not worth a source number


@dataclass(frozen=True, slots=True)
class Source:
    n: int
    hit: Hit
    text: str  # possibly shortened to fit


def _label(hit: Hit) -> str:
    loc = hit.location
    parts = [hit.title or hit.source_id or ""]
    if loc.heading_path:
        parts.append(" > ".join(loc.heading_path))
    if loc.page:
        parts.append(f"page {loc.page}")
    return " | ".join(p for p in parts if p)


def format_source(source: Source) -> str:
    return f"[{source.n}] {_label(source.hit)}\n{source.text}"


def _near_duplicate(a: set[str], b: set[str]) -> bool:
    if not a or not b:
        return False
    return len(a & b) / min(len(a), len(b)) >= NEAR_DUPLICATE


def _prefix(text: str, room: int, count_tokens: Callable[[str], int]) -> str:
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # the longest prefix that fits
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= room:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + " …" if lo else ""


def _relevant_sentences(text: str, question: str, room: int, count_tokens: Callable[[str], int]) -> str:
    """The chunk's sentences (or lines) that share most terms with the question, kept in their
    order, as many as fit; "…" marks what was left out. None relevant: a prefix."""
    sentences = sentences_of(text)
    wanted, _ = terms(question)
    overlap = [len(terms(sentence)[0] & wanted) for sentence in sentences]
    # Only sentences that share a term with the question: filler would cost prompt tokens.
    ranked = sorted((i for i in range(len(sentences)) if overlap[i]), key=lambda i: (-overlap[i], i))
    chosen: set[int] = set()
    used = 0
    for i in ranked:
        cost = count_tokens(sentences[i]) + 1
        if used + cost <= room:
            chosen.add(i)
            used += cost
    if not chosen:
        return _prefix(text, room, count_tokens)
    out: list[str] = []
    for i in range(len(sentences)):
        if i in chosen:
            out.append(sentences[i])
        elif out and out[-1] != "…":
            out.append("…")
    if len(chosen) < len(sentences) and min(chosen) > 0:
        out.insert(0, "…")
    return " ".join(out)


def build_context(
    hits: Sequence[Hit],
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    question: str = "",
) -> list[Source]:
    """Number hits [1..n] in rank order and keep as many as fit in `budget_tokens`.

    A near-duplicate of a chunk already kept is skipped. A hit that does not fit whole is cut to
    its sentences most relevant to `question` (without a question: to a prefix at a word
    boundary) when a useful part fits; after that, nothing more is added (a later hit would be
    less relevant)."""
    sources: list[Source] = []
    kept_terms: list[set[str]] = []
    used = 0
    for hit in hits:
        vocabulary = terms(hit.text)[0]
        if any(_near_duplicate(vocabulary, seen) for seen in kept_terms):
            continue
        n = len(sources) + 1
        candidate = Source(n, hit, hit.text)
        cost = count_tokens(format_source(candidate)) + 2
        if used + cost <= budget_tokens:
            sources.append(candidate)
            kept_terms.append(vocabulary)
            used += cost
            continue
        room = budget_tokens - used - count_tokens(format_source(Source(n, hit, ""))) - 2
        if room >= MIN_USEFUL_TOKENS:
            if question:
                text = _relevant_sentences(hit.text, question, room, count_tokens)
            else:
                text = _prefix(hit.text, room, count_tokens)
            if text:
                sources.append(Source(n, hit, text))
        break
    return sources
