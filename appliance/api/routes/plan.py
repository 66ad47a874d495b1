"""The capacity planner (admin): calibrate the box, predict a configuration, recommend, render for a GPU
cluster, apply a configuration to this box (and roll it back), and keep the validations' history."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from appliance.api.dependencies import admin_only
from appliance.core.access import Scope
from appliance.core.planner import Planner
from appliance.plan_records import (
    Calibration,
    DeploymentIntent,
    IntentDraft,
    PlanApply,
    Refit,
    Validation,
)
from appliance.planner.serving import ServingConfig

Tokens = Annotated[int, Meta(ge=1, le=1_000_000)]
Users = Annotated[int, Meta(ge=1, le=100_000)]
Rate = Annotated[float, Meta(gt=0, le=100_000)]
Seconds = Annotated[float, Meta(ge=0, le=86_400)]
Money = Annotated[float, Meta(ge=0, le=1e9)]


class CalibrateIn(msgspec.Struct, forbid_unknown_fields=True):
    quick: bool = False  # seconds instead of minutes: for tests and a first look
    model: str | None = None  # the reference model; default SmolLM2-135M


class CalibrationStatus(msgspec.Struct):
    state: str  # idle | running | done | failed
    step: str | None = None
    error: str | None = None
    calibration_id: str | None = None
    quick: bool | None = None


class LoadIn(msgspec.Struct, forbid_unknown_fields=True):
    task: str = "chat"  # chat | rag | summarisation | code
    users: Users | None = None
    rate: Rate | None = None
    think_s: Seconds = 0.0
    prompt_tokens: Tokens | None = None
    output_tokens: Tokens | None = None


class PredictIn(LoadIn, forbid_unknown_fields=True):
    model: str = ""
    target: str = "cpu"  # cpu, or a GPU of GET /api/v1/plan/gpus
    slots: Annotated[int, Meta(ge=1, le=1024)] = 1
    context: Annotated[int, Meta(ge=64, le=1_048_576)] = 4096
    threads: Annotated[int, Meta(ge=0, le=1024)] = 0
    refit: bool = True  # false: the calibration as measured, without the validations' factors


class IntentIn(LoadIn, forbid_unknown_fields=True):
    priority: str = "latency"  # latency | cost | accuracy
    p95_ttft_ms: Annotated[float, Meta(gt=0, le=1e9)] | None = None
    tokens_per_s_per_user: Annotated[float, Meta(gt=0, le=1e6)] | None = None
    budget_usd_month: Money | None = None
    memory_bytes: Annotated[int, Meta(ge=1, le=2**50)] | None = None
    energy_usd_per_kwh: Money = 0.15
    box_usd_month: Money = 100.0
    box_watts: Annotated[float, Meta(ge=0, le=1e6)] = 150.0
    top: Annotated[int, Meta(ge=1, le=500)] = 10
    gpus: bool = True  # include the catalogue's GPUs


def _intent(data: LoadIn, **extra: Any) -> DeploymentIntent:
    fields = {
        f: getattr(data, f) for f in ("task", "users", "rate", "think_s", "prompt_tokens", "output_tokens")
    }
    return DeploymentIntent(**fields, **extra)


@post(
    "/calibrate",
    status_code=202,
    errors=(404, 409),
    sync_to_thread=True,
    summary="Start measuring this box in the background (minutes; quick: seconds); follow GET /calibration/status",
)
def calibrate(
    caller: NamedDependency[Scope], planner: NamedDependency[Planner], data: JSONBody[CalibrateIn]
) -> CalibrationStatus:
    return CalibrationStatus(**planner.start_calibration(caller, quick=data.quick, model_name=data.model))


@get(
    "/calibration/status", sync_to_thread=False, summary="The calibration running or last run: state and step"
)
def calibration_status(planner: NamedDependency[Planner]) -> CalibrationStatus:
    return CalibrationStatus(**planner.calibration_status())


@get(
    "/calibration",
    sync_to_thread=True,
    errors=(503,),
    summary="The latest calibration of this box's hardware",
)
def calibration(planner: NamedDependency[Planner]) -> Calibration:
    return planner.calibration()


@post(
    "/predict",
    status_code=200,
    errors=(404, 503),
    sync_to_thread=True,
    summary="Latency, throughput and memory of a configuration under a load",
)
def predict(planner: NamedDependency[Planner], data: JSONBody[PredictIn]) -> dict[str, Any]:
    from appliance.errors import InvalidInput

    if not data.model:
        raise InvalidInput("model: which model to predict for", param="model")
    config = ServingConfig(data.model, data.target, data.slots, data.context, data.threads)
    return planner.predict(config, _intent(data), refit=data.refit)


@post(
    "/recommend",
    status_code=200,
    errors=(404, 503),
    sync_to_thread=True,
    summary="Configurations for a deployment intent, ranked",
)
def recommend(planner: NamedDependency[Planner], data: JSONBody[IntentIn]) -> dict[str, Any]:
    extra = {
        f: getattr(data, f)
        for f in (
            "priority",
            "p95_ttft_ms",
            "tokens_per_s_per_user",
            "budget_usd_month",
            "memory_bytes",
            "energy_usd_per_kwh",
            "box_usd_month",
            "box_watts",
        )
    }
    return planner.recommend(_intent(data, **extra), top=data.top, gpus=data.gpus)


@get(
    "/configs/{config_id:str}/render",
    sync_to_thread=True,
    summary="A recommended configuration as settings, vLLM arguments or a KServe manifest",
)
def render(planner: NamedDependency[Planner], config_id: FromPath[str]) -> dict[str, Any]:
    return planner.render(config_id)


@get("/gpus", sync_to_thread=False, summary="The GPU catalogue (datasheet figures, not calibrated)")
def gpus(planner: NamedDependency[Planner]) -> list[dict[str, Any]]:
    return planner.catalogue()


class ApplyIn(msgspec.Struct, forbid_unknown_fields=True):
    config_id: str = ""  # a CPU configuration of a recommendation (`appliance plan recommend`)
    rollback: bool = False  # instead: undo the newest apply still in force
    wait_s: Annotated[float, Meta(ge=0, le=3600)] = 300.0  # for the reload's health check


@post(
    "/apply",
    status_code=200,
    errors=(400, 404, 409),
    sync_to_thread=True,
    summary="Serve a recommended configuration on this box (default alias, llm settings, reload, health "
    "check), or roll the newest one back",
)
def apply(
    caller: NamedDependency[Scope], planner: NamedDependency[Planner], data: JSONBody[ApplyIn]
) -> PlanApply:
    from appliance.errors import InvalidInput

    if data.rollback:
        return planner.rollback(caller, wait_s=data.wait_s)
    if not data.config_id:
        raise InvalidInput("config_id: which recommended configuration to apply", param="config_id")
    return planner.apply(caller, data.config_id, wait_s=data.wait_s)


@post(
    "/rollback",
    status_code=200,
    errors=(409,),
    sync_to_thread=True,
    summary="Undo the newest apply still in force: the previous default alias and llm settings, reloaded",
)
def rollback(caller: NamedDependency[Scope], planner: NamedDependency[Planner]) -> PlanApply:
    return planner.rollback(caller)


@get("/applies", sync_to_thread=True, summary="Every apply, newest first, with its state")
def applies(planner: NamedDependency[Planner]) -> list[PlanApply]:
    return planner.applies()


Ms = Annotated[float, Meta(ge=0, le=1e9)]


class ValidationRowIn(msgspec.Struct, forbid_unknown_fields=True):
    metric: Annotated[str, Meta(min_length=1, max_length=40)]
    predicted: Ms
    measured: Ms
    interval: list[Ms] | None = None
    error: float | None = None
    inside_interval: bool = False
    raw_predicted: Ms | None = None  # the prediction without the refit factors: what the refit learns from


class ValidationIn(msgspec.Struct, forbid_unknown_fields=True):
    config_id: Annotated[str, Meta(min_length=1, max_length=200)]
    users: Annotated[int, Meta(ge=1, le=100_000)]
    requests: Annotated[int, Meta(ge=0, le=10_000_000)]
    errors: Annotated[int, Meta(ge=0, le=10_000_000)] = 0
    rows: list[ValidationRowIn] = []
    slo_p95_ttft_ms: Ms | None = None
    slo_predicted_met: bool | None = None
    slo_measured_met: bool | None = None
    model: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    slots: Annotated[int, Meta(ge=1, le=1024)] | None = None
    context: Annotated[int, Meta(ge=1, le=1_048_576)] | None = None
    calibration_id: Annotated[str, Meta(max_length=64)] | None = None
    auto_rollback: bool = False  # a promised SLO missed by more than its interval rolls the plan back


@post(
    "/validations",
    status_code=201,
    sync_to_thread=True,
    summary="Store a validation run (`appliance plan validate` posts its predicted vs measured): the "
    "model's refit, the SLO verdicts, and the rollback offered (or, with auto_rollback, done)",
)
def record_validation(
    caller: NamedDependency[Scope], planner: NamedDependency[Planner], data: JSONBody[ValidationIn]
) -> Validation:
    body = msgspec.to_builtins(data)
    auto = body.pop("auto_rollback")
    return planner.validations.record(caller, body, auto_rollback=auto)


class RefitDropIn(msgspec.Struct, forbid_unknown_fields=True):
    dropped: bool = True  # false: count it again


@post(
    "/validations/{validation_id:str}/refit",
    status_code=200,
    errors=(404, 409),
    sync_to_thread=True,
    summary="Drop (or restore) what one validation taught the refit: its ratios leave the model's factors",
)
def drop_refit(
    caller: NamedDependency[Scope],
    planner: NamedDependency[Planner],
    validation_id: FromPath[str],
    data: JSONBody[RefitDropIn],
) -> Validation:
    return planner.validations.drop_refit(caller, validation_id, data.dropped)


@get(
    "/refits",
    sync_to_thread=True,
    errors=(503,),
    summary="The refit factors in force per model on the current calibration, and the rule",
)
def refits(planner: NamedDependency[Planner]) -> list[Refit]:
    return planner.validations.refits()


@get("/validations", sync_to_thread=True, summary="Validation runs, newest first: predicted vs measured")
def validations(planner: NamedDependency[Planner]) -> list[Validation]:
    return planner.validations.all()


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: Annotated[str, Meta(max_length=4000)]


class ConversationIn(msgspec.Struct, forbid_unknown_fields=True):
    messages: Annotated[list[MessageIn], Meta(min_length=1, max_length=40)]
    # The intent's JSON takes about 100 tokens; an answer cut short is not trusted (all missing).
    max_tokens: Annotated[int, Meta(ge=1, le=1024)] = 256


@post(
    "/intent",
    status_code=200,
    errors=(400, 503),
    sync_to_thread=True,
    summary="The deployment intent read from a conversation by the local model: numbers only as the "
    "user said them, what is missing, the next question",
)
def intent(
    caller: NamedDependency[Scope], planner: NamedDependency[Planner], data: JSONBody[ConversationIn]
) -> IntentDraft:
    return planner.extract_intent(caller, [(m.role, m.content) for m in data.messages], data.max_tokens)


router = Router(
    "/api/v1/plan",
    route_handlers=[
        calibrate,
        calibration_status,
        calibration,
        predict,
        recommend,
        render,
        gpus,
        apply,
        rollback,
        applies,
        record_validation,
        drop_refit,
        refits,
        validations,
        intent,
    ],
    guards=[admin_only],
    tags=["plan"],
)
