"""Fusing ranked lists from several retrievers: reciprocal rank, or weighted normalised scores."""

from __future__ import annotations

from collections.abc import Sequence

from appliance.index.protocols import IndexHit


def reciprocal_rank_fusion(
    ranked: Sequence[Sequence[IndexHit]], weights: Sequence[float] | None = None, k: int = 60
) -> list[IndexHit]:
    """Score = sum of weight / (k + rank). Ignores raw scores, so it needs no calibration."""
    weights = weights or [1.0] * len(ranked)
    scores: dict[int, float] = {}
    for hits, weight in zip(ranked, weights, strict=True):
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (k + rank)
    return _sorted(scores)


def weighted_fusion(ranked: Sequence[Sequence[IndexHit]], weights: Sequence[float]) -> list[IndexHit]:
    """Convex combination of min-max normalised scores.

    A chunk missing from one list gets 0 from it: it scored below that list's cut-off, and the
    list's own minimum is the closest honest estimate, which normalises to 0.
    """
    scores: dict[int, float] = {}
    for hits, weight in zip(ranked, weights, strict=True):
        if not hits or weight == 0:
            continue
        values = [h.score for h in hits]
        low, high = min(values), max(values)
        span = high - low
        for hit in hits:
            norm = (hit.score - low) / span if span > 0 else 1.0
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight * norm
    return _sorted(scores)


def _sorted(scores: dict[int, float]) -> list[IndexHit]:
    # Ties broken by chunk id so results are deterministic.
    return [IndexHit(cid, s) for cid, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]
