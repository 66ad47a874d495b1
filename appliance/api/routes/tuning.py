"""Tuning (admin key only): fine-tuning jobs on a collection's own text."""

from __future__ import annotations

import msgspec
from litestar import Router, post

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


@post(
    "/embedder",
    status_code=202,
    sync_to_thread=True,
    summary="Fine-tune the embedder on a collection (a `tune` job)",
    description="Builds (query, chunk) pairs from the collection's headings, sentences and optionally "
    "generated questions, mines hard negatives, holds out a tenth of the chunks, trains the packaged "
    "MiniLM with MultipleNegativesRankingLoss within the budget (checkpointed, resumed after a restart) "
    "and registers the result as a new embedding version with its lineage and held-out nDCG@10 before "
    "and after. The collection keeps its embedder.",
)
def tune_embedder(caller: Scope, tuning: Tuning, data: TuneEmbedderIn) -> Job:
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
    )


router = Router("/api/v1/tuning", tags=["tuning"], guards=[admin_only], route_handlers=[tune_embedder])
