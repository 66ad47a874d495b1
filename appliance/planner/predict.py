"""One prediction: a model, a target and a load, through the cost model and the simulation, with the verdict
on what binds it (bandwidth, compute, queueing or memory) and the monthly cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from appliance.errors import InvalidInput
from appliance.plan_records import DeploymentIntent
from appliance.planner.hardware import GPU_CATALOGUE, HOURS_PER_MONTH
from appliance.planner.queueing import closed_loop, mmc_wait_quantile
from appliance.planner.serving import Costs
from appliance.planner.simulate import Load, simulate

GIB = 2**30
# The request shape of each task when the intent does not say (prompt, output tokens); RAG adds its context.
TASK_SHAPES = {"chat": (300, 200), "rag": (100, 200), "summarisation": (2000, 200), "code": (500, 300)}
RAG_CONTEXT_TOKENS = 1200  # six chunks of about 200 tokens: answer.top_k at the default chunk size


@dataclass(frozen=True, slots=True)
class Workload:
    prompt_tokens: int  # what the model reads, RAG context included
    output_tokens: int
    rate: float | None
    users: int | None
    think_s: float
    overhead_s: float
    assumed: tuple[str, ...] = ()

    def load(self, max_queue: int | None = None) -> Load:
        return Load(
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
            rate=self.rate,
            users=self.users,
            think_s=self.think_s,
            overhead_s=self.overhead_s,
            max_queue=max_queue,
        )


def workload(intent: DeploymentIntent, overheads_ms: dict[str, float]) -> Workload:
    if intent.task not in TASK_SHAPES:
        raise InvalidInput(f"task {intent.task!r}: one of {', '.join(TASK_SHAPES)}", param="task")
    if (intent.rate is None) == (intent.users is None):
        raise InvalidInput("give the load as a rate (requests/s) or a number of users, one of them")
    if (intent.rate is not None and intent.rate <= 0) or (intent.users is not None and intent.users < 1):
        raise InvalidInput("the rate must be above 0 and users at least 1")
    assumed = []
    prompt, output = intent.prompt_tokens, intent.output_tokens
    if prompt is None:
        prompt = TASK_SHAPES[intent.task][0]
        assumed.append(f"prompt_tokens={prompt} (the {intent.task} default)")
    if output is None:
        output = TASK_SHAPES[intent.task][1]
        assumed.append(f"output_tokens={output} (the {intent.task} default)")
    if prompt < 1 or output < 1:
        raise InvalidInput("prompt and output tokens must be at least 1")
    overhead_ms = overheads_ms.get("http", 1.0)
    if intent.task == "rag":
        prompt += RAG_CONTEXT_TOKENS
        assumed.append(f"{RAG_CONTEXT_TOKENS} tokens of retrieved context added to the prompt")
        overhead_ms += overheads_ms.get("embed_query", 15.0) + overheads_ms.get("retrieval", 10.0)
    return Workload(
        prompt, output, intent.rate, intent.users, intent.think_s, overhead_ms / 1000, tuple(assumed)
    )


def analytic(costs: Costs, work: Workload) -> dict:
    """The closed-form estimate the sweep ranks by (Erlang C on the full-load service time)."""
    k = costs.config.slots
    service = costs.prefill_s(work.prompt_tokens, k) + (work.output_tokens - 1) * costs.token_s(k)
    if work.rate is not None:
        rate = work.rate
    else:
        rate, _ = closed_loop(work.users or 1, k, service, work.think_s)
        rate = min(rate, 0.98 * k / service)  # a closed loop never overloads: it waits
    util = rate * service / k
    wait95 = mmc_wait_quantile(k, rate, service, 0.95)
    if work.users is not None:
        # A closed loop cannot queue more than its users: at worst each waits for the others ahead of it.
        wait95 = min(wait95, max(0, work.users - k) / k * service)
    active = max(1, min(k, math.ceil(rate * service)))
    return {
        "ttft_p95_ms": (work.overhead_s + wait95 + costs.prefill_s(work.prompt_tokens, active)) * 1000,
        "e2e_p95_ms": (work.overhead_s + wait95 + service) * 1000,
        "tokens_per_s_per_user": 1 / costs.token_s(active),
        "throughput_rps": min(rate, k / service),
        "utilisation": min(1.0, util),
        "service_s": service,
        "prefill_share": costs.prefill_s(work.prompt_tokens, k) / service,
        "users": work.users,
    }


def kv_budget(costs: Costs) -> str:
    """How many slots of this context the memory allows: the sentence the table shows."""
    per_slot = costs.memory_bytes / costs.config.slots
    fits = int(costs.memory_limit_bytes // per_slot) if per_slot else 0
    return f"KV budget allows {fits} slots x {costs.config.context // 1024}k"


def binding_constraint(costs: Costs, estimate: dict) -> str:
    if costs.memory_limit_bytes and costs.memory_bytes > costs.memory_limit_bytes:
        return (
            f"memory: needs {costs.memory_bytes / GIB:.1f} GiB of {costs.memory_limit_bytes / GIB:.1f}; "
            + kv_budget(costs)
        )
    # A closed loop with a slot for every user keeps the slots busy without anyone queueing.
    queues = estimate.get("users") is None or estimate["users"] > costs.config.slots
    if estimate["utilisation"] >= 0.7 and queues:
        return f"queueing at utilisation {estimate['utilisation']:.2f}"
    if estimate["prefill_share"] > 0.5:
        return "prefill-compute-bound"
    if costs.bandwidth_share >= 0.5:
        return "decode-bandwidth-bound"
    if costs.config.target != "cpu":
        return "decode-compute-bound"
    return "decode-overhead-bound (per-layer work, not bandwidth)"


def monthly_cost(costs: Costs, intent: DeploymentIntent, utilisation: float) -> float:
    target = costs.config.target
    if target == "cpu":
        energy_kwh = intent.box_watts * (0.5 + 0.5 * utilisation) * HOURS_PER_MONTH / 1000
        return round(intent.box_usd_month + energy_kwh * intent.energy_usd_per_kwh, 2)
    gpu = next(g for g in GPU_CATALOGUE if g.name == target)
    return round(gpu.usd_per_hour * HOURS_PER_MONTH, 2)  # a cloud price includes its energy


def predict(
    costs: Costs,
    work: Workload,
    requests: int = 600,
    replications: int = 5,
    seed: int = 0,
    max_queue: int | None = None,
) -> dict:
    sim = simulate(costs, work.load(max_queue), requests=requests, replications=replications, seed=seed)
    estimate = analytic(costs, work)
    estimate["utilisation"] = sim["utilisation"]
    return {
        "config": {
            "id": costs.config.id,
            "model": costs.config.model,
            "target": costs.config.target,
            "slots": costs.config.slots,
            "context": costs.config.context,
            "threads": costs.config.threads,
        },
        **sim,
        "memory_bytes": costs.memory_bytes,
        "memory_limit_bytes": costs.memory_limit_bytes,
        "kv_budget": kv_budget(costs),
        "binding_constraint": binding_constraint(costs, estimate),
        "single_stream_tokens_per_s": round(1 / costs.token_s(1), 2),
        "prompt_tokens": work.prompt_tokens,
        "output_tokens": work.output_tokens,
        "assumed": list(work.assumed),
        "calibrated": costs.calibrated,
        "extrapolated": bool(costs.extrapolated),
        "extrapolation": list(costs.extrapolated),
    }
