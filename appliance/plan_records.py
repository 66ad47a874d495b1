"""The capacity planner's records: a calibration of the box with its slot points, and a deployment intent."""

from __future__ import annotations

from typing import Any

from appliance.records import Record


class SlotPoint(Record, kw_only=True):
    """One calibration measurement: `active` concurrent requests on a server of `slots` slots."""

    slots: int
    active: int
    samples: int
    prefill_tokens_per_s: float  # per request: prompt tokens / (time to first token - the fixed part)
    prefill_fixed_s: float  # per request whatever its prompt (fit from a short and a long prompt)
    decode_tokens_per_s: float  # per request, after the first token
    ttft_s: float  # mean
    decode_cv: float  # spread of the per-request decode rates (std / mean)
    ttft_cv: float


class Calibration(Record, kw_only=True):
    """What `appliance plan calibrate` measured on this box, with its hardware fingerprint."""

    id: str
    created_at: str
    fingerprint: str
    hardware: dict[str, Any]
    quick: bool
    model: str
    model_shape: dict[str, Any]
    threads: int
    batch_threads: int
    context_length: int
    prompt_tokens: int
    output_tokens: int
    memory_bandwidth: float  # bytes/s, parallel numpy copy
    matmul_flops: float  # FLOP/s, float32 BLAS
    points: list[SlotPoint]
    resident_base_bytes: int  # the process before the model loaded
    resident_weights_bytes: int  # what the runtime holds once whatever its slots (the vocabulary instance)
    resident_per_slot_bytes: int  # each slot's llama.cpp instance: mapped file, repacked weights, KV, buffers
    overheads_ms: dict[str, float]  # the server's own per-request work: embed_query, retrieval, http
    residual_cv: float  # the relative spread of repeated measurements: the interval's calibration part
    seconds: float


class DeploymentIntent(Record, kw_only=True):
    """What a deployment must serve: the task, the load, the request shape, the priority and the limits.
    Every number not given stays None and is filled from the task's defaults, said so in `assumed`."""

    task: str = "chat"  # chat | rag | summarisation | code
    users: int | None = None  # concurrent users (closed loop, think_s between requests)
    rate: float | None = None  # or requests per second (open loop)
    think_s: float = 0.0
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    priority: str = "latency"  # latency | cost | accuracy
    p95_ttft_ms: float | None = None
    tokens_per_s_per_user: float | None = None
    budget_usd_month: float | None = None
    memory_bytes: int | None = None
    energy_usd_per_kwh: float = 0.15
    box_usd_month: float = 100.0  # this server's amortisation
    box_watts: float = 150.0


class ServingState(Record, kw_only=True):
    """What `plan apply` changes on this box: which chat family and version hold the `default` alias,
    and the `llm.*` settings the chat model loads with (0: the setting's automatic choice)."""

    default_model: str | None
    default_version: int | None
    slots: int
    context_length: int
    threads: int


class PlanApply(Record, kw_only=True):
    """One `plan apply`: the configuration written, the state before (what a rollback restores) and
    after, the chat model's health after the reload, and what the operator should know."""

    id: str
    config_id: str
    created_at: str
    actor: str
    before: ServingState
    after: ServingState
    state: str  # applied | rolled_back | failed (the health check failed: restored at once)
    health: str  # the chat model after the reload: loaded | failed | unloaded | loading
    health_error: str | None = None
    notes: list[str] = []
    rolled_back_at: str | None = None


class ValidationRow(Record, kw_only=True):
    metric: str  # p95 ttft | p95 e2e | p95 itl
    predicted: float
    interval: list[float] | None
    measured: float
    error: float | None  # (predicted - measured) / measured
    inside_interval: bool


class Validation(Record, kw_only=True):
    """A `plan validate` run: the configuration, predicted vs measured per metric, the SLO verdict."""

    id: str
    created_at: str
    config_id: str
    users: int
    requests: int
    errors: int
    rows: list[ValidationRow]
    slo_p95_ttft_ms: float | None = None
    slo_predicted_met: bool | None = None
    slo_measured_met: bool | None = None


class IntentDraft(Record, kw_only=True):
    """A deployment intent read from a conversation so far (`plan chat`): every number is one the user
    said (a number the model offered otherwise is in `dropped`, never kept), what a recommendation
    still needs (`missing`), what is asked for but may stay the task's default, and the next question."""

    task: str | None
    users: int | None
    rate: float | None
    prompt_tokens: int | None
    output_tokens: int | None
    p95_ttft_ms: float | None
    tokens_per_s_per_user: float | None
    budget_usd_month: float | None
    priority: str | None
    missing: list[str]
    optional_missing: list[str]
    question: str | None
    dropped: list[str]
    complete: bool  # a recommendation can be made (task and load known)
    model: str  # the chat model that read the conversation
