"""Calibration on the box: memory bandwidth, matrix FLOP/s, and a reference model's prefill and decode rates
at 1..N concurrent slots through the appliance's own llama.cpp runtime, with its resident memory."""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from appliance.plan_records import Calibration, SlotPoint
from appliance.planner.hardware import available_cores, matmul_flops, memory_bandwidth, this_box
from appliance.planner.shape import read_shape

Progress = Callable[[str], None]  # may raise to stop the calibration between measurements
_WORDS = (
    "river stone lantern orbit copper meadow signal harbor velvet canyon ember quartz violet tundra "
    "falcon garden mirror thunder pebble saddle beacon willow marble cipher glacier anchor"
).split()


@dataclass(frozen=True, slots=True)
class Plan:
    """How much to measure: --quick for tests (seconds), the default within about 5 minutes."""

    max_slots: int
    prompt_tokens: int
    output_tokens: int
    repeats: int
    context: int

    @classmethod
    def for_box(cls, quick: bool) -> Plan:
        if quick:
            return cls(max_slots=2, prompt_tokens=48, output_tokens=8, repeats=1, context=256)
        return cls(
            max_slots=min(4, max(2, available_cores())),
            prompt_tokens=256,
            output_tokens=48,
            repeats=3,
            context=2048,
        )


