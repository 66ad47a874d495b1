"""What a validation teaches the planner: the refit rule (per-model correction factors of the cost model,
shrunk and bounded) and the verdicts on the promised SLOs.

The refit. A validation measures p95 time to first token and p95 inter-token latency at a known load; the
same load was predicted twice, with and without the factors in force, and the ratio measured / predicted
without any factor says how far off the calibration's cost model is for this model on this box. Time to
first token is driven by the prefill cost and inter-token latency by the decode cost, so

    prefill factor = exp( sum(w_i * clip(log r_ttft_i)) / (PRIOR_WEIGHT + sum(w_i)) )
    decode factor  = the same over r_itl_i

over the model's newest KEEP validations on the current calibration (a new calibration starts afresh),
with each ratio clipped to [1/MAX_RATIO, MAX_RATIO] and weighted w_i = min(1, answers / FULL_WEIGHT_ANSWERS).
The calibration counts as PRIOR_WEIGHT validations that agreed with it: one validation, however far off,
moves a factor at most MAX_RATIO ** (1 / (1 + PRIOR_WEIGHT)) (1.26x), and no number of them past
MAX_RATIO. Dropping a validation's refit (`plan refit --drop ID`) takes it out of the sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from appliance.plan_records import Refit, RefitPoint, SloVerdict, Validation, ValidationRow

PRIOR_WEIGHT = 2.0
MAX_RATIO = 2.0
FULL_WEIGHT_ANSWERS = 20  # a short run's percentiles are noisy: fewer answers, proportionally less say
KEEP = 10  # the newest validations per model that count: the box drifts, old runs age out
PARTS = {"prefill": "p95 ttft", "decode": "p95 itl"}
RULE = (
    f"factor = exp(sum(w*clip(log(measured/predicted))) / ({PRIOR_WEIGHT:g} + sum(w))), ratios clipped to "
    f"[1/{MAX_RATIO:g}, {MAX_RATIO:g}], w = min(1, answers/{FULL_WEIGHT_ANSWERS}), newest {KEEP} validations "
    "of the model on this calibration"
)
TPS = "tokens/s per user"


def ratio(row: ValidationRow | None) -> float | None:
    """measured / predicted before any refit, clipped; None without a usable pair."""
    if row is None or row.raw_predicted is None or row.raw_predicted <= 0 or row.measured <= 0:
        return None
    return min(MAX_RATIO, max(1 / MAX_RATIO, row.measured / row.raw_predicted))


def point(validation: Validation) -> RefitPoint | None:
    """What this validation contributes to its model's refit (None: nothing to learn from it)."""
    if not validation.model or not validation.calibration_id or validation.requests < 1:
        return None
    rows = {r.metric: r for r in validation.rows}
    prefill, decode = ratio(rows.get(PARTS["prefill"])), ratio(rows.get(PARTS["decode"]))
    if prefill is None and decode is None:
        return None
    return RefitPoint(
        model=validation.model,
        calibration_id=validation.calibration_id,
        prefill_ratio=round(prefill, 4) if prefill is not None else None,
        decode_ratio=round(decode, 4) if decode is not None else None,
        weight=round(min(1.0, validation.requests / FULL_WEIGHT_ANSWERS), 3),
    )


def combine(model: str, calibration_id: str, points: Iterable[tuple[str, RefitPoint]]) -> Refit:
    """The factors in force from (validation id, point) pairs, newest first."""
    counted = [
        (vid, p)
        for vid, p in points
        if not p.dropped and p.model.lower() == model.lower() and p.calibration_id == calibration_id
    ][:KEEP]

    def factor(part: str) -> float:
        pairs = [(p.weight, getattr(p, f"{part}_ratio")) for _, p in counted]
        pairs = [(w, r) for w, r in pairs if r is not None]
        total = sum(w * math.log(r) for w, r in pairs)
        return round(math.exp(total / (PRIOR_WEIGHT + sum(w for w, _ in pairs))), 4)

    return Refit(
        model=model,
        calibration_id=calibration_id,
        prefill_factor=factor("prefill"),
        decode_factor=factor("decode"),
        validations=[vid for vid, _ in counted],
        weight=round(sum(p.weight for _, p in counted), 3),
        rule=RULE,
    )


def verdict(slo: str, promised: float, source: str, row: ValidationRow | None, measured: float) -> SloVerdict:
    """Met, missed within the prediction's 90% interval, or missed by more. The interval's relative width
    on the losing side (latency: (hi - predicted) / predicted; tokens/s: (predicted - lo) / predicted) is
    the planner's own uncertainty, carried to the promise: a 200 ms promise from a prediction of +-20%
    tolerates 240 ms measured before the rollback is offered."""
    predicted = row.predicted if row else None
    interval = row.interval if row else None
    margin = 0.0
    if predicted and interval and len(interval) == 2:
        spread = (interval[1] - predicted) if slo != TPS else (predicted - interval[0])
        margin = promised * max(0.0, spread) / predicted
    if slo == TPS:
        met, within = measured >= promised, measured >= promised - margin
    else:
        met, within = measured <= promised, measured <= promised + margin
    return SloVerdict(
        slo=slo,
        promised=promised,
        source=source,
        predicted=predicted,
        interval=interval,
        measured=measured,
        margin=round(margin, 3),
        verdict="met" if met else "missed within interval" if within else "missed",
    )


def verdicts(validation: Validation, promises: dict[str, tuple[float, str]]) -> list[SloVerdict]:
    """Each promised SLO ({slo: (value, source)}) the validation measured, judged."""
    rows = {r.metric: r for r in validation.rows}
    out = []
    for slo, (promised, source) in promises.items():
        row = rows.get("p95 ttft" if slo == "p95 ttft ms" else slo)
        if row is not None:
            out.append(verdict(slo, promised, source, row, row.measured))
    return out
