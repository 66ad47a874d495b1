"""One item's scores from its outcome, and a run's scorecard from its items' outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.evaluate.answer_metrics import SupportCheck, citation_scores, contains_answer, token_f1
from appliance.evaluate.retrieval_metrics import RETRIEVAL_METRICS, retrieval_scores
from appliance.records import Citation, EvalItem, EvalOutcome

# Latency stages on the scorecard (p50, p95, p99 each) and the timing each is read from.
STAGES = {
    "retrieval_ms": "retrieval_ms",
    "rerank_ms": "rerank_ms",
    "ttft_ms": "first_token_ms",
    "total_ms": "total_ms",
}
PERCENTILES = (50, 95, 99)
# Per-item values averaged on the scorecard: retrieval first, then answers.
ITEM_METRICS = (
    *RETRIEVAL_METRICS,
    "accuracy",
    "token_f1",
    "refusal_accuracy",
    "over_refusal",
    "grounded_rate",
    "citation_precision",
    "citation_recall",
    # The share of an answer's claims the answer path's own citation verifier flagged unsupported.
    "unsupported_rate",
    # The run's judge (EvalRunOptions.judge): is the answer correct against the gold answer?
    "judge_correct",
)
_LOWER_IS_BETTER = ("over_refusal", "failed", "unsupported_rate")
_LOWER_IS_BETTER_SUFFIXES = ("_ms", "_tokens", "_per_query", "_seconds")


def lower_is_better(metric: str) -> bool:
    """Latency, tokens, cost and over-refusal improve downwards; every other metric upwards."""
    base = metric.rsplit("_p", 1)[0] if metric.rsplit("_p", 1)[-1].isdigit() else metric
    return base in _LOWER_IS_BETTER or base.endswith(_LOWER_IS_BETTER_SUFFIXES)


def score_item(
    item: EvalItem,
    ranked: Sequence[str],
    answer: str | None,
    refused: bool | None,
    citations: Sequence[Citation],
    passages: Mapping[int, str],
    check: SupportCheck,
) -> dict[str, float | None]:
    """Every metric defined for this item: retrieval when it has relevant documents, answers when
    it was answered (`answer` None: a retrieval-only run). `passages` are the cited chunks' texts
    by citation number."""
    scores: dict[str, float | None] = dict(retrieval_scores(ranked, item.relevance))
    if answer is None:
        return scores
    if item.kind == "unanswerable":
        scores["refusal_accuracy"] = float(bool(refused))
        return scores
    scores["over_refusal"] = float(bool(refused))
    if item.answers:
        scores["accuracy"] = float(not refused and contains_answer(answer, item.answers))
    if item.answer:
        scores["token_f1"] = 0.0 if refused else token_f1(answer, item.answer)
    if item.gold:
        gold = set(item.gold)
        scores["grounded_rate"] = float(not refused and any(c.source_id in gold for c in citations))
    if not refused:
        precision, recall = citation_scores(answer, passages, check)
        scores["citation_precision"], scores["citation_recall"] = precision, recall
    return scores


def primary_score(outcome: EvalOutcome) -> float:
    """The one number that orders a run's items worst first: failed items, then the answer's
    own score (accuracy, else token F1, else refusal being right), else nDCG@10."""
    if outcome.state != "done":
        return -1.0
    s = outcome.scores
    for metric in ("accuracy", "token_f1", "refusal_accuracy", "ndcg@10", "grounded_rate"):
        if s.get(metric) is not None:
            return float(s[metric])
    return 0.0


@dataclass(frozen=True, slots=True)
class Costs:
    cost_per_cpu_hour: float = 0.0
    cost_per_1k_tokens: float = 0.0


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def scorecard(outcomes: Sequence[EvalOutcome], costs: Costs = Costs()) -> dict[str, float | None]:
    """Means of the item metrics over the items where each is defined, latency percentiles per
    stage, tokens and cost per query. Failed items count in `failed` and nowhere else."""
    done = [o for o in outcomes if o.state == "done"]
    card: dict[str, float | None] = {
        "items": float(len(outcomes)),
        "failed": float(len(outcomes) - len(done)),
    }
    # The same keys for every run of a kind (null where no item defines one): retrieval metrics
    # always, answer metrics when items were answered.
    answered_any = any(o.answer is not None for o in done)
    for metric in ITEM_METRICS:
        if metric in RETRIEVAL_METRICS or answered_any:
            card[metric] = _mean([o.scores[metric] for o in done if o.scores.get(metric) is not None])
    for name, key in STAGES.items():
        values = [float(o.timings[key]) for o in done if o.timings.get(key) is not None]
        for p in PERCENTILES:
            card[f"{name}_p{p}"] = round(float(np.percentile(values, p)), 2) if values else None
    answered = [o for o in done if o.usage is not None]
    if answered:
        card["prompt_tokens_per_query"] = _mean([o.usage.prompt_tokens for o in answered])
        card["completion_tokens_per_query"] = _mean([o.usage.completion_tokens for o in answered])
    cpu = [o.cpu_seconds for o in done if o.cpu_seconds is not None]
    card["cpu_seconds_per_query"] = _mean(cpu)
    if done and (costs.cost_per_cpu_hour or costs.cost_per_1k_tokens):
        money = [
            (o.cpu_seconds or 0.0) / 3600 * costs.cost_per_cpu_hour
            + (o.usage.total_tokens if o.usage else 0) / 1000 * costs.cost_per_1k_tokens
            for o in done
        ]
        card["cost_per_query"] = _mean(money)
    return card
