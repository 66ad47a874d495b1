"""Fusing ranked lists from several retrievers: reciprocal rank, or weighted normalised scores."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from appliance.index.protocols import IndexHit

# Score normalisations: each maps a list's raw scores to comparable values, and says what a chunk
# missing from the list gets (it scored below the list's cut-off: the list's own minimum is the
# closest honest estimate).
Normaliser = Callable[[list[float]], tuple[list[float], float]]
FUSION_METHODS = ("weighted", "zscore", "dbsf", "rrf")


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


def min_max(values: list[float]) -> tuple[list[float], float]:
    """Onto [0, 1] by the list's own range. One outlier at the top squeezes everything else."""
    low, high = min(values), max(values)
    span = high - low
    return [(v - low) / span if span > 0 else 1.0 for v in values], 0.0


def z_score(values: list[float]) -> tuple[list[float], float]:
    """Standard scores: a hit counts by how far it stands out of its list's typical score, so
    one outlier at the top does not squeeze every other hit towards 0 as it does under min-max."""
    mean = statistics.fmean(values)
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    if sd <= 0:
        return [0.0] * len(values), 0.0
    normed = [(v - mean) / sd for v in values]
    return normed, min(normed)


def distribution_based(values: list[float]) -> tuple[list[float], float]:
    """Distribution-based score fusion (DBSF): min-max over mean ± 3 standard deviations, so the
    range comes from the whole list, not from its two extremes."""
    mean = statistics.fmean(values)
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    if sd <= 0:
        return [1.0] * len(values), 0.0
    low, span = mean - 3 * sd, 6 * sd
    normed = [min(1.0, max(0.0, (v - low) / span)) for v in values]
    return normed, min(normed)


def score_fusion(
    ranked: Sequence[Sequence[IndexHit]], weights: Sequence[float], normalise: Normaliser = min_max
) -> list[IndexHit]:
    """Weighted sum of normalised scores; a chunk absent from a list gets that list's floor."""
    scores: dict[int, float] = {}
    floors = 0.0
    for hits, weight in zip(ranked, weights, strict=True):
        if not hits or weight == 0:
            continue
        normed, floor = normalise([h.score for h in hits])
        floors += weight * floor
        for hit, value in zip(hits, normed, strict=True):
            # Stored relative to the floor, so "absent" is 0 and the sum needs no second pass.
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight * (value - floor)
    return _sorted({cid: s + floors for cid, s in scores.items()})


def weighted_fusion(ranked: Sequence[Sequence[IndexHit]], weights: Sequence[float]) -> list[IndexHit]:
    """Convex combination of min-max normalised scores."""
    return score_fusion(ranked, weights, min_max)


NORMALISERS: dict[str, Normaliser] = {"weighted": min_max, "zscore": z_score, "dbsf": distribution_based}


def fuse(
    ranked: Sequence[Sequence[IndexHit]], method: str, weights: Sequence[float], rrf_k: int = 60
) -> list[IndexHit]:
    """One fusion by name (FUSION_METHODS); `weights` per list in both rank and score fusion."""
    if method == "rrf":
        return reciprocal_rank_fusion(ranked, weights, rrf_k)
    if method not in NORMALISERS:
        raise ValueError(f"unknown fusion method {method!r}: use one of {', '.join(FUSION_METHODS)}")
    fused = score_fusion(ranked, weights, NORMALISERS[method])
    if method == "zscore":
        # Sums of standard scores are unbounded (a lone hit scores 0): shown through the logistic
        # function they are relevance-like scores in (0, 1), in the same order.
        return [IndexHit(h.chunk_id, 1.0 / (1.0 + math.exp(-h.score))) for h in fused]
    return fused


def _sorted(scores: dict[int, float]) -> list[IndexHit]:
    # Ties broken by chunk id so results are deterministic.
    return [IndexHit(cid, s) for cid, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]
