"""The sweep: every candidate configuration (models x context x slots x threads on this box, and on each
catalogue GPU), estimated in closed form, filtered by the intent's limits and ranked by its priority."""

from __future__ import annotations

import math
from collections.abc import Callable

from appliance.plan_records import DeploymentIntent
from appliance.planner.hardware import GPU_CATALOGUE
from appliance.planner.predict import Workload, analytic, binding_constraint, kv_budget, monthly_cost
from appliance.planner.serving import Costs, ServingConfig
from appliance.planner.shape import ModelShape

CONTEXTS = (2048, 4096, 8192, 16384)
CPU_SLOTS = (1, 2, 3, 4, 6, 8)
GPU_SEQS = (8, 16, 32, 64, 128, 256)
PRIORITIES = ("latency", "cost", "accuracy")


def candidates(shapes: dict[str, ModelShape], cores: int, gpus: bool = True) -> list[ServingConfig]:
    out = []
    for model, shape in sorted(shapes.items()):
        contexts = [c for c in CONTEXTS if c <= shape.context_length] or [shape.context_length]
        for context in contexts:
            for slots in CPU_SLOTS:
                for threads in range(1, cores + 1):
                    out.append(ServingConfig(model, "cpu", slots, context, threads))
            if gpus:
                for gpu in GPU_CATALOGUE:
                    for seqs in GPU_SEQS:
                        out.append(ServingConfig(model, gpu.name, seqs, context))
    return out


def _violations(intent: DeploymentIntent, est: dict, costs: Costs, cost: float, work: Workload) -> list[str]:
    why = []
    if costs.memory_limit_bytes and costs.memory_bytes > costs.memory_limit_bytes:
        why.append("does not fit in memory")
    if intent.memory_bytes is not None and costs.memory_bytes > intent.memory_bytes:
        why.append(
            f"needs {costs.memory_bytes / 2**30:.1f} GiB, over the {intent.memory_bytes / 2**30:.1f} GiB limit"
        )
    if costs.config.context < work.prompt_tokens + work.output_tokens:
        why.append(
            f"context {costs.config.context} < prompt + output ({work.prompt_tokens + work.output_tokens})"
        )
    if intent.p95_ttft_ms is not None and not est["ttft_p95_ms"] <= intent.p95_ttft_ms:
        why.append(f"p95 TTFT {est['ttft_p95_ms']:.0f} ms > {intent.p95_ttft_ms:.0f} ms")
    if (
        intent.tokens_per_s_per_user is not None
        and est["tokens_per_s_per_user"] < intent.tokens_per_s_per_user
    ):
        why.append(f"{est['tokens_per_s_per_user']:.1f} tokens/s per user < {intent.tokens_per_s_per_user}")
    if intent.budget_usd_month is not None and cost > intent.budget_usd_month:
        why.append(f"${cost:.0f}/month > budget ${intent.budget_usd_month:.0f}")
    if work.rate is not None and est["utilisation"] >= 0.98:
        why.append("cannot keep up with the load")  # (a closed loop always keeps up: its users wait)
    return why


def sweep(
    intent: DeploymentIntent,
    work: Workload,
    shapes: dict[str, ModelShape],
    costs_for: Callable[[ServingConfig], Costs],
    cores: int,
    gpus: bool = True,
) -> list[dict]:
    """Every candidate with its estimate, feasible ones first in the priority's order; ties by id (stable)."""
    if intent.priority not in PRIORITIES:
        raise ValueError(f"priority {intent.priority!r}: one of {', '.join(PRIORITIES)}")
    rows = []
    for config in candidates(shapes, cores, gpus):
        costs = costs_for(config)
        est = analytic(costs, work)
        cost = monthly_cost(costs, intent, est["utilisation"])
        why = _violations(intent, est, costs, cost, work)
        rows.append(
            {
                "id": config.id,
                "model": config.model,
                "target": config.target,
                "slots": config.slots,
                "context": config.context,
                "threads": config.threads,
                "calibrated": costs.calibrated,
                "extrapolated": bool(costs.extrapolated),
                "ttft_p95_ms": round(est["ttft_p95_ms"], 1) if math.isfinite(est["ttft_p95_ms"]) else None,
                "e2e_p95_ms": round(est["e2e_p95_ms"], 1) if math.isfinite(est["e2e_p95_ms"]) else None,
                "tokens_per_s_per_user": round(est["tokens_per_s_per_user"], 2),
                "throughput_rps": round(est["throughput_rps"], 3),
                "utilisation": round(est["utilisation"], 3),
                "memory_bytes": costs.memory_bytes,
                "cost_usd_month": cost,
                "binding_constraint": binding_constraint(costs, est),
                "kv_budget": kv_budget(costs),
                "feasible": not why,
                "reason": "; ".join(why) if why else "meets every constraint",
                "_quality": shapes[config.model].parameters,
            }
        )

    def key(row: dict) -> tuple:
        latency = row["e2e_p95_ms"] if row["e2e_p95_ms"] is not None else math.inf
        if intent.priority == "cost":
            order: tuple = (row["cost_usd_month"], latency)
        elif intent.priority == "accuracy":
            order = (-row["_quality"], row["cost_usd_month"], latency)
        else:
            order = (latency, row["cost_usd_month"])
        return (not row["feasible"], *order, row["id"])

    rows.sort(key=key)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        del row["_quality"]
    return rows
