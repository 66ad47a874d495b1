"""Retrieval metrics over a ranked list of document ids and graded judgments: nDCG, recall, precision, MRR.

The definitions are trec_eval's (and scripts/bench/retrieval.py's): linear gain nDCG whose ideal
ranking is every judged document sorted by grade; a document is relevant when its grade is > 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from appliance.records import Hit, RetrievedDocument


def document_ranking(hits: Iterable[Hit]) -> list[RetrievedDocument]:
    """Chunks to documents: a document ranks at its best (first) chunk."""
    seen: set[str] = set()
    ranked = []
    for hit in hits:
        if hit.source_id not in seen:
            seen.add(hit.source_id)
            ranked.append(RetrievedDocument(source_id=hit.source_id, chunk_id=hit.chunk_id, score=hit.score))
    return ranked


def ndcg_at(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    dcg = sum(relevance.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevance.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def _relevant(relevance: Mapping[str, int]) -> set[str]:
    return {d for d, g in relevance.items() if g > 0}


def recall_at(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    relevant = _relevant(relevance)
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def precision_at(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Relevant documents among the first k, over k (a short list is not rewarded for being short)."""
    relevant = _relevant(relevance)
    return sum(1 for d in ranked[:k] if d in relevant) / k


def reciprocal_rank(ranked: Sequence[str], relevance: Mapping[str, int]) -> float:
    relevant = _relevant(relevance)
    return next((1 / (i + 1) for i, d in enumerate(ranked) if d in relevant), 0.0)


# The cut-offs every run reports; recall@100 needs a run's top_k to reach 100 to mean what it says.
NDCG_KS = (10,)
RECALL_KS = (10, 100)
PRECISION_KS = (10,)
RETRIEVAL_METRICS = (
    *(f"ndcg@{k}" for k in NDCG_KS),
    *(f"recall@{k}" for k in RECALL_KS),
    *(f"precision@{k}" for k in PRECISION_KS),
    "mrr",
)


def retrieval_scores(ranked: Sequence[str], relevance: Mapping[str, int]) -> dict[str, float]:
    """Every retrieval metric of one item; none when the item has no relevant document (an
    unanswerable question), since there is nothing to find."""
    if not _relevant(relevance):
        return {}
    scores = {f"ndcg@{k}": ndcg_at(ranked, relevance, k) for k in NDCG_KS}
    scores |= {f"recall@{k}": recall_at(ranked, relevance, k) for k in RECALL_KS}
    scores |= {f"precision@{k}": precision_at(ranked, relevance, k) for k in PRECISION_KS}
    scores["mrr"] = reciprocal_rank(ranked, relevance)
    return scores
