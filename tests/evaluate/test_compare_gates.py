"""Paired comparison of runs and gate thresholds, over outcomes and scorecards built by hand."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.evaluate.compare import compare_outcomes
from appliance.evaluate.gates import check_thresholds_valid, evaluate_gate, paired_difference
from appliance.records import EvalOutcome, GateThreshold


def _run(recalls: list[float], total_ms: list[float]) -> list[EvalOutcome]:
    return [
        EvalOutcome(
            ordinal=i,
            item_id=f"q{i}",
            question="?",
            kind="query",
            state="done",
            scores={"recall@10": r},
            timings={"total_ms": t},
        )
        for i, (r, t) in enumerate(zip(recalls, total_ms, strict=True))
    ]


def _by_metric(a, b) -> dict:
    _, diffs = compare_outcomes(a, b, resamples=2000, seed=13)
    return {d.metric: d for d in diffs}


def test_a_real_difference_is_flagged_in_the_metrics_good_direction():
    good = _run([1.0] * 30, [100.0 + i for i in range(30)])
    worse = _run([1.0] * 10 + [0.0] * 20, [50.0 + i for i in range(30)])
    diffs = _by_metric(good, worse)
    recall = diffs["recall@10"]
    assert (recall.a, recall.b, recall.n) == (1.0, pytest.approx(1 / 3), 30)
    assert recall.high < 0 and recall.verdict == "regressed"
    assert diffs["total_ms"].verdict == "improved"  # 50 ms faster: lower is better


def test_the_same_numbers_twice_are_within_noise_and_so_is_a_tiny_difference():
    run = _run([1.0, 0.0, 0.5] * 10, [100.0] * 30)
    assert {d.verdict for d in _by_metric(run, run).values()} == {"within noise"}
    nudged = _run([1.0, 0.0, 0.5] * 9 + [1.0, 0.0, 0.0], [100.0] * 30)
    recall = _by_metric(run, nudged)["recall@10"]
    assert recall.low < 0 <= recall.high and recall.verdict == "within noise"


def test_pairs_are_items_both_runs_completed():
    a = _run([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    b = _run([0.0, 0.0], [1.0, 1.0])
    pairs, diffs = compare_outcomes(a, b, resamples=200, seed=1)
    assert pairs == 2 and diffs[0].n == 2
    single, diffs = compare_outcomes(a[:1], b[:1], resamples=200, seed=1)
    assert single == 1 and diffs[0].low is None and diffs[0].verdict == "within noise"


def test_gate_bounds_absolute_and_relative_in_each_direction():
    card = {"ndcg@10": 0.50, "ttft_ms_p95": 900.0}
    base = {"ndcg@10": 0.55, "ttft_ms_p95": 1000.0}
    thresholds = [
        GateThreshold(metric="ndcg@10", min=0.4, max_regression=0.1),
        GateThreshold(metric="ttft_ms_p95", max=1000.0, min_delta=50.0),
    ]
    checks = evaluate_gate(thresholds, card, base)
    assert [(c.metric, c.bound, c.passed) for c in checks] == [
        ("ndcg@10", "min", True),
        ("ndcg@10", "max_regression", True),  # 0.05 worse, 0.1 allowed
        ("ttft_ms_p95", "max", True),
        ("ttft_ms_p95", "min_delta", True),  # 100 ms faster is 100 better
    ]
    strict = [
        GateThreshold(metric="ndcg@10", min=0.6, max_regression=0.01),
        GateThreshold(metric="mrr", min=0.1),
    ]
    checks = evaluate_gate(strict, card, base)
    assert [c.passed for c in checks] == [False, False, False]
    assert checks[2].detail == "not on the run's scorecard"


def test_gate_thresholds_are_checked_when_created():
    with pytest.raises(InvalidInput, match="at least one threshold"):
        check_thresholds_valid([], False)
    with pytest.raises(InvalidInput, match="give at least one of"):
        check_thresholds_valid([GateThreshold(metric="mrr")], False)
    with pytest.raises(InvalidInput, match="need a baseline run"):
        check_thresholds_valid([GateThreshold(metric="mrr", min_delta=0.1)], False)
    check_thresholds_valid([GateThreshold(metric="mrr", min_delta=0.1)], True)


def test_the_embedder_gates_paired_difference_and_interval():
    assert paired_difference([], [], 500) == (None, None)
    assert paired_difference([0.5], [0.7], 500) == (0.2, None)  # one pair: no interval
    same_gain = paired_difference([0.2, 0.4, 0.6, 0.8], [0.3, 0.5, 0.7, 0.9], 500)
    assert same_gain == (0.1, [0.1, 0.1])
    mixed = paired_difference([0.5] * 10, [0.9, 0.1] * 5, 2000)
    assert mixed[0] == 0.0 and mixed[1][0] < 0 < mixed[1][1]  # a gain that may be noise spans 0
