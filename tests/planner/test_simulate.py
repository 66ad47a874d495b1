"""The simulation against closed-form M/M/c (Erlang C) where its assumptions hold."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.planner.queueing import erlang_c, mmc_mean_wait, mmc_wait_quantile
from appliance.planner.serving import Costs, ServingConfig
from appliance.planner.simulate import Load, run_once, simulate
from tests.planner.models import smollm2


def constant_costs(slots: int, service_s: float, tokens: int = 100) -> Costs:
    """A server whose rate does not change with concurrency: service = tokens x per-token time."""
    return Costs(
        config=ServingConfig("m", slots=slots),
        shape=smollm2(),
        calibrated=True,
        prefill_per_token=(0.0,) * slots,
        prefill_fixed_s=0.0,
        decode_per_token=(service_s / tokens,) * slots,
        memory_bytes=0,
        memory_limit_bytes=0,
        bandwidth_share=1.0,
        rel_error=0.0,
    )


def test_erlang_c_known_values():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(2, 2.5) == 1.0
    assert mmc_mean_wait(1, 0.5, 1.0) == pytest.approx(1.0)  # rho / (mu - lambda)


@pytest.mark.parametrize(("servers", "rate"), [(1, 0.6), (3, 2.1)])
def test_simulation_matches_mmc(servers, rate):
    costs = constant_costs(servers, 1.0)
    load = Load(prompt_tokens=1, output_tokens=100, rate=rate, exponential_output=True, decode_steps=1)
    waits = np.concatenate([run_once(costs, load, 8000, seed).wait for seed in range(3)])
    assert waits.mean() == pytest.approx(mmc_mean_wait(servers, rate, 1.0), rel=0.1)
    assert (waits > 0).mean() == pytest.approx(erlang_c(servers, rate), abs=0.03)
    assert np.percentile(waits, 95) == pytest.approx(mmc_wait_quantile(servers, rate, 1.0, 0.95), rel=0.12)


def test_summary_has_percentiles_intervals_and_utilisation():
    costs = constant_costs(2, 0.5)
    out = simulate(costs, Load(prompt_tokens=10, output_tokens=100, users=4), requests=200, replications=3)
    for metric in ("ttft_ms", "e2e_ms", "itl_ms"):
        m = out[metric]
        assert m["p50"] <= m["p95"] <= m["p99"]
        lo, hi = m["interval"]
        assert lo <= m["p95"] <= hi
    # Four users with no think time keep both slots busy; each request takes 0.5 s.
    assert out["utilisation"] == pytest.approx(1.0, abs=0.02)
    assert out["throughput_rps"] == pytest.approx(4.0, rel=0.05)
    assert out["e2e_ms"]["p50"] == pytest.approx(1000, rel=0.05)  # half the time queued behind the other user
