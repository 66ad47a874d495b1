"""Safe rollout's pure rules: canary schedules, sticky buckets, step analysis (scipy's tests on real
samples), shadow agreement, and the shadow mirror's bounded queue."""

from __future__ import annotations

import random
import threading

import pytest

from appliance.errors import InvalidInput
from appliance.models.rollout import (
    CANDIDATE,
    ArmStats,
    Criteria,
    analyse,
    answer_similarity,
    arm_for,
    bucket,
    citation_overlap,
    parse_steps,
    ready_to_analyse,
)
from appliance.models.shadow import ShadowMirror


def test_schedules_are_increasing_percentages_ending_at_100():
    assert parse_steps("5,25,50,100") == [5, 25, 50, 100]
    assert parse_steps("10%, 100%") == [10, 100]
    assert parse_steps([100]) == [100]
    for bad, words in [
        ("", "at least one step"),
        ("5,x,100", "percentages separated by commas"),
        ("0,100", "from 1 to 100"),
        ("5,150", "from 1 to 100"),
        ("50,25,100", "more traffic than the one before"),
        ("5,25,50", "must be 100"),
    ]:
        with pytest.raises(InvalidInput) as info:
            parse_steps(bad)
        assert words in info.value.detail, bad


def test_buckets_are_sticky_spread_evenly_and_independent_between_rollouts():
    keys = [f"key_{i}" for i in range(4000)]
    assert [bucket(k, "r1") for k in keys[:50]] == [bucket(k, "r1") for k in keys[:50]]
    assert all(0 <= bucket(k, "r1") < 100 for k in keys)
    share = sum(arm_for(k, "r1", 25) == CANDIDATE for k in keys) / len(keys)
    assert 0.22 < share < 0.28
    # A key on the candidate at 25% stays there as the weight grows.
    assert all(arm_for(k, "r1", 50) == CANDIDATE for k in keys if arm_for(k, "r1", 25) == CANDIDATE)
    # Another rollout draws the keys afresh: the same 5% are not the guinea pigs every time.
    first = {k for k in keys if arm_for(k, "r1", 5) == CANDIDATE}
    second = {k for k in keys if arm_for(k, "r2", 5) == CANDIDATE}
    assert len(first & second) < len(first) / 3


def _arm(n: int, errors: int, latency_s: float, rng: random.Random) -> ArmStats:
    arm = ArmStats()
    for i in range(n):
        t = latency_s * rng.uniform(0.8, 1.2)
        arm.add(i >= errors, t / 4, t)
    return arm


def test_analysis_fails_a_candidate_with_more_errors_or_slower_and_passes_an_equal_one():
    rng = random.Random(7)
    criteria = Criteria(min_samples=40)
    stable = _arm(200, 2, 0.2, rng)
    passed, checks = analyse(_arm(40, 1, 0.2, rng), stable, criteria)
    assert passed and {c["name"]: c["passed"] for c in checks} == {
        "error_rate": True,
        "p95_first_token": True,
        "p95_total": True,
        "thumbs_down_rate": None,  # no ratings: skipped, not passed
    }
    passed, checks = analyse(_arm(40, 12, 0.2, rng), stable, criteria)
    errors = next(c for c in checks if c["name"] == "error_rate")
    assert not passed and errors["passed"] is False and errors["p_value"] < 0.05
    passed, checks = analyse(_arm(40, 0, 0.6, rng), stable, criteria)
    total = next(c for c in checks if c["name"] == "p95_total")
    assert not passed and total["passed"] is False and "Mann-Whitney" in total["detail"]
    # Thumbs-down rates, once both arms have enough ratings.
    passed, checks = analyse(_arm(40, 0, 0.2, rng), stable, criteria, ((9, 12), (2, 40)))
    assert not passed and checks[-1]["name"] == "thumbs_down_rate" and checks[-1]["passed"] is False


def test_without_a_stable_baseline_the_candidate_is_held_to_an_absolute_error_bound():
    rng = random.Random(3)
    criteria = Criteria(min_samples=20, max_error_rate=0.05)
    lone = ArmStats()
    assert ready_to_analyse(_arm(20, 0, 0.1, rng), lone, 100, criteria)
    assert not ready_to_analyse(_arm(20, 0, 0.1, rng), lone, 50, criteria)  # stable still has traffic
    assert not ready_to_analyse(_arm(19, 0, 0.1, rng), _arm(50, 0, 0.1, rng), 50, criteria)
    passed, checks = analyse(_arm(20, 0, 0.1, rng), lone, criteria)
    assert passed and checks[1]["passed"] is None  # latency: nothing to compare with
    passed, checks = analyse(_arm(20, 3, 0.1, rng), lone, criteria)
    assert not passed and "no stable baseline" in checks[0]["detail"]


def test_answer_similarity_and_citation_overlap():
    assert answer_similarity("Leave is 27 days [1].", "leave is 27 days [1]") == 1.0
    assert answer_similarity("", "") == 1.0
    near = answer_similarity("Employees get 27 days of leave", "Employees get 25 days of leave")
    far = answer_similarity("Employees get 27 days of leave", "The cafeteria opens at noon")
    assert 0.7 < near < 1.0 and far < 0.2
    assert citation_overlap("see [1] and [2, 3]", "see [2][3]") == pytest.approx(2 / 3, abs=1e-3)
    assert citation_overlap("no citations", "none here") is None
    assert citation_overlap("[1]", "no citation") == 0.0


def test_the_mirror_queue_is_bounded_drops_when_full_and_never_blocks():
    release = threading.Event()
    handled: list[int] = []

    def handle(item: int) -> None:
        release.wait(30)
        handled.append(item)

    mirror = ShadowMirror(handle, capacity=4)
    # Not started yet: nothing takes from the queue, so exactly `capacity` fit.
    accepted = [mirror.offer(i) for i in range(10)]
    assert accepted == [True] * 4 + [False] * 6
    snap = mirror.snapshot()
    assert (snap["offered"], snap["dropped"], snap["depth"], snap["max_depth"]) == (10, 6, 4, 4)
    mirror.start()
    release.set()
    assert mirror.drain(30)
    assert handled == [0, 1, 2, 3] and mirror.snapshot()["done"] == 4
    mirror.stop()
    assert mirror.offer(99) is False  # stopped: dropped, not raised
