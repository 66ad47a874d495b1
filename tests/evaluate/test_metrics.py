"""Retrieval and answer metrics against values computed by hand, and the scorecard over outcomes."""

from __future__ import annotations

import importlib.util
import math
import random

import msgspec
import pytest

from appliance.evaluate.answer_metrics import (
    LexicalSupport,
    citation_scores,
    contains_answer,
    is_refusal,
    normalize_answer,
    sentences,
    token_f1,
)
from appliance.evaluate.retrieval_metrics import (
    ndcg_at,
    precision_at,
    recall_at,
    reciprocal_rank,
    retrieval_scores,
)
from appliance.evaluate.scorecard import Costs, lower_is_better, primary_score, scorecard
from appliance.generate.prompts import NO_ANSWER
from appliance.records import EvalOutcome, Usage
from tests.conftest import REPO

RELEVANCE = {"a": 3, "b": 2, "c": 0, "d": 1}


def test_ndcg_is_linear_gain_over_the_ideal_ordering_of_every_judgment():
    # DCG@3 of [b, x, a] = 2/log2(2) + 0 + 3/log2(4) = 3.5; ideal [3, 2, 1] = 3 + 2/log2(3) + 1/2.
    assert ndcg_at(["b", "x", "a"], RELEVANCE, 3) == pytest.approx(3.5 / (3 + 2 / math.log2(3) + 0.5))
    assert ndcg_at(["a", "b", "d"], RELEVANCE, 3) == pytest.approx(1.0)
    assert ndcg_at(["x", "y"], RELEVANCE, 10) == 0.0
    # Only the first k count: a perfect document at rank 2 is outside @1.
    assert ndcg_at(["x", "a"], RELEVANCE, 1) == 0.0


def test_recall_precision_and_reciprocal_rank_count_grade_above_zero_as_relevant():
    ranked = ["b", "x", "a", "c"]
    assert recall_at(ranked, RELEVANCE, 2) == pytest.approx(1 / 3)  # of {a, b, d}
    assert recall_at(ranked, RELEVANCE, 4) == pytest.approx(2 / 3)  # c is judged 0: not relevant
    assert precision_at(ranked, RELEVANCE, 2) == pytest.approx(1 / 2)
    assert precision_at(["a"], RELEVANCE, 10) == pytest.approx(1 / 10)
    assert reciprocal_rank(ranked, RELEVANCE) == 1.0
    assert reciprocal_rank(["x", "c", "d"], RELEVANCE) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"], RELEVANCE) == 0.0
    assert retrieval_scores(ranked, {"c": 0}) == {}  # nothing to find: no retrieval metrics
    assert set(retrieval_scores(ranked, RELEVANCE)) == {
        "ndcg@10",
        "recall@10",
        "recall@100",
        "precision@10",
        "mrr",
    }


def test_ndcg_and_recall_agree_with_the_retrieval_benchmark():
    spec = importlib.util.spec_from_file_location(
        "bench_retrieval", REPO / "scripts" / "bench" / "retrieval.py"
    )
    import sys

    sys.path.insert(0, str(REPO / "scripts" / "bench"))
    try:
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(REPO / "scripts" / "bench"))
    rng = random.Random(7)
    for _ in range(50):
        docs = [f"d{i}" for i in range(30)]
        rels = {d: rng.randint(0, 3) for d in rng.sample(docs, 8)}
        ranked = rng.sample(docs, 20)
        assert ndcg_at(ranked, rels, 10) == pytest.approx(bench.ndcg_at(ranked, rels))
        assert recall_at(ranked, rels, 10) == pytest.approx(bench.recall_at(ranked, rels, 10))


def test_squad_normalisation_containment_and_token_f1():
    assert normalize_answer("The  Eiffel Tower, in PARIS!") == "eiffel tower in paris"
    assert contains_answer("It was finished in 1889 by Eiffel.", ["1889"])
    assert contains_answer("Built by the Eiffel company", ["an Eiffel company", "nope"])
    assert not contains_answer("It is 18890 metres", ["1889"])  # whole words only
    assert not contains_answer("anything", [""])
    # got [cat, sat], want [cat, sat, down]: precision 1, recall 2/3, F1 0.8
    assert token_f1("The cat sat.", "A cat sat down") == pytest.approx(0.8)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0


def test_a_refusal_is_the_answer_paths_no_answer_or_an_uncited_reply_saying_so():
    assert is_refusal(NO_ANSWER, 0)
    assert is_refusal(NO_ANSWER, 2)  # the answer path's own words are a refusal whatever else
    assert is_refusal("Sorry, the documents don't say what the per diem is.", 0)
    assert is_refusal("There is no information about that in the sources.", 0)
    assert not is_refusal("The documents do not say much, but the per diem is 50 EUR [1].", 1)
    assert not is_refusal("The per diem is 50 EUR.", 0)


