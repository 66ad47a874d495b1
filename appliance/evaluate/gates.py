"""Gates: a run's scorecard against a gate's thresholds, absolute or relative to a baseline run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from appliance.errors import InvalidInput
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
