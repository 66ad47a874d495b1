"""The API's requests of the platform around the knowledge base: the model registry, workflows, the
capacity planner and retrieval tuning; built like calls.py's, no I/O."""

from __future__ import annotations

from typing import Any

import httpx

from appliance.client.calls import Call, _query


# -- model registry --------------------------------------------------------------------------------
def registry_models() -> Call:
    """Model families with their versions and aliases."""
    return Call("GET", "/api/v1/models")


def registry_model(name: str) -> Call:
    return Call("GET", "/api/v1/models/{name}", {"name": name})


def registry_history(name: str) -> Call:
    return Call("GET", "/api/v1/models/{name}/history", {"name": name})


def import_model(path: str, name: str | None = None) -> Call:
    """Register a GGUF file on the server (verified and probed: it lasts as long as the probe)."""
    body: dict[str, Any] = {"path": path}
    if name:
        body["name"] = name
    return Call("POST", "/api/v1/models/import", json=body, timeout=None)


def import_remote_model(
    url: str,
    model: str,
    name: str | None = None,
    api_key_file: str | None = None,
    api_key_env: str | None = None,
    capacity: int | None = None,
    context_length: int | None = None,
) -> Call:
    """Register a model an OpenAI-compatible server serves (its host must be in network.allow); probed."""
    remote: dict[str, Any] = {"url": url, "model": model}
    if api_key_file:
        remote["api_key_file"] = api_key_file
    if api_key_env:
        remote["api_key_env"] = api_key_env
    if capacity is not None:
        remote["capacity"] = capacity
    body: dict[str, Any] = {"remote": remote}
    if name:
        body["name"] = name
    if context_length is not None:
        body["context_length"] = context_length
    return Call("POST", "/api/v1/models/import", json=body, timeout=None)


def promote_model(name: str, version: int, alias: str, reason: str = "", run: str | None = None) -> Call:
    """Point `alias` at `version`; to staging/production through the family's eval gate (which may run)."""
    body: dict[str, Any] = {"version": version, "reason": reason}
    if run:
        body["run"] = run
    return Call(
        "POST",
        "/api/v1/models/{name}/aliases/{alias}",
        {"name": name, "alias": alias},
        json=body,
        timeout=None,
    )


def rollback_model(name: str, alias: str = "production", reason: str = "") -> Call:
    return Call(
        "POST", "/api/v1/models/{name}/rollback", {"name": name}, json={"alias": alias, "reason": reason}
    )


def start_canary(
    name: str, version: int, steps: list[int], min_samples: int | None = None, reason: str = ""
) -> Call:
    """Send a growing share of `name`'s production traffic to `version`, analysed at each step."""
    body: dict[str, Any] = {"version": version, "steps": steps, "reason": reason}
    if min_samples is not None:
        body["min_samples"] = min_samples
    return Call("POST", "/api/v1/models/{name}/canary", {"name": name}, json=body, timeout=None)


def set_shadow(name: str, version: int | None, share: float = 1.0, reason: str = "") -> Call:
    """Mirror `share` of `name`'s production chat requests to `version` (None: stop the shadow)."""
    return Call(
        "POST",
        "/api/v1/models/{name}/shadow",
        {"name": name},
        json={"version": version, "share": share, "reason": reason},
    )


def shadow_report(name: str, recent: int = 10) -> Call:
    return Call("GET", "/api/v1/models/{name}/shadow", {"name": name}, params={"recent": recent})


def set_model_gate(name: str, gate: str | None) -> Call:
    return Call("POST", "/api/v1/models/{name}/gate", {"name": name}, json={"gate": gate})


# -- workflows -------------------------------------------------------------------------------------
def apply_workflow_files(files: dict[str, str]) -> Call:
    """Documents by file name -> YAML text, checked together by the server."""
    return Call("POST", "/api/v1/workflows", json={"files": files})


def workflow_documents(kind: str | None = "Workflow") -> Call:
    return Call("GET", "/api/v1/workflows", params=_query(kind=kind))


def workflow(name: str) -> Call:
    return Call("GET", "/api/v1/workflows/{name}", {"name": name})


def start_workflow_run(name: str, inputs: dict, wait: float = 0.0) -> Call:
    return Call(
        "POST",
        "/api/v1/workflows/{name}/runs",
        {"name": name},
        json={"input": inputs, "wait": wait},
        timeout=None if wait else httpx.USE_CLIENT_DEFAULT,
    )


def workflow_runs(state: str | None = None, limit: int = 50) -> Call:
    return Call("GET", "/api/v1/runs", params=_query(run_state=state, limit=limit))


def workflow_run(run_id: str) -> Call:
    return Call("GET", "/api/v1/runs/{workflow_run_id}", {"workflow_run_id": run_id})


def cancel_workflow_run(run_id: str) -> Call:
    return Call("POST", "/api/v1/runs/{workflow_run_id}/cancel", {"workflow_run_id": run_id})


def workflow_memories(workflow: str | None = None, key: str | None = None) -> Call:
    return Call("GET", "/api/v1/workflows/memory", params=_query(workflow=workflow, key=key))


def delete_workflow_memories(workflow: str | None = None, key: str | None = None, all: bool = False) -> Call:  # noqa: A002
    return Call(
        "DELETE",
        "/api/v1/workflows/memory",
        params=_query(workflow=workflow, key=key, all="true" if all else None),
    )


