"""The model of serving: per-request prefill, per-token decode and resident memory of one model on one target.

On the CPU (llama.cpp) the reference model's measured times are split by the box's own roofline: the share
its memory bandwidth explains (decode reads every weight once per token) or its matrix FLOP/s explain
(prefill multiplies every weight by every prompt token), and the rest, overhead that grows with layers x width.
A target model scales each part by its own bytes, FLOPs, layers and width from its GGUF header. On a catalogue
GPU nothing is measured: datasheet bandwidth and FLOP/s times fixed efficiencies, marked uncalibrated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from appliance.plan_records import Calibration, SlotPoint
from appliance.planner.hardware import GPU_BANDWIDTH_EFFICIENCY, GPU_COMPUTE_EFFICIENCY, GpuSpec
from appliance.planner.shape import ModelShape

# The relative error (1 sigma) added per tenfold step from the calibrated model's size: the split of its time
# into bandwidth, compute and overhead is a model, and its error grows with the distance it is carried. An
# assumption (a 10x step measured 4-100% off per metric on a saturated 2-core box: scripts/bench/planner.py);
# validations refit a validated model's prefill and decode costs (planner/validation.py), not this spread.
TRANSFER_ERROR_PER_DECADE = 0.25
GPU_MEMORY_SHARE = 0.9  # vLLM's default --gpu-memory-utilization
GPU_WEIGHT_BYTES = 2  # vLLM serves the unquantised BF16 weights on a GPU target


@dataclass(frozen=True, slots=True)
class ServingConfig:
    model: str
    target: str = "cpu"  # "cpu" (this box, llama.cpp) or a catalogue GPU name (vLLM)
    slots: int = 1  # llama.cpp instances, or vLLM --max-num-seqs
    context: int = 4096  # per slot (the appliance gives each llama.cpp instance its own full context)
    threads: int = 0  # CPU only; 0: the calibration's

    @property
    def id(self) -> str:
        threads = f"-t{self.threads}" if self.target == "cpu" else ""
        return f"{self.model}@{self.target}-s{self.slots}-c{self.context}{threads}"


@dataclass(frozen=True, slots=True)
class Costs:
    """Times and memory of one model on one target; `active` is how many requests run at once."""

    config: ServingConfig
    shape: ModelShape
    calibrated: bool
    prefill_per_token: tuple[float, ...]  # seconds, index active-1 (1..slots)
    prefill_fixed_s: float
    decode_per_token: tuple[float, ...]
    memory_bytes: int
    memory_limit_bytes: int
    bandwidth_share: float  # of a decode step's time, the share memory bandwidth explains
    extrapolated: list[str] = field(default_factory=list)
    rel_error: float = 0.1  # relative spread of the calibration behind these numbers (1 sigma)

    def prefill_s(self, tokens: float, active: int) -> float:
        return (
            self.prefill_fixed_s
            + tokens * self.prefill_per_token[min(max(active, 1), len(self.prefill_per_token)) - 1]
        )

    def token_s(self, active: int) -> float:
        return self.decode_per_token[min(max(active, 1), len(self.decode_per_token)) - 1]


def _interpolate(points: list[SlotPoint], slots: int) -> tuple[list[tuple[float, float]], bool]:
    """(prefill s/token, decode s/token) of the reference at 1..slots active on a `slots`-slot server;
    True when `slots` lies beyond the calibrated ones (the last measured growth is carried on)."""
    by_slots: dict[int, dict[int, SlotPoint]] = {}
    for p in points:
        by_slots.setdefault(p.slots, {})[p.active] = p
    known = sorted(by_slots)
    below = [k for k in known if k <= slots]
    base = by_slots[below[-1] if below else known[0]]
    lo = base[min(base)]
    hi = base[max(base)]
    out = []
    span = max(1, max(base) - min(base))
    for active in range(1, slots + 1):
        f = (active - min(base)) / span
        pre = (1 / lo.prefill_tokens_per_s) + f * (1 / hi.prefill_tokens_per_s - 1 / lo.prefill_tokens_per_s)
        dec = (1 / lo.decode_tokens_per_s) + f * (1 / hi.decode_tokens_per_s - 1 / lo.decode_tokens_per_s)
        out.append((max(pre, 1e-6), max(dec, 1e-6)))
    return out, slots > known[-1]


def _split(
    measured: float, roofline: float, ref_units: float, target_units: float, target_roof: float
) -> float:
    """A target's time: the roofline part of the reference's measured time scaled to the target's roofline,
    the rest scaled by layers x width."""
    roof = min(roofline, measured)
    return target_roof * (roof / roofline if roofline else 1.0) + (measured - roof) * target_units / ref_units


def cpu_costs(cal: Calibration, ref: ModelShape, shape: ModelShape, config: ServingConfig) -> Costs:
    threads = config.threads or cal.threads
    ref_points, beyond = _interpolate(cal.points, config.slots)
    reasons = []
    if beyond:
        reasons.append(f"{config.slots} slots: calibrated up to {max(p.slots for p in cal.points)}")
    if shape.file_bytes != ref.file_bytes:
        ratio = shape.decode_bytes / ref.decode_bytes
        if not 0.5 <= ratio <= 2:
            reasons.append(f"model {ratio:.1f}x the calibrated model's size (scaled by its GGUF header)")
    if threads != cal.threads:
        reasons.append(f"{threads} threads: calibrated with {cal.threads}")
    ref_units, units = ref.layers * ref.embedding, shape.layers * shape.embedding
    # More threads than calibrated speed the compute-bound part up, never past the cores.
    speed = min(threads, cal.hardware.get("cores", threads)) / max(
        1, min(cal.threads, cal.hardware.get("cores", 1))
    )
    bw, flops = cal.memory_bandwidth, cal.matmul_flops
    prefill, decode, shares = [], [], []
    for active, (pre, dec) in enumerate(ref_points, start=1):
        pre_roof_ref = 2 * ref.matmul_parameters / flops
        pre_roof = 2 * shape.matmul_parameters / flops
        prefill.append(_split(pre, pre_roof_ref, ref_units, units, pre_roof) / speed)
        # `active` streams share the bandwidth: each step of each reads the weights once.
        dec_roof_ref = active * ref.decode_bytes / bw
        dec_roof = active * shape.decode_bytes / bw
        t = _split(dec, dec_roof_ref, ref_units, units, dec_roof)
        decode.append(t if speed == 1 else dec_roof + (t - dec_roof) / speed)
        shares.append(min(1.0, dec_roof / t))
    # One instance per slot: the file mapped (counted in each resident set), the repacked weights, the KV
    # cache of its own full context, and compute buffers (the reference's remainder, scaled by width).
    ref_fixed = ref.file_bytes + ref.repacked_bytes + cal.context_length * ref.kv_bytes_per_token()
    buffers = max(0, cal.resident_per_slot_bytes - ref_fixed) * shape.embedding / ref.embedding
    instance = shape.file_bytes + shape.repacked_bytes + config.context * shape.kv_bytes_per_token() + buffers
    memory = int(cal.resident_weights_bytes + config.slots * instance)
    if config.context > shape.context_length:
        reasons.append(f"context {config.context} beyond the model's trained {shape.context_length}")
    return Costs(
        config=config,
        shape=shape,
        calibrated=True,
        prefill_per_token=tuple(prefill),
        prefill_fixed_s=cal.points[0].prefill_fixed_s,
        decode_per_token=tuple(decode),
        memory_bytes=memory,
        memory_limit_bytes=int(cal.hardware.get("memory_bytes", 0)),
        bandwidth_share=shares[-1],
        extrapolated=reasons,
        rel_error=math.hypot(
            max(0.05, cal.residual_cv),
            TRANSFER_ERROR_PER_DECADE * abs(math.log10(shape.decode_bytes / ref.decode_bytes)),
        ),
    )


def gpu_costs(gpu: GpuSpec, shape: ModelShape, config: ServingConfig) -> Costs:
    bw = gpu.bandwidth * GPU_BANDWIDTH_EFFICIENCY
    flops = gpu.flops * GPU_COMPUTE_EFFICIENCY
    weights = shape.parameters * GPU_WEIGHT_BYTES
    kv_token = shape.kv_bytes_per_token()
    prefill, decode, share = [], [], 1.0
    for active in range(1, config.slots + 1):
        # One decode step reads the weights once for the whole batch and each sequence's KV cache (half full
        # on average); its matrix work grows with the batch.
        step_bytes = weights + active * (config.context / 2) * kv_token
        step = max(step_bytes / bw, active * 2 * shape.matmul_parameters / flops)
        decode.append(step)
        share = step_bytes / bw / step
        prefill.append(2 * shape.matmul_parameters / flops)
    memory = int(weights + config.slots * config.context * kv_token)
    return Costs(
        config=config,
        shape=shape,
        calibrated=False,
        prefill_per_token=tuple(prefill),
        prefill_fixed_s=0.0,
        decode_per_token=tuple(decode),
        memory_bytes=memory,
        memory_limit_bytes=int(gpu.memory_bytes * GPU_MEMORY_SHARE),
        bandwidth_share=share,
        extrapolated=[f"{gpu.name}: datasheet figures, not calibrated on this box"],
        rel_error=0.25,
    )
