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
    # The deployment intent of the recommendation applied, as it was then: its SLOs are the promises
    # `plan validate` judges (a later recommendation offering the same configuration promises nothing).
    intent: dict[str, Any] | None = None


class ValidationRow(Record, kw_only=True):
    metric: str  # p95 ttft | p95 e2e | p95 itl
    predicted: float
    interval: list[float] | None
    measured: float
    error: float | None  # (predicted - measured) / measured
    inside_interval: bool
    raw_predicted: float | None = None  # the same prediction before any refit: what the refit compares


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
    model: str | None = None  # the served configuration validated (the refit's key, the applied check)
    slots: int | None = None
    context: int | None = None
    calibration_id: str | None = None  # the calibration the prediction came from
    refit: RefitPoint | None = None
    verdicts: list[SloVerdict] = []
    rollback: RollbackOutcome | None = None


class RefitPoint(Record, kw_only=True):
    """What one validation says about the cost model of its model (appliance/planner/validation.py has
    the rule): measured / predicted-before-any-refit per part, clipped, with the weight it counts for,
    and the model's factors once it counted. `dropped`: undone (`plan refit --drop ID`)."""

    model: str
    calibration_id: str
    prefill_ratio: float | None  # from p95 TTFT
    decode_ratio: float | None  # from p95 inter-token latency
    weight: float
    factors_after: Refit | None = None
    dropped: bool = False


class Refit(Record, kw_only=True):
    """The correction factors in force for one model on one calibration: its prefill and decode times
    are multiplied by them in every later prediction (1.0: the calibration as measured)."""

    model: str
    calibration_id: str
    prefill_factor: float
    decode_factor: float
    validations: list[str]  # the validations counted, newest first
    weight: float  # their summed weight, against the calibration's prior weight
    rule: str


class SloVerdict(Record, kw_only=True):
    """A promised SLO against the measured value: met, missed within the prediction's 90% interval
    (the planner said it could be that far off), or missed by more (what offers the rollback)."""

    slo: str  # p95 ttft ms | tokens/s per user
    promised: float
    source: str  # the applied plan's intent | the command line
    predicted: float | None
    interval: list[float] | None
    measured: float
    margin: float  # the interval's relative width on the losing side times the promise: still "within"
    verdict: str  # met | missed within interval | missed


class RollbackOutcome(Record, kw_only=True):
    """What a validation that missed a promised SLO did about the applied plan."""

    state: str  # offered | done | failed | not applicable
    command: str | None = None  # offered: what the operator runs
    apply_id: str | None = None
    config_id: str | None = None
    health: str | None = None  # done: the chat model after the rollback's reload
    detail: str | None = None


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
