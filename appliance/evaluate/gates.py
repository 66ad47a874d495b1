"""Gates: a run's scorecard against a gate's thresholds, absolute or relative to a baseline run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from appliance.errors import InvalidInput
from appliance.evaluate.compare import bootstrap_interval
from appliance.evaluate.scorecard import lower_is_better
from appliance.records import GateCheck, GateThreshold

BOUNDS = ("min", "max", "min_delta", "max_regression")
RELATIVE = ("min_delta", "max_regression")


def check_thresholds_valid(thresholds: Sequence[GateThreshold], has_baseline: bool) -> None:
    if not thresholds:
        raise InvalidInput("a gate needs at least one threshold")
    for i, t in enumerate(thresholds):
        if not t.metric:
            raise InvalidInput(f"thresholds[{i}]: metric is empty")
        bounds = [b for b in BOUNDS if getattr(t, b) is not None]
        if not bounds:
            raise InvalidInput(f"thresholds[{i}] ({t.metric}): give at least one of {', '.join(BOUNDS)}")
        if not has_baseline and any(b in RELATIVE for b in bounds):
            raise InvalidInput(
                f"thresholds[{i}] ({t.metric}): min_delta and max_regression need a baseline run"
            )
        if t.max_regression is not None and t.max_regression < 0:
            raise InvalidInput(f"thresholds[{i}] ({t.metric}): max_regression must be >= 0")


def evaluate_gate(
    thresholds: Sequence[GateThreshold],
    scorecard: Mapping[str, float | None],
    baseline: Mapping[str, float | None] | None,
) -> list[GateCheck]:
    """One check per bound. `min_delta` asks for at least that improvement over the baseline and
    `max_regression` allows at most that much worsening, both in the metric's good direction
    (lower is better for latency, tokens, cost and over-refusal). A metric the scorecard lacks
    fails its checks, saying so."""
    checks = []
    for t in thresholds:
        value = scorecard.get(t.metric)
        base = baseline.get(t.metric) if baseline is not None else None
        sign = -1.0 if lower_is_better(t.metric) else 1.0
        for bound in BOUNDS:
            limit = getattr(t, bound)
            if limit is None:
                continue
            if value is None:
                checks.append(
                    _check(t.metric, bound, limit, value, base, False, "not on the run's scorecard")
                )
                continue
            if bound == "min":
                ok, detail = value >= limit, f"{value:g} >= {limit:g}"
            elif bound == "max":
                ok, detail = value <= limit, f"{value:g} <= {limit:g}"
            elif base is None:
                checks.append(
                    _check(t.metric, bound, limit, value, base, False, "not on the baseline's scorecard")
                )
                continue
            else:
                gain = sign * (value - base)  # > 0: better than the baseline
                if bound == "min_delta":
                    ok, detail = gain >= limit, f"improvement {gain:+g} >= {limit:g}"
                else:
                    ok, detail = -gain <= limit, f"regression {-gain:+g} <= {limit:g}"
            checks.append(_check(t.metric, bound, limit, value, base, ok, detail if ok else f"not {detail}"))
    return checks


def _check(metric, bound, limit, value, base, ok, detail) -> GateCheck:
    return GateCheck(
        metric=metric,
        bound=bound,
        threshold=limit,
        value=value,
        baseline=base,
        passed=bool(ok),
        detail=detail,
    )


# -- a collection's embedder switch ------------------------------------------------------------------
EMBEDDER_GATE_METRICS = ("ndcg@10", "recall@10", "mrr")
EMBEDDER_GATE_RULE = "candidate nDCG@10 >= live nDCG@10 + min_gain, over at least one query"


def mean_retrieval(items: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of the embedder gate's metrics over items' retrieval scores."""
    n = max(1, len(items))
    return {m: round(sum(i.get(m, 0.0) for i in items) / n, 4) for m in EMBEDDER_GATE_METRICS}


def paired_difference(
    live: Sequence[float], candidate: Sequence[float], resamples: int, seed: int = 0
) -> tuple[float | None, list[float] | None]:
    """Mean of candidate - live over paired queries, and its 95% bootstrap interval (None with fewer
    than two pairs)."""
    diffs = np.asarray(candidate, dtype=float) - np.asarray(live, dtype=float)
    if len(diffs) == 0:
        return None, None
    if len(diffs) < 2:
        return round(float(diffs.mean()), 4), None
    low, high = bootstrap_interval(diffs, resamples, seed)
    return round(float(diffs.mean()), 4), [round(low, 4), round(high, 4)]


def embedder_gate_verdict(
    live: Mapping[str, float], candidate: Mapping[str, float], queries: int, min_gain: float, ungated: bool
) -> tuple[bool, str]:
    """Whether a new embedder generation may replace the live one, and why (EMBEDDER_GATE_RULE; an
    ungated switch passes whatever the scores, which are still reported)."""
    if ungated:
        return True, "ungated: switched without comparing retrieval"
    if queries == 0:
        return False, (
            "no eval queries over this collection: write an eval set first (`appliance eval generate "
            "--collection C`), or switch ungated"
        )
    new, old = candidate["ndcg@10"], live["ndcg@10"]
    if new + 1e-9 >= old + min_gain:
        return True, f"nDCG@10 {new:.4f} >= {old:.4f} + {min_gain:g} on {queries} queries"
    return False, f"nDCG@10 {new:.4f} < {old:.4f} + {min_gain:g} on {queries} queries"
