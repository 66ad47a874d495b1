"""Evaluation (admin key only): eval sets, runs and their items, comparisons and gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from appliance.api.dependencies import admin_only
from appliance.core.access import Scope
from appliance.core.eval_sources import EvalSources
from appliance.core.evals import Evals
from appliance.errors import InvalidInput
from appliance.records import (
    EvalGate,
    EvalOutcome,
    EvalRun,
    EvalRunOptions,
    EvalSet,
    GateReport,
    GateThreshold,
    Job,
    RunComparison,
)


class EvalSetImportIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    # Either a directory on the server, or the files' text by their names in the set's layout:
    # "questions.jsonl" [+ "corpus.jsonl"] (QA), or "corpus.jsonl", "queries.jsonl", "qrels/test.tsv" (BEIR).
    path: str | None = None
    files: dict[str, str] | None = None
    collection: str | None = None  # where a corpus goes; default: the set's name
    description: str = ""


class EvalGenerateIn(msgspec.Struct, forbid_unknown_fields=True):
    collection: str
    n: int = 50
    name: str | None = None  # default: "<collection>-generated"
    seed: int = 0
    model: str | None = None  # default: the served chat model
    unanswerable_fraction: float = 0.2


class EvalFeedbackSetIn(msgspec.Struct, forbid_unknown_fields=True):
    collection: str
    name: str | None = None  # default: "<collection>-feedback"


class EvalRunIn(msgspec.Struct, forbid_unknown_fields=True):
    set: str
    collection: str | None = None  # default: where the set's corpus was ingested
    mode: str | None = None
    top_k: int = 100
    limit: int | None = None
    retrieval_only: bool = False
    model: str | None = None
    version: int | None = None  # default: the set's latest version
    judge: str | None = None  # "llm" (the chat model judges each answer) | "lexical"; default: none


class EvalGateIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    set: str
    thresholds: list[GateThreshold]
    baseline_run: str | None = None
    run_options: EvalRunOptions | None = None
    description: str = ""


class GateCheckIn(msgspec.Struct, forbid_unknown_fields=True):
    run_id: str | None = None  # None: run the gate's set with its run_options, and wait


@get("/sets", sync_to_thread=True, summary="Eval sets (latest versions, or every version)")
def list_sets(
    caller: NamedDependency[Scope], evals: NamedDependency[Evals], all_versions: FromQuery[bool] = False
) -> list[EvalSet]:
    return evals.list_sets(caller, all_versions)


@get(
    "/sets/{name:str}",
    sync_to_thread=True,
    summary="One eval set (latest or `version`), `items=true` lists them",
)
def get_set(
    caller: NamedDependency[Scope],
    evals: NamedDependency[Evals],
    name: FromPath[str],
    version: FromQuery[int | None] = None,
    items: FromQuery[bool] = False,
) -> EvalSet:
    return evals.get_set(caller, name, version, items)


@post(
    "/sets",
    status_code=201,
    sync_to_thread=True,
    summary="Import an eval set from a server directory (`path`) or from its files' text (`files`)",
    description="A corpus (corpus.jsonl) is ingested into `collection` (default: the set's name), each "
    "document under its `_id` as source_id; the set's `ingest_jobs` follow it. Importing a name again "
    "makes a new version, unless the content is the same or the latest version was never run.",
)
def import_set(
    caller: NamedDependency[Scope], evals: NamedDependency[Evals], data: JSONBody[EvalSetImportIn]
) -> EvalSet:
    if (data.path is None) == (data.files is None):
        raise InvalidInput("give either path (a directory on the server) or files")
    if data.path is not None:
        return evals.import_dir(caller, data.name, Path(data.path), data.collection, data.description)
    return evals.import_files(caller, data.name, data.files, data.collection, data.description)


@post(
    "/sets/generate",
    status_code=202,
    sync_to_thread=True,
    summary="Write a QA set from a collection with the local LLM (an `evalgen` job)",
    description="Samples chunks of `collection`, has the chat model write a question each answers "
    "(constrained JSON, checked: the answer is in the chunk, the question does not quote it) and "
    "questions on the same topics the collection does not answer. The set (kind `generated`, gold "
    "sources known) is named in the job's summary when it succeeds.",
)
def generate_set(
    caller: NamedDependency[Scope], eval_sources: NamedDependency[EvalSources], data: JSONBody[EvalGenerateIn]
) -> Job:
    return eval_sources.generate(
        caller, data.collection, data.n, data.name, data.seed, data.model, data.unanswerable_fraction
    )


@post(
    "/sets/from-feedback",
    status_code=201,
    sync_to_thread=True,
    summary="A QA set of the answers users rated down over a collection (regression items)",
)
def feedback_set(
    caller: NamedDependency[Scope],
    eval_sources: NamedDependency[EvalSources],
    data: JSONBody[EvalFeedbackSetIn],
) -> EvalSet:
    return eval_sources.from_feedback(caller, data.collection, data.name)


@post(
    "/runs",
    status_code=202,
    sync_to_thread=True,
    summary="Run an eval set as an `eval` job (progress at /api/v1/jobs/{job_id})",
)
def create_run(
    caller: NamedDependency[Scope], evals: NamedDependency[Evals], data: JSONBody[EvalRunIn]
) -> EvalRun:
    return evals.start_run(
        caller,
        data.set,
        data.collection,
        data.mode,
        data.top_k,
        data.limit,
        data.retrieval_only,
        data.model,
        data.version,
        data.judge,
    )


@get("/runs", sync_to_thread=True, summary="Runs, newest first, with their configuration and scorecard")
def list_runs(
    caller: NamedDependency[Scope],
    evals: NamedDependency[Evals],
    set: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> list[EvalRun]:
    return evals.list_runs(caller, set, limit)


@get("/runs/{run_id:str}", sync_to_thread=True, summary="A run: state, configuration and scorecard")
def get_run(caller: NamedDependency[Scope], evals: NamedDependency[Evals], run_id: FromPath[str]) -> EvalRun:
    return evals.get_run(caller, run_id)


@get(
    "/runs/{run_id:str}/items",
    sync_to_thread=True,
    summary="A run's item outcomes, worst first (or `order=ordinal`; `metric` sorts by one metric)",
)
def run_items(
    caller: NamedDependency[Scope],
    evals: NamedDependency[Evals],
    run_id: FromPath[str],
    order: FromQuery[str] = "worst",
    metric: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=5000)] = 50,
    offset: Annotated[int, QueryParameter(ge=0)] = 0,
) -> list[EvalOutcome]:
    return evals.run_items(caller, run_id, order, metric, limit, offset)


@get(
    "/compare",
    sync_to_thread=True,
    errors=(404,),
    summary="Run B against run A, item by item: per metric B - A with a paired bootstrap 95% interval",
)
def compare(
    caller: NamedDependency[Scope],
    evals: NamedDependency[Evals],
    run_a: FromQuery[str],
    run_b: FromQuery[str],
) -> RunComparison:
    return evals.compare(caller, run_a, run_b)


@post("/gates", status_code=201, sync_to_thread=True, summary="Create or replace a gate")
def create_gate(
    caller: NamedDependency[Scope], evals: NamedDependency[Evals], data: JSONBody[EvalGateIn]
) -> EvalGate:
    return evals.create_gate(
        caller, data.name, data.set, data.thresholds, data.baseline_run, data.run_options, data.description
    )


@get("/gates", sync_to_thread=True, summary="Gates")
def list_gates(caller: NamedDependency[Scope], evals: NamedDependency[Evals]) -> list[EvalGate]:
    return evals.list_gates(caller)


@post(
    "/gates/{name:str}/check",
    status_code=200,
    sync_to_thread=True,
    summary="Pass or fail a run against a gate, with a report per threshold",
    description='The body is `{}` or `{"run_id": ...}`. Without `run_id` the gate\'s set is run with its `run_options` and waited for; a run '
    "not finished in time answers `state: pending` with its `run_id`: check again with it.",
)
def check_gate(
    caller: NamedDependency[Scope],
    evals: NamedDependency[Evals],
    name: FromPath[str],
    data: JSONBody[GateCheckIn],
) -> GateReport:
    return evals.check_gate(caller, name, data.run_id)


router = Router(
    "/api/v1/evals",
    tags=["evals"],
    guards=[admin_only],
    route_handlers=[
        list_sets,
        get_set,
        import_set,
        generate_set,
        feedback_set,
        create_run,
        list_runs,
        get_run,
        run_items,
        compare,
        create_gate,
        list_gates,
        check_gate,
    ],
)
