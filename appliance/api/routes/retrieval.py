"""Retrieval tuning: per-collection fusion calibration (a `calibrate` job), its result, and reset."""

from __future__ import annotations

import msgspec
from litestar import Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from appliance.api.dependencies import admin_only
from appliance.core.access import Scope
from appliance.core.calibration import Calibration
from appliance.records import CollectionFusion, FusionSettings, Job


class CalibrateIn(msgspec.Struct, forbid_unknown_fields=True):
    collection: str
    eval_set: str | None = None  # default: the collection's latest generated set


class FusionReset(msgspec.Struct):
    collection: str
    reset: bool  # False: it had no calibrated settings
    default: FusionSettings


@post(
    "/calibrate",
    status_code=202,
    sync_to_thread=True,
    summary="Tune a collection's fusion on its generated eval set (a `calibrate` job)",
    description="Scores every fusion method, weight and routing setting on the keyword and semantic "
    "candidates of the collection's own generated questions (`POST /api/v1/evals/sets/generate`) and "
    "stores the best, unless it does not beat the server's default; hybrid searches over that "
    "collection use it from then on. Run it again after the collection changes a lot.",
)
def calibrate(
    caller: NamedDependency[Scope], calibration: NamedDependency[Calibration], data: JSONBody[CalibrateIn]
) -> Job:
    return calibration.start(caller, data.collection, data.eval_set)


@get(
    "/fusion/{collection:str}", sync_to_thread=True, summary="A collection's calibrated fusion and its scores"
)
def get_fusion(
    caller: NamedDependency[Scope], calibration: NamedDependency[Calibration], collection: FromPath[str]
) -> CollectionFusion:
    return calibration.get(caller, collection)


@delete(
    "/fusion/{collection:str}", status_code=200, sync_to_thread=True, summary="Back to the default fusion"
)
def reset_fusion(
    caller: NamedDependency[Scope], calibration: NamedDependency[Calibration], collection: FromPath[str]
) -> FusionReset:
    reset = calibration.reset(caller, collection)
    return FusionReset(collection=collection, reset=reset, default=calibration.default_fusion)


router = Router(
    "/api/v1/retrieval",
    tags=["retrieval"],
    guards=[admin_only],
    route_handlers=[calibrate, get_fusion, reset_fusion],
)
