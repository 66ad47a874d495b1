"""Choosing a collection's fusion: every candidate setting scored on the same queries' candidate lists."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from appliance.evaluate.retrieval_metrics import ndcg_at, recall_at
from appliance.index.protocols import IndexHit
from appliance.records import FusionCandidateScore, FusionSettings
from appliance.retrieve.fusion import FUSION_METHODS
from appliance.retrieve.search import fuse_candidates

WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROUTED = ((0.3, 0.8), (0.4, 0.8), (0.5, 0.9))  # (lookup, question) semantic weights
# A candidate must beat the default by more than this (mean nDCG@10) to replace it: on a few
# dozen generated questions smaller gains are noise, and the default is robust across corpora.
MIN_GAIN = 0.005


@dataclass(frozen=True, slots=True)
class CalibrationQuery:
    """One generated question: its text, graded relevance by source id, both candidate lists and
    the source id of every candidate chunk."""

    text: str
    relevance: dict[str, int]
    keyword: list[IndexHit]
    semantic: list[IndexHit]
    source_of: dict[int, str]


def candidate_settings(default: FusionSettings) -> list[FusionSettings]:
    """The grid: every method at every weight, with and without routing, at the default depth."""
    out = []
    for method, weight in itertools.product(FUSION_METHODS, WEIGHTS):
        base = msgspec.structs.replace(default, method=method, semantic_weight=weight, routing=False)
        out.append(base)
        out.extend(
            msgspec.structs.replace(
                base, routing=True, lookup_semantic_weight=lw, question_semantic_weight=qw
            )
            for lw, qw in ROUTED
        )
    return out


def score(settings: FusionSettings, queries: Sequence[CalibrationQuery]) -> FusionCandidateScore:
    """Mean nDCG@10 and recall@100 of `settings` over `queries` (documents rank at their best chunk)."""
    ndcg = recall = 0.0
    for q in queries:
        fused = fuse_candidates(
            q.text, q.keyword[: settings.candidates], q.semantic[: settings.candidates], settings
        )
        docs = list(dict.fromkeys(q.source_of[h.chunk_id] for h in fused))
        ndcg += ndcg_at(docs, q.relevance, 10)
        recall += recall_at(docs, q.relevance, 100)
    n = max(len(queries), 1)
    return FusionCandidateScore(
        settings=settings, ndcg_at_10=round(ndcg / n, 6), recall_at_100=round(recall / n, 6)
    )


def calibrate(
    default: FusionSettings, queries: Sequence[CalibrationQuery]
) -> tuple[FusionSettings, FusionCandidateScore, list[FusionCandidateScore]]:
    """The chosen settings, the default's score and every candidate's (best first). The default
    stays unless a candidate beats it by MIN_GAIN nDCG@10; ties go to recall@100."""
    baseline = score(default, queries)
    scores = sorted(
        (score(s, queries) for s in candidate_settings(default)),
        key=lambda s: (-s.ndcg_at_10, -s.recall_at_100),
    )
    best = scores[0]
    chosen = best.settings if best.ndcg_at_10 > baseline.ndcg_at_10 + MIN_GAIN else default
    return chosen, baseline, scores
