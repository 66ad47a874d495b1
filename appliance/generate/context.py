"""Builds the numbered source context that fits the model's window."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.records import Hit


@dataclass(frozen=True, slots=True)
class Source:
    n: int
    hit: Hit
    text: str  # possibly truncated to fit


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


def build_context(
    hits: Sequence[Hit], budget_tokens: int, count_tokens: Callable[[str], int]
) -> list[Source]:
    """Number hits [1..n] in rank order and keep as many as fit in `budget_tokens`.

    A hit that does not fit whole is cut at a word boundary when at least a useful part of it
    fits; after that, nothing more is added (a later, smaller hit would be less relevant)."""
    sources: list[Source] = []
    used = 0
    for hit in hits:
        n = len(sources) + 1
        candidate = Source(n, hit, hit.text)
        cost = count_tokens(format_source(candidate)) + 2
        if used + cost <= budget_tokens:
            sources.append(candidate)
            used += cost
            continue
        room = budget_tokens - used - count_tokens(format_source(Source(n, hit, ""))) - 2
        if room >= 48:
            words = hit.text.split()
            lo, hi = 0, len(words)
            while lo < hi:  # the longest prefix that fits
                mid = (lo + hi + 1) // 2
                if count_tokens(" ".join(words[:mid])) <= room:
                    lo = mid
                else:
                    hi = mid - 1
            if lo:
                sources.append(Source(n, hit, " ".join(words[:lo]) + " …"))
        break
    return sources