def approvals(state: str | None = "pending") -> Call:
    return Call("GET", "/api/v1/approvals", params=_query(approval_state=state))


def answer_approval(approval_id: str, answer: Any) -> Call:
    return Call(
        "POST", "/api/v1/approvals/{approval_id}", {"approval_id": approval_id}, json={"answer": answer}
    )


# -- capacity planner ----------------------------------------------------------------------------
def plan_calibrate(quick: bool = False, model: str | None = None) -> Call:
    """Start measuring the server's box in the background (minutes at full size)."""
    body: dict[str, Any] = {"quick": quick}
    if model:
        body["model"] = model
    return Call("POST", "/api/v1/plan/calibrate", json=body)


def plan_calibration_status() -> Call:
    return Call("GET", "/api/v1/plan/calibration/status")


def plan_calibration() -> Call:
    return Call("GET", "/api/v1/plan/calibration")


def plan_predict(**body: Any) -> Call:
    """model, target, slots, context, threads, task, users | rate, think_s, prompt_tokens, output_tokens."""
    return Call(
        "POST", "/api/v1/plan/predict", json={k: v for k, v in body.items() if v is not None}, timeout=None
    )


def plan_recommend(**intent: Any) -> Call:
    return Call(
        "POST",
        "/api/v1/plan/recommend",
        json={k: v for k, v in intent.items() if v is not None},
        timeout=None,
    )


def plan_render(config_id: str) -> Call:
    return Call("GET", "/api/v1/plan/configs/{config_id}/render", {"config_id": config_id})


def plan_gpus() -> Call:
    return Call("GET", "/api/v1/plan/gpus")


def plan_apply(config_id: str, wait_s: float = 300.0) -> Call:
    """Serve a recommended CPU configuration on the server's box: blocks through the reload's health check."""
    return Call("POST", "/api/v1/plan/apply", json={"config_id": config_id, "wait_s": wait_s}, timeout=None)


def plan_rollback() -> Call:
    """Undo the newest apply still in force (the previous default alias and llm settings, reloaded)."""
    return Call("POST", "/api/v1/plan/rollback", timeout=None)


def plan_applies() -> Call:
    return Call("GET", "/api/v1/plan/applies")


def plan_record_validation(validation: dict[str, Any]) -> Call:
    """config_id, users, requests, errors, rows [{metric, predicted, interval, measured, error,
    inside_interval}], slo_p95_ttft_ms, slo_predicted_met, slo_measured_met."""
    return Call("POST", "/api/v1/plan/validations", json=validation, timeout=None)  # may roll back


def plan_drop_refit(validation_id: str, dropped: bool = True) -> Call:
    """Drop (or restore) what one validation taught the model's refit factors."""
    return Call(
        "POST",
        "/api/v1/plan/validations/{validation_id}/refit",
        {"validation_id": validation_id},
        json={"dropped": dropped},
    )


def plan_refits() -> Call:
    return Call("GET", "/api/v1/plan/refits")


def plan_validations() -> Call:
    return Call("GET", "/api/v1/plan/validations")


def plan_intent(messages: list[dict[str, str]]) -> Call:
    """The intent the server's chat model reads from a conversation ([{role, content}], user and
    assistant turns): numbers only as the user said them, what is missing, the next question."""
    return Call("POST", "/api/v1/plan/intent", json={"messages": messages}, timeout=None)


# -- retrieval tuning --------------------------------------------------------------------------------
def calibrate_fusion(collection: str, eval_set: str | None = None) -> Call:
    return Call("POST", "/api/v1/retrieval/calibrate", json={"collection": collection, "eval_set": eval_set})


def collection_fusion(collection: str) -> Call:
    return Call("GET", "/api/v1/retrieval/fusion/{collection}", {"collection": collection})


def reset_fusion(collection: str) -> Call:
    return Call("DELETE", "/api/v1/retrieval/fusion/{collection}", {"collection": collection})


# -- fine-tuning ---------------------------------------------------------------------------------
def tune_embedder(
    collection: str,
    budget_seconds: float = 1800,
    max_steps: int = 2000,
    batch_size: int = 32,
    questions: int = 0,
    threads: int = 1,
    seed: int = 0,
    name: str | None = None,
    rollout: bool = False,
    rollout_min_gain: float = 0.0,
) -> Call:
    body = {
        "rollout": rollout,
        "rollout_min_gain": rollout_min_gain,
        "collection": collection,
        "budget_seconds": budget_seconds,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "questions": questions,
        "threads": threads,
        "seed": seed,
        "name": name,
    }
    return Call("POST", "/api/v1/tuning/embedder", json=body)


# -- a collection's embedder -------------------------------------------------------------------------
def collection_embedder(collection: str) -> Call:
    return Call("GET", "/api/v1/collections/{name}/embedder", {"name": collection})


def switch_embedder(collection: str, model: str, min_gain: float = 0.0, ungated: bool = False) -> Call:
    body = {"model": model, "min_gain": min_gain, "ungated": ungated}
    return Call("POST", "/api/v1/collections/{name}/embedder", {"name": collection}, json=body)


def confirm_embedder(collection: str) -> Call:
    return Call("POST", "/api/v1/collections/{name}/embedder/confirm", {"name": collection})


def rollback_embedder(collection: str) -> Call:
    return Call("POST", "/api/v1/collections/{name}/embedder/rollback", {"name": collection})
