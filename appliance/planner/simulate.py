"""A discrete-event simulation (SimPy) of requests through the server's slots: queueing, prefill and decode
at the concurrency of the moment, P50/P95/P99 with 90% intervals from independent replications."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from appliance.planner.serving import Costs

PERCENTILES = (50, 95, 99)
CHUNKS = 16  # a request's decode advances in this many steps, each at the concurrency of its start


@dataclass(frozen=True, slots=True)
class Load:
    """Open loop at `rate` requests/s (Poisson), or closed loop of `users` with exponential think time."""

    prompt_tokens: int
    output_tokens: int
    rate: float | None = None
    users: int | None = None
    think_s: float = 0.0
    overhead_s: float = 0.0  # per request outside a slot: HTTP, embedding, retrieval
    exponential_output: bool = False  # output lengths exponential with the given mean (M/M/c checks)
    max_queue: int | None = None  # requests waiting beyond this are refused (429)
    decode_steps: int = CHUNKS  # 1 where the decode rate cannot change with concurrency

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.users is None):
            raise ValueError("a load is a rate or a number of users")


@dataclass(frozen=True, slots=True)
class Run:
    ttft: np.ndarray
    itl: np.ndarray
    e2e: np.ndarray
    wait: np.ndarray
    completed: int
    refused: int
    duration_s: float
    busy_slot_s: float
    slots: int


def run_once(costs: Costs, load: Load, requests: int, seed: int) -> Run:
    import simpy

    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    slots = simpy.Resource(env, capacity=costs.config.slots)
    active = [0]
    busy = [0.0]
    out: dict[str, list[float]] = {"ttft": [], "itl": [], "e2e": [], "wait": []}
    refused = [0]
    started = [0]
    done = [0]
    warmup = requests // 10

    def one(index: int):
        t0 = env.now
        if load.overhead_s:
            yield env.timeout(load.overhead_s)
        if load.max_queue is not None and len(slots.queue) >= load.max_queue:
            refused[0] += 1
            return
        tokens = rng.exponential(load.output_tokens) if load.exponential_output else float(load.output_tokens)
        with slots.request() as req:
            yield req
            queued = env.now - t0
            active[0] += 1
            begin = env.now
            yield env.timeout(costs.prefill_s(load.prompt_tokens, active[0]))
            first = env.now
            left = max(0.0, tokens - (0 if load.exponential_output else 1))
            step = left / load.decode_steps
            while left > 1e-9:
                n = min(step, left)
                yield env.timeout(n * costs.token_s(active[0]))
                left -= n
            active[0] -= 1
            busy[0] += env.now - begin
        done[0] += 1
        if index >= warmup:
            out["ttft"].append(first - t0)
            out["wait"].append(queued)
            out["e2e"].append(env.now - t0)
            if tokens > 1:
                out["itl"].append((env.now - first) / max(1.0, tokens - 1))

    def open_loop():
        for i in range(requests):
            started[0] += 1
            env.process(one(i))
            yield env.timeout(rng.exponential(1 / load.rate))

    def user(u: int):
        while started[0] < requests:
            i = started[0]
            started[0] += 1
            yield env.process(one(i))
            if load.think_s:
                yield env.timeout(rng.exponential(load.think_s))

    if load.rate is not None:
        env.process(open_loop())
    else:
        for u in range(load.users or 0):
            env.process(user(u))
    env.run()
    arr = {k: np.asarray(v) for k, v in out.items()}
    return Run(
        ttft=arr["ttft"],
        itl=arr["itl"],
        e2e=arr["e2e"],
        wait=arr["wait"],
        completed=done[0],
        refused=refused[0],
        duration_s=env.now,
        busy_slot_s=busy[0],
        slots=costs.config.slots,
    )


def _interval(values: list[float], rel_error: float) -> list[float]:
    """A 90% interval of a replicated estimate: Student's t over the replications, widened by the
    calibration's own relative error (independent, so the variances add)."""
    from scipy import stats

    arr = np.asarray([v for v in values if math.isfinite(v)])
    if len(arr) == 0:
        return [math.nan, math.nan]
    mean = float(arr.mean())
    half_rep = (
        float(stats.t.ppf(0.95, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
        if len(arr) > 1
        else 0.0
    )
    half_cal = 1.645 * rel_error * mean
    half = math.hypot(half_rep, half_cal)
    return [max(0.0, mean - half), mean + half]


def _summary(runs: list[np.ndarray], rel_error: float, scale: float = 1000.0) -> dict:
    summary: dict = {}
    per = {p: [float(np.percentile(r, p)) * scale for r in runs if len(r)] for p in PERCENTILES}
    for p in PERCENTILES:
        summary[f"p{p}"] = round(float(np.mean(per[p])), 2) if per[p] else None
    summary["mean"] = round(float(np.mean([r.mean() * scale for r in runs if len(r)])), 2) if runs else None
    summary["interval"] = [round(x, 2) for x in _interval(per[95], rel_error)] if per[95] else None
    return summary


def simulate(costs: Costs, load: Load, requests: int = 1000, replications: int = 5, seed: int = 0) -> dict:
    """Percentiles of TTFT, inter-token and end-to-end latency (ms; `interval` is the p95's 90% interval),
    throughput and slot utilisation, over `replications` independent runs."""
    runs = [run_once(costs, load, requests, seed + r) for r in range(replications)]
    rel = costs.rel_error
    throughput = [r.completed / r.duration_s for r in runs]
    util = [min(1.0, r.busy_slot_s / (r.duration_s * r.slots)) for r in runs]
    tps_user = [float(np.mean(1 / r.itl)) for r in runs if len(r.itl)]
    return {
        "ttft_ms": _summary([r.ttft for r in runs], rel),
        "itl_ms": _summary([r.itl for r in runs], rel),
        "e2e_ms": _summary([r.e2e for r in runs], rel),
        "queue_wait_ms": _summary([r.wait for r in runs], rel),
        "tokens_per_s_per_user": round(float(np.mean(tps_user)), 2) if tps_user else None,
        "tokens_per_s_per_user_interval": [round(x, 2) for x in _interval(tps_user, rel)]
        if tps_user
        else None,
        "throughput_rps": round(float(np.mean(throughput)), 4),
        "throughput_rps_interval": [round(x, 4) for x in _interval(throughput, rel)],
        "utilisation": round(float(np.mean(util)), 3),
        "refused": int(sum(r.refused for r in runs)),
        "requests": requests,
        "replications": replications,
    }
