"""BaseClient: every API call as a method, with the answer handling both clients share (no I/O here)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

import httpx

from appliance.client import calls, platform_calls
from appliance.client.calls import Call
from appliance.client.errors import ApiError

P = ParamSpec("P")


def _api(build: Callable[P, Call]) -> Callable[Concatenate[BaseClient, P], Any]:
    """A client method from a builder: it sends the call (or streams it) through the subclass."""

    @functools.wraps(build)
    def method(self: BaseClient, *args: P.args, **kwargs: P.kwargs) -> Any:
        call = build(*args, **kwargs)
        return self._stream(call) if call.stream else self._send(call)

    return method


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def read_answer(call: Call, response: httpx.Response) -> Any:
    """The result of a call from its (fully read) answer; an error answer raises ApiError."""
    if response.status_code >= 400 and not call.any_status:
        raise ApiError.from_response(response)
    try:
        body = response.json()
    except ValueError:
        raise ApiError(
            -1,
            "Unexpected answer",
            f"{call.method} {call.path} answered "
            f"{response.status_code} with {response.headers.get('content-type') or 'no'} content, "
            "not JSON",
        ) from None
    return call.result(body)


def sse_event(line: str) -> dict | None:
    """The JSON payload of a server-sent `data:` line; None for `event:` lines, comments and blanks."""
    if not line.startswith("data:"):
        return None
    return json.loads(line[5:].strip())


class BaseClient:
    """The API, one method per call (its request built in `calls`), for the sync and the async
    client alike. A method hands its Call to `_send` (an answer) or `_stream` (server-sent events),
    the only I/O, which each subclass implements; so a sync method returns the result, an async one
    an awaitable of it, and a stream an iterator or async iterator of events. Every failure is an
    ApiError."""

    url: str

    def _send(self, call: Call) -> Any:
        raise NotImplementedError

    def _stream(self, call: Call) -> Any:
        raise NotImplementedError

    # -- health and operations
    ready = _api(calls.ready)
    ops = _api(calls.ops)
    backup = _api(calls.backup)
    verify_chunks = _api(calls.verify_chunks)
    stats = _api(calls.stats)
    logs = _api(calls.logs)
    models = _api(calls.models)
    load_model = _api(calls.load_model)
    unload_model = _api(calls.unload_model)
    chat_models = _api(calls.chat_models)
    # -- collections and documents
    collections = _api(calls.collections)
    create_collection = _api(calls.create_collection)
    documents = _api(calls.documents)
    document = _api(calls.document)
    delete_document = _api(calls.delete_document)
    submit_batch = _api(calls.submit_batch)
    # -- jobs
    jobs = _api(calls.jobs)
    job = _api(calls.job)
    cancel_job = _api(calls.cancel_job)
    retry_job = _api(calls.retry_job)
    # -- sources
    sources = _api(calls.sources)
    add_source = _api(calls.add_source)
    sync_source = _api(calls.sync_source)
    remove_source = _api(calls.remove_source)
    quarantine = _api(calls.quarantine)
    # -- knowledge and conversations
    search = _api(calls.search)
    ask = _api(calls.ask)
    create_conversation = _api(calls.create_conversation)
    conversations = _api(calls.conversations)
    conversation = _api(calls.conversation)
    send_message = _api(calls.send_message)
    # -- keys and audit
    keys = _api(calls.keys)
    create_key = _api(calls.create_key)
    revoke_key = _api(calls.revoke_key)
    audit = _api(calls.audit)
    # -- answer traces, feedback and drift
    answer_trace = _api(calls.answer_trace)
    rate_answer = _api(calls.rate_answer)
    feedback = _api(calls.feedback)
    feedback_summary = _api(calls.feedback_summary)
    drift = _api(calls.drift)
    check_drift = _api(calls.check_drift)
    # -- capacity planner
    plan_calibrate = _api(platform_calls.plan_calibrate)
    plan_calibration = _api(platform_calls.plan_calibration)
    plan_calibration_status = _api(platform_calls.plan_calibration_status)
    plan_predict = _api(platform_calls.plan_predict)
    plan_recommend = _api(platform_calls.plan_recommend)
    plan_render = _api(platform_calls.plan_render)
    plan_gpus = _api(platform_calls.plan_gpus)
    plan_apply = _api(platform_calls.plan_apply)
    plan_rollback = _api(platform_calls.plan_rollback)
    plan_applies = _api(platform_calls.plan_applies)
    plan_record_validation = _api(platform_calls.plan_record_validation)
    plan_validations = _api(platform_calls.plan_validations)
    plan_drop_refit = _api(platform_calls.plan_drop_refit)
    plan_refits = _api(platform_calls.plan_refits)
    plan_intent = _api(platform_calls.plan_intent)
    # -- evaluation
    eval_sets = _api(calls.eval_sets)
    eval_set = _api(calls.eval_set)
    import_eval_set = _api(calls.import_eval_set)
    generate_eval_set = _api(calls.generate_eval_set)
    tune_embedder = _api(platform_calls.tune_embedder)
    collection_embedder = _api(platform_calls.collection_embedder)
    switch_embedder = _api(platform_calls.switch_embedder)
    confirm_embedder = _api(platform_calls.confirm_embedder)
    rollback_embedder = _api(platform_calls.rollback_embedder)
    feedback_eval_set = _api(calls.feedback_eval_set)
    start_eval_run = _api(calls.start_eval_run)
    eval_runs = _api(calls.eval_runs)
    eval_run = _api(calls.eval_run)
    eval_run_items = _api(calls.eval_run_items)
    compare_eval_runs = _api(calls.compare_eval_runs)
    eval_gates = _api(calls.eval_gates)
    create_eval_gate = _api(calls.create_eval_gate)
    check_eval_gate = _api(calls.check_eval_gate)
    # -- model registry
    registry_models = _api(platform_calls.registry_models)
    registry_model = _api(platform_calls.registry_model)
    registry_history = _api(platform_calls.registry_history)
    import_model = _api(platform_calls.import_model)
    import_remote_model = _api(platform_calls.import_remote_model)
    promote_model = _api(platform_calls.promote_model)
    rollback_model = _api(platform_calls.rollback_model)
    start_canary = _api(platform_calls.start_canary)
    set_shadow = _api(platform_calls.set_shadow)
    shadow_report = _api(platform_calls.shadow_report)
    set_model_gate = _api(platform_calls.set_model_gate)
    # -- workflows
    apply_workflow_files = _api(platform_calls.apply_workflow_files)
    workflow_documents = _api(platform_calls.workflow_documents)
    workflow = _api(platform_calls.workflow)
    start_workflow_run = _api(platform_calls.start_workflow_run)
    workflow_runs = _api(platform_calls.workflow_runs)
    workflow_run = _api(platform_calls.workflow_run)
    cancel_workflow_run = _api(platform_calls.cancel_workflow_run)
    approvals = _api(platform_calls.approvals)
    answer_approval = _api(platform_calls.answer_approval)
    workflow_memories = _api(platform_calls.workflow_memories)
    delete_workflow_memories = _api(platform_calls.delete_workflow_memories)
    # -- retrieval tuning
    calibrate_fusion = _api(platform_calls.calibrate_fusion)
    collection_fusion = _api(platform_calls.collection_fusion)
    reset_fusion = _api(platform_calls.reset_fusion)

    def upload(self, collection: str, path: Path, source_id: str | None = None) -> Any:
        """A local file (read here, parsed by the server); `source_id` defaults to its path."""
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ApiError(-1, "Cannot read file", f"{path}: {exc.strerror or exc}") from None
        return self._send(calls.upload(collection, path.name, content, source_id or str(path)))
