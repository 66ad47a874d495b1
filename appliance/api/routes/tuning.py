"""Tuning (admin key only): fine-tuning jobs on a collection's own text."""

from __future__ import annotations

import msgspec
from litestar import Router, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from appliance.api.dependencies import admin_only
from appliance.core.access import Scope
from appliance.core.tuning import DEFAULT_BUDGET_SECONDS, Tuning
from appliance.records import Job


class TuneEmbedderIn(msgspec.Struct, forbid_unknown_fields=True):
    collection: str
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    max_steps: int = 2000
    batch_size: int = 32
    questions: int = 0  # generated questions to train on besides heading and sentence pairs
    threads: int = 1
    seed: int = 0
    name: str | None = None  # the registry family (default: all-MiniLM-L6-v2-<collection>)
    rollout: bool = False  # then switch the collection to it, through its retrieval gate (a `reembed` job)
    rollout_min_gain: float = 0.0  # that gate's margin over the live embedder's nDCG@10


@post(
    "/embedder",
    status_code=202,
    sync_to_thread=True,
    summary="Fine-tune the embedder on a collection (a `tune` job)",
    description="Builds (query, chunk) pairs from the collection's headings, sentences and optionally "
    "generated questions, mines hard negatives, holds out a tenth of the chunks, trains the packaged "
    "MiniLM with MultipleNegativesRankingLoss within the budget (checkpointed, resumed after a restart) "
    "and registers the result as a new embedding version with its lineage and held-out nDCG@10 before "
    "and after. With `rollout` the collection is then switched to it (a `reembed` job, see "
    "`POST /api/v1/collections/{name}/embedder`) only if its retrieval gate passes; otherwise it keeps "
    "its embedder.",
)
def tune_embedder(
    caller: NamedDependency[Scope], tuning: NamedDependency[Tuning], data: JSONBody[TuneEmbedderIn]
) -> Job:
    return tuning.tune_embedder(
        caller,
        data.collection,
        budget_seconds=data.budget_seconds,
        max_steps=data.max_steps,
        batch_size=data.batch_size,
        questions=data.questions,
        threads=data.threads,
        seed=data.seed,
        name=data.name,
        rollout=data.rollout,
        rollout_min_gain=data.rollout_min_gain,
    )


router = Router("/api/v1/tuning", tags=["tuning"], guards=[admin_only], route_handlers=[tune_embedder])