def resident_bytes() -> int:
    """This process's resident set (Linux /proc), 0 elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _prompt(runtime, tokens: int, seed: int) -> str:
    """A prompt of about `tokens` tokens that shares no prefix with another seed's (no KV-cache reuse)."""
    rng = np.random.default_rng(seed)
    words = [f"[{seed}]"] + list(rng.choice(_WORDS, size=tokens))
    text = " ".join(words)
    # Never below the tag and one word: halving the excess at once could cut every word (the tag of
    # a seed from the clock is ten digits, more tokens than a short plan's whole budget).
    while len(ids := runtime.prompt_tokens(text)) > tokens and len(words) > 2:
        words = words[: -min(max(1, (len(ids) - tokens) // 2), len(words) - 2)]
        text = " ".join(words)
    return text


def _measure(runtime, plan: Plan, active: int, seed: int) -> list:
    from appliance.models.runtime import GenerationParams

    params = GenerationParams(max_tokens=plan.output_tokens, temperature=0.0, stop=())
    prompts = [_prompt(runtime, plan.prompt_tokens, seed + i) for i in range(active)]
    results: list = [None] * active
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            results[i] = runtime.generate(prompts[i], params)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            errors.append(exc)

    workers = [threading.Thread(target=go, args=(i,)) for i in range(active)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return results


def _cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0


def _point(slots: int, active: int, completions: list, fixed_s: float) -> SlotPoint:
    """Medians: on a shared machine a stalled request is the neighbours' doing, not the model's."""
    # The fixed part is a fit over noisy samples: it never explains more than half of a measured TTFT.
    prefill = [
        max(
            c.time_to_first_token_s - c.queued_s - fixed_s, 0.5 * (c.time_to_first_token_s - c.queued_s), 1e-6
        )
        for c in completions
    ]
    pre = [c.prompt_tokens / t for c, t in zip(completions, prefill, strict=True)]
    dec = [
        (c.completion_tokens - 1) / max(c.total_s - c.time_to_first_token_s, 1e-6)
        for c in completions
        if c.completion_tokens > 1
    ]
    ttft = [c.time_to_first_token_s for c in completions]
    return SlotPoint(
        slots=slots,
        active=active,
        samples=len(completions),
        prefill_tokens_per_s=round(statistics.median(pre), 3),
        prefill_fixed_s=round(fixed_s, 4),
        decode_tokens_per_s=round(statistics.median(dec), 3) if dec else 0.0,
        ttft_s=round(statistics.median(ttft), 4),
        decode_cv=round(_cv(dec), 4),
        ttft_cv=round(_cv(ttft), 4),
    )


def _fixed_prefill(runtime, plan: Plan, seed: int) -> float:
    """The per-request time a prompt's length does not explain: TTFT of a short and a long prompt, alone."""
    short = dataclasses.replace(plan, prompt_tokens=max(4, plan.prompt_tokens // 8))
    t_short = statistics.median(c.time_to_first_token_s for c in _repeat(runtime, short, seed))
    longs = _repeat(runtime, plan, seed + 100)
    t_long = statistics.median(c.time_to_first_token_s for c in longs)
    n_short, n_long = short.prompt_tokens, statistics.median(c.prompt_tokens for c in longs)
    slope = max(0.0, (t_long - t_short) / max(1, n_long - n_short))
    return min(max(0.0, t_short - slope * n_short), 0.5 * t_short)


def _repeat(runtime, plan: Plan, seed: int) -> list:
    return [c for r in range(plan.repeats) for c in _measure(runtime, plan, 1, seed + 10 * r)]


def calibrate(
    model_path: Path,
    model_name: str,
    threads: int,
    batch_threads: int,
    quick: bool = False,
    overheads: dict[str, Callable[[], object]] | None = None,
    progress: Progress = lambda _: None,
) -> Calibration:
    """Measure this box with `model_path` as the reference model (blocking; minutes at full size)."""
    from appliance.models.llamacpp import LlamaCppRuntime

    started = time.monotonic()
    plan = Plan.for_box(quick)
    box = this_box()
    shape = read_shape(model_path, model_name)
    progress("memory bandwidth and matrix FLOP/s")
    # With the decode threads: one core cannot draw the bandwidth of all of them, and decode runs on `threads`.
    bandwidth = memory_bandwidth(threads, megabytes=64 if quick else 256, repeats=3 if quick else 5)
    flops = matmul_flops(512 if quick else 1024, repeats=3 if quick else 5)
    measured_ms = {}
    for name, call in (overheads or {}).items():
        samples = []
        for _ in range(3 if quick else 10):
            t = time.perf_counter()
            call()
            samples.append((time.perf_counter() - t) * 1000)
        measured_ms[name] = round(statistics.median(samples), 3)
    points: list[SlotPoint] = []
    base = resident_bytes()
    weights = per_slot = 0
    seed = int(time.time())
    for slots in range(1, plan.max_slots + 1):
        progress(f"{model_name}: {slots} slot(s)")
        runtime = LlamaCppRuntime(
            model_path,
            model_name,
            context_length=plan.context,
            threads=threads,
            slots=slots,
            batch_threads=batch_threads,
        )
        try:
            _measure(runtime, plan, slots, seed)  # warms every instance (and pages the weights in)
            seed += slots
            rss = resident_bytes() - base
            if slots == 1:
                one = rss
            elif slots == plan.max_slots:
                per_slot = max(0, (rss - one) // (slots - 1))
            if slots == 1:
                fixed = _fixed_prefill(runtime, plan, seed + 1000)
            for active in sorted({1, slots}):
                progress(f"{model_name}: {active} of {slots} slot(s) busy")
                completions = []
                for _ in range(plan.repeats):
                    completions += _measure(runtime, plan, active, seed)
                    seed += active
                points.append(_point(slots, active, completions, fixed))
        finally:
            runtime.close()
    # Each slot is a llama.cpp instance with its own mapping of the file, repacked weights, KV cache and
    # compute buffers; what one slot adds beyond that is the runtime's own (the vocabulary instance).
    weights = max(0, one - per_slot)
    spreads = [max(p.decode_cv, p.ttft_cv) for p in points if p.samples > 1]
    return Calibration(
        id=uuid.uuid4().hex[:12],
        created_at=datetime.now(UTC).isoformat(),
        fingerprint=box.fingerprint,
        hardware={"cpu_model": box.cpu_model, "cores": box.cores, "memory_bytes": box.memory_bytes},
        quick=quick,
        model=model_name,
        model_shape=shape.to_dict(),
        threads=threads,
        batch_threads=batch_threads,
        context_length=plan.context,
        prompt_tokens=plan.prompt_tokens,
        output_tokens=plan.output_tokens,
        memory_bandwidth=round(bandwidth),
        matmul_flops=round(flops),
        points=points,
        resident_base_bytes=base,
        resident_weights_bytes=int(weights),
        resident_per_slot_bytes=int(per_slot),
        overheads_ms=measured_ms,
        residual_cv=round(statistics.fmean(spreads), 4) if spreads else 0.1,
        seconds=round(time.monotonic() - started, 1),
    )
