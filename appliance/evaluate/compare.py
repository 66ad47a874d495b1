"""Two runs of one set compared item by item: per-metric difference with a paired bootstrap interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from appliance.evaluate.scorecard import ITEM_METRICS, STAGES, lower_is_better
from appliance.records import EvalOutcome, MetricDifference

CONFIDENCE = 0.95


def paired_values(outcome: EvalOutcome) -> dict[str, float]:
    """An item's numbers that pair across runs: its metric scores and its stage latencies."""
    values = {m: float(v) for m, v in outcome.scores.items() if v is not None}
    for name, key in STAGES.items():
        if outcome.timings.get(key) is not None:
            values[name] = float(outcome.timings[key])
    return values


def bootstrap_interval(diffs: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean difference over `resamples` resamplings of the pairs."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def compare_outcomes(
    a: Sequence[EvalOutcome], b: Sequence[EvalOutcome], resamples: int, seed: int
) -> tuple[int, list[MetricDifference]]:
    """Pairs the items both runs completed (by item id), then per metric defined on both sides of
    a pair: B - A, its interval, and a verdict that says "within noise" when the interval spans 0."""
    by_id = {o.item_id: paired_values(o) for o in a if o.state == "done"}
    pairs = [(by_id[o.item_id], paired_values(o)) for o in b if o.state == "done" and o.item_id in by_id]
    order = [*ITEM_METRICS, *STAGES]
    names = sorted({m for va, vb in pairs for m in va.keys() & vb.keys()}, key=order.index)
    out = []
    for metric in names:
        xs = np.array([va[metric] for va, vb in pairs if metric in va and metric in vb])
        ys = np.array([vb[metric] for va, vb in pairs if metric in va and metric in vb])
        diffs = ys - xs
        low, high = bootstrap_interval(diffs, resamples, seed) if len(diffs) > 1 else (None, None)
        if low is None or low <= 0 <= high:
            verdict = "within noise"
        else:
            better = (diffs.mean() < 0) if lower_is_better(metric) else (diffs.mean() > 0)
            verdict = "improved" if better else "regressed"
        out.append(
            MetricDifference(
                metric=metric,
                n=len(diffs),
                a=round(float(xs.mean()), 6),
                b=round(float(ys.mean()), 6),
                difference=round(float(diffs.mean()), 6),
                low=round(low, 6) if low is not None else None,
                high=round(high, 6) if high is not None else None,
                verdict=verdict,
            )
        )
    return len(pairs), out
