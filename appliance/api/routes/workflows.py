"""Workflows: documents (YAML or JSON) applied as versions, runs of a workflow, and approvals.

Applying documents needs an admin key; any key lists workflows and runs them as itself. A user key
sees only its own runs and the approvals of its runs (or naming it); others' look missing (404)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from litestar import Router, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from appliance.api.dependencies import admin_only
from appliance.api.requests import ApiRequest
from appliance.core.access import Scope
from appliance.core.workflows import Workflows
from appliance.errors import UnsupportedFormat
from appliance.records import Record
from appliance.workflow_records import Approval, MemoryDeleted, WorkflowDocument, WorkflowMemory, WorkflowRun


class AppliedDocument(Record, kw_only=True):
    kind: str
    name: str
    version: str
    created: bool  # False: that exact version was stored already


class RunIn(msgspec.Struct, forbid_unknown_fields=True):
    input: dict[str, Any] = {}
    wait: float = 0.0  # seconds to wait for the run to end (or pause) before answering


class RunStarted(Record, kw_only=True):
    run_id: str
    workflow: str
    version: str
    state: str
    run: WorkflowRun


class AnswerIn(msgspec.Struct, forbid_unknown_fields=True):
    answer: Any


@dataclass
class _DocumentsOperation(Operation):
    """The route takes YAML or JSON; Litestar cannot infer two bodies, so describe both."""

    request_body: RequestBody | None = field(
        default_factory=lambda: RequestBody(
            required=True,
            content={
                "application/yaml": OpenAPIMediaType(
                    schema=Schema(
                        type="string", description="one or more YAML documents (`---` between them)"
                    )
                ),
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type="object",
                        description='files by name (`{"files": {"flow.yaml": "kind: Workflow..."}}`), or one '
                        "document as JSON (`kind`, `name`, ...); a JSON list of documents is taken too",
                        properties={
                            "files": Schema(type="object", additional_properties=Schema(type="string")),
                            "kind": Schema(type="string", enum=["Workflow", "Agent", "Tool", "Policy"]),
                            "name": Schema(type="string"),
                        },
                    )
                ),
            },
        )
    )

    def __post_init__(self) -> None:
        self.request_body = _DocumentsOperation.__dataclass_fields__["request_body"].default_factory()


_YAML = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


@post(
    "/",
    status_code=201,
    guards=[admin_only],
    operation_class=_DocumentsOperation,
    errors=(415,),
    summary="Apply Workflow, Agent, Tool and Policy documents (YAML or JSON) as new versions",
    description="Each document is checked against its schema, then for meaning together with those "
    "stored; a fault answers 400 naming its path (`steps[2].with.text: unknown step 'x'`). A version "
    "is the hash of the document's canonical form: applying the same content again stores nothing.",
)
async def apply_documents(
    request: ApiRequest, caller: NamedDependency[Scope], workflows: NamedDependency[Workflows]
) -> list[AppliedDocument]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in _YAML:
        body = await request.body()
        applied = await asyncio.to_thread(workflows.apply_text, caller, body, "body")
    elif ctype == "application/json" or ctype.endswith("+json"):
        value = await request.json()
        applied = await asyncio.to_thread(workflows.apply_json, caller, value)
    else:
        raise UnsupportedFormat(
            f"send application/yaml or application/json, not {ctype or 'no content type'}"
        )
    return [AppliedDocument(**a) for a in applied]


@get("/", sync_to_thread=True, summary="Documents, the latest version of each (`kind`, default Workflow)")
def list_documents(
    caller: NamedDependency[Scope],
    workflows: NamedDependency[Workflows],
    kind: FromQuery[str | None] = "Workflow",
) -> list[WorkflowDocument]:
    return workflows.list_documents(caller, kind)


@get("/{name:str}", sync_to_thread=True, summary="Every version of a workflow, newest first, with its body")
def get_workflow(
    caller: NamedDependency[Scope], workflows: NamedDependency[Workflows], name: FromPath[str]
) -> list[WorkflowDocument]:
    return workflows.get_workflow(caller, name)


@post(
    "/{name:str}/runs",
    status_code=202,
    sync_to_thread=True,
    summary="Run a workflow (as the calling key) with `input`; answers its run_id",
    description="The run is pinned to the versions stored now. With `wait` (seconds) the answer comes "
    "when the run ends or pauses for an approval, or when the time is up.",
)
def start_run(
    caller: NamedDependency[Scope],
    workflows: NamedDependency[Workflows],
    name: FromPath[str],
    data: JSONBody[RunIn],
) -> RunStarted:
    run = workflows.start(caller, name, data.input)
    if data.wait > 0:
        run = workflows.wait(caller, run.id, min(data.wait, 600.0))
    return RunStarted(run_id=run.id, workflow=run.workflow, version=run.version, state=run.state, run=run)


@get(
    "/memory",
    sync_to_thread=True,
    errors=(403,),
    summary="The calling key's long-term workflow memories (an admin key may name another `key`)",
    description="A workflow that declares `memory: {enabled: true}` remembers a summary of each run that "
    "succeeded, for the key that ran it; later runs of that key are given the most relevant ones.",
)
def list_memories(
    caller: NamedDependency[Scope],
    workflows: NamedDependency[Workflows],
    workflow: FromQuery[str | None] = None,
    key: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> list[WorkflowMemory]:
    return workflows.list_memories(caller, workflow, key, limit)


@delete(
    "/memory",
    status_code=200,
    sync_to_thread=True,
    errors=(403,),
    summary="Delete the calling key's memories of a `workflow`, or all of them (`all=true`); audited",
)
def delete_memories(
    caller: NamedDependency[Scope],
    workflows: NamedDependency[Workflows],
    workflow: FromQuery[str | None] = None,
    key: FromQuery[str | None] = None,
    all: FromQuery[bool] = False,  # noqa: A002 - the query parameter's name
) -> MemoryDeleted:
    return workflows.delete_memories(caller, workflow, key, all)


workflows_router = Router(
    "/api/v1/workflows",
    tags=["workflows"],
    route_handlers=[apply_documents, list_documents, list_memories, delete_memories, get_workflow, start_run],
)


@get("/", sync_to_thread=True, summary="Workflow runs (the key's own; every run for an admin key)")
def list_runs(
    caller: NamedDependency[Scope],
    workflows: NamedDependency[Workflows],
    run_state: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> list[WorkflowRun]:
    return workflows.list_runs(caller, run_state, limit)


@get("/{workflow_run_id:str}", sync_to_thread=True, summary="A run: state, outputs, usage and every step")
def get_run(
    caller: NamedDependency[Scope], workflows: NamedDependency[Workflows], workflow_run_id: FromPath[str]
) -> WorkflowRun:
    return workflows.get_run(caller, workflow_run_id)


@post(
    "/{workflow_run_id:str}/cancel",
    status_code=200,
    sync_to_thread=True,
    errors=(409,),
    summary="Cancel a queued, running or waiting run",
)
def cancel_run(
    caller: NamedDependency[Scope], workflows: NamedDependency[Workflows], workflow_run_id: FromPath[str]
) -> WorkflowRun:
    return workflows.cancel(caller, workflow_run_id)


runs_router = Router("/api/v1/runs", tags=["workflows"], route_handlers=[list_runs, get_run, cancel_run])


@get("/", sync_to_thread=True, summary="Approvals (default: pending) of the key's runs, or naming it")
def list_approvals(
    caller: NamedDependency[Scope],
    workflows: NamedDependency[Workflows],
    approval_state: FromQuery[str | None] = "pending",
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> list[Approval]:
    return workflows.list_approvals(caller, approval_state, limit)


@get("/{approval_id:str}", sync_to_thread=True, summary="One approval")
def get_approval(
    caller: NamedDependency[Scope], workflows: NamedDependency[Workflows], approval_id: FromPath[str]
) -> Approval:
    return workflows.get_approval(caller, approval_id)


@post(
    "/{approval_id:str}",
    status_code=200,
    sync_to_thread=True,
    errors=(403, 409),
    summary="Answer an approval (checked against its schema); a second answer, or one after expiry, is 409",
)
def answer_approval(
    caller: NamedDependency[Scope],
    workflows: NamedDependency[Workflows],
    approval_id: FromPath[str],
    data: JSONBody[AnswerIn],
) -> Approval:
    return workflows.answer(caller, approval_id, data.answer)


approvals_router = Router(
    "/api/v1/approvals", tags=["workflows"], route_handlers=[list_approvals, get_approval, answer_approval]
)
