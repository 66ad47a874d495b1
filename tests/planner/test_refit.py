"""The refit rule and the SLO verdicts on synthetic validations: a deliberately off prediction moves toward
the measurement, never by more than the bound, and a miss is judged against the prediction's interval."""

from __future__ import annotations

import math

import msgspec
import pytest

from appliance.plan_records import Validation, ValidationRow
from appliance.planner.validation import (
    KEEP,
    MAX_RATIO,
    PRIOR_WEIGHT,
    combine,
    point,
    verdict,
    verdicts,
)


def validation(
    vid: str, ttft: tuple[float, float], itl: tuple[float, float], requests: int = 40, model: str = "M"
) -> Validation:
    """ttft and itl as (raw predicted, measured)."""
    rows = [
        ValidationRow(
            metric=metric,
            predicted=raw,
            interval=[raw * 0.8, raw * 1.2],
            measured=measured,
            error=None,
            inside_interval=False,
            raw_predicted=raw,
        )
        for metric, (raw, measured) in (("p95 ttft", ttft), ("p95 itl", itl))
    ]
    return Validation(
        id=vid,
        created_at="2026-01-01T00:00:00+00:00",
        config_id=f"{model}@cpu-s1-c1024",
        users=1,
        requests=requests,
        errors=0,
        rows=rows,
        model=model,
        slots=1,
        context=1024,
        calibration_id="cal1",
    )


def refit_of(*validations: Validation):
    points = [(v.id, point(v)) for v in validations]  # newest first
    return combine("M", "cal1", points)


def test_an_off_prediction_moves_toward_the_measurement_shrunk():
    # Predicted 100 ms TTFT, measured 150: the factor moves up, but by the shrunk ratio 1.5 ** (1/3).
    refit = refit_of(validation("a", (100, 150), (20, 10)))
    assert refit.prefill_factor == pytest.approx(1.5 ** (1 / (1 + PRIOR_WEIGHT)), rel=1e-3)
    assert 1 < refit.prefill_factor < 1.5
    assert refit.decode_factor == pytest.approx(0.5 ** (1 / (1 + PRIOR_WEIGHT)), rel=1e-3)
    assert refit.validations == ["a"]
    # Repeated agreement moves it further toward the measured ratio, never past it.
    more = refit_of(*(validation(str(i), (100, 150), (20, 10)) for i in range(8)))
    assert refit.prefill_factor < more.prefill_factor < 1.5


def test_one_wild_validation_is_bounded():
    refit = refit_of(validation("wild", (100, 10_000), (20, 0.01)))
    bound = MAX_RATIO ** (1 / (1 + PRIOR_WEIGHT))
    assert refit.prefill_factor == pytest.approx(bound, rel=1e-3)
    assert refit.decode_factor == pytest.approx(1 / bound, rel=1e-3)
    many = refit_of(*(validation(str(i), (100, 10_000), (20, 0.01)) for i in range(50)))
    assert len(many.validations) == KEEP
    assert 1 / MAX_RATIO <= many.decode_factor and many.prefill_factor <= MAX_RATIO


def test_a_short_run_counts_less_and_a_dropped_one_not_at_all():
    full = refit_of(validation("a", (100, 200), (20, 20), requests=40))
    short = refit_of(validation("a", (100, 200), (20, 20), requests=2))
    assert 1 < short.prefill_factor < full.prefill_factor
    assert full.decode_factor == 1.0  # measured as predicted: nothing to correct

    a, b = validation("a", (100, 200), (20, 20)), validation("b", (100, 100), (20, 20))
    pa, pb = point(a), point(b)
    both = combine("M", "cal1", [("a", pa), ("b", pb)])
    without_a = combine("M", "cal1", [("a", msgspec.structs.replace(pa, dropped=True)), ("b", pb)])
    assert both.prefill_factor > 1 and without_a.prefill_factor == 1.0 and without_a.validations == ["b"]
    # Another model's or another calibration's validations never count.
    other = point(validation("c", (100, 200), (20, 20), model="Other"))
    assert combine("M", "cal1", [("c", other)]).validations == []
    assert combine("M", "cal2", [("a", pa)]).prefill_factor == 1.0


def test_slo_verdicts_against_the_interval():
    row = ValidationRow(
        metric="p95 ttft",
        predicted=100,
        interval=[80, 130],
        measured=0,
        error=None,
        inside_interval=False,
    )
    assert verdict("p95 ttft ms", 120, "x", row, 110).verdict == "met"
    # Missed, but by less than the interval's upper half (+30%, 30 ms of a 100 ms promise): the
    # planner said it could be that far off.
    within = verdict("p95 ttft ms", 100, "x", row, 125)
    assert within.verdict == "missed within interval" and within.margin == 30
    assert verdict("p95 ttft ms", 100, "x", row, 131).verdict == "missed"
    unreachable = verdict("p95 ttft ms", 1, "x", row, 100)
    assert unreachable.verdict == "missed" and unreachable.margin == 0.3
    tps = ValidationRow(
        metric="tokens/s per user",
        predicted=20,
        interval=[16, 24],
        measured=0,
        error=None,
        inside_interval=False,
    )
    assert verdict("tokens/s per user", 18, "x", tps, 19).verdict == "met"
    assert verdict("tokens/s per user", 18, "x", tps, 15).verdict == "missed within interval"
    assert verdict("tokens/s per user", 18, "x", tps, 13).verdict == "missed"
    judged = verdicts(validation("v", (100, 150), (20, 10)), {"p95 ttft ms": (140.0, "plan")})
    assert [(v.slo, v.verdict) for v in judged] == [("p95 ttft ms", "missed within interval")]
    assert math.isclose(judged[0].margin, 28.0)  # 20% of 140 ms
