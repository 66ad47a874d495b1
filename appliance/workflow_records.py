"""Workflow records: document versions, runs with their steps, and approvals, as the API shows them."""

from __future__ import annotations

from typing import Any

from appliance.records import Record


class WorkflowDocument(Record, kw_only=True, omit_defaults=True):
    """One immutable version of a Workflow, Agent, Tool or Policy document (named by its hash)."""

    kind: str
    name: str
    version: str
    created_at: str
    body: dict[str, Any] | None = None  # on request (GET one document)


class RunStep(Record, kw_only=True):
    """One recorded step of a run: a tool or agent call, an approval, or a block (foreach, parallel,
    loop) whose iterations are steps of their own (`parent` names the block)."""

    id: str  # the step's id in the workflow
    key: str  # unique in the run: `fan[2]`, `par.a`, `retry#3`
    parent: str | None
    kind: str  # tool | agent | foreach | parallel | loop | approval | llm
    state: str  # running | succeeded | failed | skipped | waiting | refused
    attempts: int
    input: Any = None
    output: Any = None
    error: str | None = None
    tokens: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None


class WorkflowRun(Record, kw_only=True):
    id: str
    workflow: str
    version: str
    state: str  # queued | running | waiting | succeeded | degraded | failed | cancelled
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    error: str | None
    degraded: bool
    usage: dict[str, float]
    pins: dict[str, str]  # "<Kind>/<name>" -> version, as the run started
    job_id: str | None
    created_at: str
    finished_at: str | None
    # What governance did: fallbacks used, refused calls, limits met, breakers opened.
    flags: dict[str, Any] = {}
    pruned_at: str | None = None  # past retention: step inputs and nested outputs dropped
    steps: list[RunStep] = []


class Approval(Record, kw_only=True):
    """A question a run put to a person; answered once, within its expiry, in its schema."""

    id: str
    run_id: str
    step: str
    state: str  # pending | answered | expired | cancelled (its run was)
    prompt: str
    approvers: list[str]
    schema: dict[str, Any] | None
    answer: Any
    answered_by: str | None
    created_at: str
    expires_at: str | None
    answered_at: str | None


class WorkflowMemory(Record, kw_only=True, omit_defaults=True):
    """A run remembered for its key: a bounded summary of its inputs and outputs, kept until deleted."""

    id: str
    key_id: str
    workflow: str
    run_id: str
    summary: str
    created_at: str
    score: float | None = None  # relevance to the run that retrieved it


class MemoryDeleted(Record, kw_only=True):
    deleted: int
    key_id: str
    workflow: str | None
