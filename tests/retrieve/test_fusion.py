"""Fusion of ranked lists: hand-made ones, and those the keyword and vector indexes return."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.memory import MemoryKeywordIndex, MemoryVectorIndex
from appliance.index.protocols import IndexedChunk, IndexHit
from appliance.index.vectors import USearchVectorIndex
from appliance.retrieve.fusion import (
    FUSION_METHODS,
    distribution_based,
    fuse,
    reciprocal_rank_fusion,
    score_fusion,
    weighted_fusion,
    z_score,
)

KEYWORD = [IndexHit(1, 12.0), IndexHit(2, 8.0), IndexHit(3, 2.0)]
SEMANTIC = [IndexHit(3, 0.91), IndexHit(4, 0.85), IndexHit(1, 0.40)]


def test_rrf_rewards_agreement():
    fused = reciprocal_rank_fusion([KEYWORD, SEMANTIC], k=60)
    assert [h.chunk_id for h in fused][:2] == [1, 3]  # both lists have them
    assert {h.chunk_id for h in fused} == {1, 2, 3, 4}
    assert fused[0].score == 1 / 61 + 1 / 63


def test_weighted_uses_normalised_scores_and_weights():
    semantic_heavy = weighted_fusion([KEYWORD, SEMANTIC], [0.2, 0.8])
    assert semantic_heavy[0].chunk_id == 3
    keyword_heavy = weighted_fusion([KEYWORD, SEMANTIC], [0.8, 0.2])
    assert keyword_heavy[0].chunk_id == 1
    assert all(0.0 <= h.score <= 1.0 for h in semantic_heavy)


def test_empty_and_single_lists():
    assert weighted_fusion([[], []], [0.5, 0.5]) == []
    assert reciprocal_rank_fusion([[]]) == []
    single = weighted_fusion([[IndexHit(7, 3.0)], []], [0.3, 0.7])
    assert single == [IndexHit(7, 0.3)]


def test_ties_are_deterministic():
    a = [IndexHit(5, 1.0), IndexHit(2, 1.0)]
    assert [h.chunk_id for h in reciprocal_rank_fusion([a, list(reversed(a))])] == [2, 5]


# -- fusion of what real retrievers return: BM25's unbounded scores beside cosine similarities --

DIM = 16
BASIS = np.linalg.qr(np.random.default_rng(0).standard_normal((DIM, DIM)))[0].T  # orthonormal rows
CHUNKS = [
    IndexedChunk(1, "docs", "d1", "Kubernetes operators", "Operators reconcile custom resources.", BASIS[1]),
    IndexedChunk(2, "docs", "d2", "Photosynthesis", "Plants convert sunlight into glucose.", BASIS[2]),
    IndexedChunk(3, "docs", "d3", "Quarterly invoices", "The supplier invoice was paid in March.", BASIS[3]),
    IndexedChunk(4, "docs", "d4", "Sourdough baking", "A starter ferments flour with wild yeast.", BASIS[4]),
    IndexedChunk(
        5, "docs", "d5", "Glacier retreat", "Alpine glaciers lose meltwater into valleys.", BASIS[5]
    ),
    IndexedChunk(6, "other", "d6", "Glacier tours", "Glaciers and meltwater for visitors.", BASIS[5]),
]
# Keyword: chunk 5 strongly (three terms), chunk 3 weakly (one). Semantic: chunk 3 at 0.8, chunk 5 at 0.6.
KEYWORD_QUERY = "glaciers meltwater valleys invoice"
SEMANTIC_QUERY = 0.8 * BASIS[3] + 0.6 * BASIS[5]


@pytest.fixture(params=["memory", "tantivy+usearch"])
def retrieved(request, tmp_path) -> Iterator[tuple[list[IndexHit], list[IndexHit]]]:
    if request.param == "memory":
        keyword, vectors = MemoryKeywordIndex(), MemoryVectorIndex(DIM)
    else:  # the real engines, so the fast variant is known to stand for them
        keyword, vectors = (
            TantivyKeywordIndex(tmp_path / "bm25"),
            USearchVectorIndex(tmp_path / "vectors", DIM),
        )
    try:
        for index in (keyword, vectors):
            index.upsert(CHUNKS)
            index.commit(1)
        yield keyword.search(KEYWORD_QUERY, ["docs"], 10), vectors.search(SEMANTIC_QUERY, ["docs"], 10)
    finally:
        keyword.close()
        vectors.close()


def test_retrievers_disagree_on_the_top_chunk(retrieved):
    keyword, semantic = retrieved
    assert [h.chunk_id for h in keyword] == [5, 3]
    assert keyword[0].score > 1.0  # BM25 is not on the cosine scale: fusion must normalise
    assert [h.chunk_id for h in semantic][:2] == [3, 5]
    assert 6 not in {h.chunk_id for h in keyword + semantic}


def test_weighted_fusion_of_retriever_output_follows_the_weights(retrieved):
    # 5 is first in one list and close second in the other; 3 wins only when semantic dominates.
    assert [h.chunk_id for h in weighted_fusion(retrieved, [0.3, 0.7])][:2] == [5, 3]
    assert [h.chunk_id for h in weighted_fusion(retrieved, [0.1, 0.9])][:2] == [3, 5]
    fused = weighted_fusion(retrieved, [0.3, 0.7])
    assert {h.chunk_id for h in fused} == {1, 2, 3, 4, 5}
    assert all(0.0 <= h.score <= 1.0 for h in fused)


def test_rrf_of_retriever_output_puts_agreement_first(retrieved):
    fused = reciprocal_rank_fusion(retrieved)
    assert {h.chunk_id for h in fused[:2]} == {3, 5}  # found by both retrievers
    assert fused[1].score > fused[2].score


@pytest.mark.parametrize("method", FUSION_METHODS)
def test_every_method_puts_what_both_retrievers_rank_first_first(method):
    keyword = [IndexHit(9, 20.0), IndexHit(1, 12.0), IndexHit(2, 8.0)]
    semantic = [IndexHit(9, 0.93), IndexHit(4, 0.85), IndexHit(1, 0.40)]
    fused = fuse([keyword, semantic], method, [0.4, 0.6])
    assert fused[0].chunk_id == 9 and {h.chunk_id for h in fused} == {1, 2, 4, 9}
    # All weight on one list: that list's order, the other's chunks after it.
    only_keyword = fuse([keyword, semantic], method, [1.0, 0.0])
    assert [h.chunk_id for h in only_keyword][:3] == [9, 1, 2]


def test_a_chunk_missing_from_a_list_gets_that_lists_floor():
    keyword = [IndexHit(1, 3.0), IndexHit(2, 2.0), IndexHit(3, 1.0)]
    semantic = [IndexHit(3, 0.9), IndexHit(4, 0.5), IndexHit(5, 0.1)]
    scores = {h.chunk_id: h.score for h in score_fusion([keyword, semantic], [0.5, 0.5], z_score)}
    z_keyword, floor_keyword = z_score([3.0, 2.0, 1.0])
    z_semantic, floor_semantic = z_score([0.9, 0.5, 0.1])
    assert scores[1] == pytest.approx(0.5 * z_keyword[0] + 0.5 * floor_semantic)
    assert scores[4] == pytest.approx(0.5 * floor_keyword + 0.5 * z_semantic[1])
    assert scores[3] == pytest.approx(0.5 * z_keyword[2] + 0.5 * z_semantic[0])
    # Shown through the logistic function: in (0, 1), in the same order.
    shown = fuse([keyword, semantic], "zscore", [0.5, 0.5])
    assert [h.chunk_id for h in shown] == sorted(scores, key=lambda c: (-scores[c], c))
    assert all(0.0 < h.score < 1.0 for h in shown)
    assert shown[0].score == pytest.approx(1 / (1 + math.exp(-max(scores.values()))))


def test_zscore_weighs_a_hit_by_how_far_it_stands_out_of_its_list():
    # Semantic: one hit (1) far above an even field; keyword: an even spread, topped by 3.
    # Min-max gives both tops the same 1.0; z-score ranks the standout first.
    semantic = [IndexHit(1, 0.95)] + [IndexHit(c, 0.40 - c / 1000) for c in range(10, 20)]
    keyword = [IndexHit(3, 10.0)] + [IndexHit(c, 10.0 - (c - 19)) for c in range(20, 30)]
    minmax = fuse([keyword, semantic], "weighted", [0.5, 0.5])
    assert minmax[0].score == minmax[1].score and {minmax[0].chunk_id, minmax[1].chunk_id} == {1, 3}
    assert [h.chunk_id for h in fuse([keyword, semantic], "zscore", [0.5, 0.5])][:2] == [1, 3]


def test_normalisers_of_degenerate_lists():
    assert z_score([2.0, 2.0]) == ([0.0, 0.0], 0.0)
    assert distribution_based([2.0]) == ([1.0], 0.0)
    normed, floor = distribution_based([10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert all(0.0 <= v <= 1.0 for v in normed) and floor == min(normed)
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse([KEYWORD, SEMANTIC], "borda", [0.5, 0.5])