def test_sentences_keep_the_markers_that_follow_them():
    assert sentences("Tall tower [1]. Old too. [2] Last one") == [
        "Tall tower [1].",
        "Old too. [2]",
        "Last one",
    ]
    # Markers closing the whole answer stay with its last sentence (Qwen2.5 writes them so).
    assert sentences("Tall tower. Built in 1889. [1, 2]") == ["Tall tower.", "Built in 1889. [1, 2]"]
    passages = {1: "The tower was built in 1889."}
    assert citation_scores("It was built in 1889. [1]", passages, LexicalSupport()) == (1.0, 1.0)


def test_citation_precision_and_recall_under_the_lexical_support_check():
    passages = {1: "The Eiffel tower is 330 metres tall.", 2: "Bananas are yellow and curved."}
    answer = "The tower is 330 metres tall [1]. It was finished in 1889 [2]. Thanks."
    # Two claims ("Thanks." has content words too: 3 sentences), two citations: only [1] supports
    # its sentence; the third sentence cites nothing.
    precision, recall = citation_scores(answer, passages, LexicalSupport())
    assert precision == pytest.approx(1 / 2)
    assert recall == pytest.approx(1 / 3)
    assert citation_scores("No citations here at all.", passages, LexicalSupport()) == (None, 0.0)
    assert LexicalSupport().supports("330 metres tall", passages[1])
    assert not LexicalSupport().supports("finished in 1889", passages[2])


def _outcome(ordinal: int, scores: dict, total_ms: float, **extra) -> EvalOutcome:
    return EvalOutcome(
        ordinal=ordinal,
        item_id=f"q{ordinal}",
        question="?",
        kind="answerable",
        state="done",
        answer="an answer",
        scores=scores,
        timings={"total_ms": total_ms, "retrieval_ms": total_ms / 10, "first_token_ms": None},
        **extra,
    )


def test_scorecard_means_defined_metrics_and_reads_latency_percentiles():
    outcomes = [
        _outcome(
            0,
            {"ndcg@10": 1.0, "accuracy": 1.0},
            10,
            usage=Usage(prompt_tokens=100, completion_tokens=10, total_tokens=110),
            cpu_seconds=2.0,
        ),
        _outcome(
            1,
            {"ndcg@10": 0.5, "accuracy": None},
            20,
            usage=Usage(prompt_tokens=300, completion_tokens=30, total_tokens=330),
            cpu_seconds=4.0,
        ),
        _outcome(2, {"ndcg@10": 0.0}, 30),
        _outcome(3, {"ndcg@10": 0.5}, 40),
        EvalOutcome(ordinal=4, item_id="q4", question="?", kind="answerable", state="failed", error="boom"),
    ]
    card = scorecard(outcomes, Costs(cost_per_cpu_hour=3600.0, cost_per_1k_tokens=1.0))
    assert card["items"] == 5 and card["failed"] == 1
    assert card["ndcg@10"] == pytest.approx(0.5)
    assert card["accuracy"] == pytest.approx(1.0)  # defined on one item only
    assert card["token_f1"] is None  # an answer metric no item defines: there, and null
    assert "accuracy" not in scorecard([msgspec.structs.replace(o, answer=None) for o in outcomes])
    assert card["total_ms_p50"] == pytest.approx(25.0)  # linear interpolation of 10, 20, 30, 40
    assert card["total_ms_p99"] == pytest.approx(39.7)
    assert card["retrieval_ms_p50"] == pytest.approx(2.5)
    assert card["ttft_ms_p95"] is None
    assert card["prompt_tokens_per_query"] == pytest.approx(200)
    assert card["cpu_seconds_per_query"] == pytest.approx(3.0)
    # (2 s -> 2.0 + 0.11) and (4 s -> 4.0 + 0.33) and two items at 0: mean over the 4 done items
    assert card["cost_per_query"] == pytest.approx((2.11 + 4.33) / 4)
    assert "cost_per_query" not in scorecard(outcomes)
    assert primary_score(outcomes[4]) < primary_score(outcomes[2]) < primary_score(outcomes[0])


def test_lower_is_better_for_latency_tokens_cost_and_over_refusal():
    assert lower_is_better("ttft_ms_p95") and lower_is_better("total_ms") and lower_is_better("over_refusal")
    assert lower_is_better("cost_per_query") and lower_is_better("prompt_tokens_per_query")
    assert not lower_is_better("ndcg@10") and not lower_is_better("refusal_accuracy")
