"""Closed forms of queueing: Erlang C for M/M/c, its waiting-time tail, and a closed-loop approximation."""

from __future__ import annotations

import math


def erlang_c(servers: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with `offered` = lambda / mu Erlangs; 1 when the system is overloaded."""
    if offered >= servers:
        return 1.0
    # Erlang B by its stable recursion, then C from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1 - rho + rho * b)


def mmc_mean_wait(servers: int, arrival_rate: float, service_s: float) -> float:
    mu = 1 / service_s
    if arrival_rate >= servers * mu:
        return math.inf
    return erlang_c(servers, arrival_rate * service_s) / (servers * mu - arrival_rate)


def mmc_wait_quantile(servers: int, arrival_rate: float, service_s: float, q: float) -> float:
    """The q-quantile of the wait: P(W > t) = C * exp(-(c mu - lambda) t)."""
    mu = 1 / service_s
    if arrival_rate >= servers * mu:
        return math.inf
    c = erlang_c(servers, arrival_rate * service_s)
    tail = 1 - q
    if c <= tail:
        return 0.0
    return math.log(c / tail) / (servers * mu - arrival_rate)


def closed_loop(users: int, servers: int, service_s: float, think_s: float) -> tuple[float, float]:
    """(throughput/s, mean response s) of `users` users with think time, `servers` slots: the asymptotic
    bounds of operational analysis, joined (exact at the extremes, optimistic near the knee)."""
    throughput = min(users / (think_s + service_s), servers / service_s)
    return throughput, max(service_s, users / throughput - think_s)
