"""Fusion of ranked lists."""

from __future__ import annotations

from appliance.index.protocols import IndexHit
from appliance.retrieve.fusion import reciprocal_rank_fusion, weighted_fusion

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
