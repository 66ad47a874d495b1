"""Contract of the request builders: every call names a route, method, parameters and body fields
that the live server's OpenAPI document declares, with the body's required fields present."""

from __future__ import annotations

import inspect

import httpx
import pytest

from appliance.client import calls, platform_calls
from appliance.client.calls import Call

# One example per builder, with every optional argument given (so every field it can send is checked).
EXAMPLES: dict[str, Call] = {
    "ready": calls.ready(),
    "ops": calls.ops(),
    "backup": calls.backup("nightly"),
    "verify_chunks": calls.verify_chunks("docs", repair=True),
    "stats": calls.stats(),
    "logs": calls.logs("warning", limit=10, after=3),
    "models": calls.models(),
    "load_model": calls.load_model("SmolLM2-135M-Instruct"),
    "unload_model": calls.unload_model(),
    "chat_models": calls.chat_models(),
    "collections": calls.collections(),
    "create_collection": calls.create_collection("docs", "the handbook"),
    "documents": calls.documents("docs", limit=5, offset=10),
    "document": calls.document("d/1", chunks=True),
    "delete_document": calls.delete_document("d1"),
    "upload": calls.upload("docs", "a.md", b"# A", source_id="handbook/a.md"),
    "submit_batch": calls.submit_batch("docs", [{"text": "x"}], wait=True),
    "jobs": calls.jobs("failed", limit=5),
    "job": calls.job("j1", items=True),
    "cancel_job": calls.cancel_job("j1"),
    "retry_job": calls.retry_job("j1"),
    "sources": calls.sources(),
    "add_source": calls.add_source(
        {
            "kind": "git",
            "location": "/srv/git/handbook",
            "collection": "docs",
            "name": "handbook",
            "branch": "main",
            "schedule": "daily",
            "include": ["docs/**"],
            "exclude": [],
            "history": False,
            "fetch": False,
            "github_repo": "acme/handbook",
        }
    ),
    "sync_source": calls.sync_source("handbook"),
    "remove_source": calls.remove_source("handbook", delete_documents=True),
    "quarantine": calls.quarantine("docs", "inbox", limit=5),
    "search": calls.search("per diem", ["docs"], top_k=3, mode="hybrid"),
    "ask": calls.ask("per diem?", ["docs"], top_k=3, model="default"),
    "create_conversation": calls.create_conversation(["docs"], "travel"),
    "conversations": calls.conversations(),
    "conversation": calls.conversation("c1"),
    "send_message": calls.send_message("c1", "and in Asia?", model="default"),
    "keys": calls.keys(),
    "create_key": calls.create_key("ci", "user", ["docs"], rpm=60, tpm=1000),
    "revoke_key": calls.revoke_key("k1"),
    "audit": calls.audit(limit=5),
    "answer_trace": calls.answer_trace("ans_1"),
    "rate_answer": calls.rate_answer("ans_1", "down", "wrong", "75 EUR", ["travel.md"]),
    "feedback": calls.feedback("docs", "down", limit=5, offset=10),
    "drift": calls.drift("docs"),
    "check_drift": calls.check_drift(
        "docs",
        {"first_n": 200, "after": "2025-03-01T00:00:00Z"},
        {"start": "2025-03-04", "end": "2025-03-05"},
    ),
    "eval_sets": calls.eval_sets(all_versions=True),
    "eval_set": calls.eval_set("clapnq", version=2, items=True),
    "import_eval_set": calls.import_eval_set(
        "clapnq", {"questions.jsonl": '{"question": "q"}'}, path=None, collection="docs", description="d"
    ),
    "generate_eval_set": calls.generate_eval_set("docs", 20, "docs-gen", 7, "default", 0.25),
    "feedback_eval_set": calls.feedback_eval_set("docs", "docs-regressions"),
    "tune_embedder": platform_calls.tune_embedder("docs", 600, 100, 16, 10, 2, 3, "docs-embedder"),
    "start_eval_run": calls.start_eval_run("clapnq", "docs", "hybrid", 10, 5, True, "default"),
    "eval_runs": calls.eval_runs("clapnq", limit=5),
    "eval_run": calls.eval_run("run_1"),
    "eval_run_items": calls.eval_run_items("run_1", "worst", "ndcg@10", limit=5, offset=5),
    "compare_eval_runs": calls.compare_eval_runs("run_1", "run_2"),
    "eval_gates": calls.eval_gates(),
    "create_eval_gate": calls.create_eval_gate(
        {
            "name": "release",
            "set": "clapnq",
            "thresholds": [{"metric": "ndcg@10", "min": 0.3}],
            "baseline_run": "run_1",
            "run_options": {"collection": "docs"},
            "description": "d",
        }
    ),
    "check_eval_gate": calls.check_eval_gate("release", "run_1"),
    "apply_workflow_files": platform_calls.apply_workflow_files({"flow.yaml": "kind: Workflow\nname: f\n"}),
    "workflow_documents": platform_calls.workflow_documents("Agent"),
    "workflow": platform_calls.workflow("sleepy"),
    "start_workflow_run": platform_calls.start_workflow_run("sleepy", {"msg": "hi"}, wait=5),
    "workflow_runs": platform_calls.workflow_runs("waiting", limit=5),
    "workflow_run": platform_calls.workflow_run("wfr_1"),
    "cancel_workflow_run": platform_calls.cancel_workflow_run("wfr_1"),
    "approvals": platform_calls.approvals("pending"),
    "answer_approval": platform_calls.answer_approval("apr_1", {"publish": True}),
    "feedback_summary": calls.feedback_summary(30),
    "registry_models": platform_calls.registry_models(),
    "registry_model": platform_calls.registry_model("gemma"),
    "registry_history": platform_calls.registry_history("gemma"),
    "import_model": platform_calls.import_model("/srv/models/gemma.gguf", name="gemma"),
    "import_remote_model": platform_calls.import_remote_model(
        "https://gpu.internal:8000/v1",
        "Qwen/Qwen2.5-72B-Instruct",
        name="qwen72",
        api_key_file="/etc/appliance/gpu.key",
        capacity=8,
        context_length=32768,
    ),
    "promote_model": platform_calls.promote_model("gemma", 2, "production", reason="passed", run="run_1"),
    "rollback_model": platform_calls.rollback_model("gemma", "production", reason="regressed"),
    "set_model_gate": platform_calls.set_model_gate("gemma", "release"),
    "start_canary": platform_calls.start_canary("gemma", 3, [5, 25, 50, 100], min_samples=20),
    "set_shadow": platform_calls.set_shadow("gemma", 3, share=0.5),
    "shadow_report": platform_calls.shadow_report("gemma", recent=5),
    "plan_calibrate": platform_calls.plan_calibrate(quick=True, model="SmolLM2-135M-Instruct"),
    "plan_calibration": platform_calls.plan_calibration(),
    "plan_calibration_status": platform_calls.plan_calibration_status(),
    "plan_predict": platform_calls.plan_predict(
        model="m",
        target="cpu",
        slots=2,
        context=4096,
        threads=1,
        refit=False,
        task="rag",
        users=3,
        rate=None,
        think_s=1.0,
        prompt_tokens=100,
        output_tokens=50,
    ),
    "plan_recommend": platform_calls.plan_recommend(
        task="chat",
        users=3,
        rate=None,
        think_s=0.0,
        prompt_tokens=100,
        output_tokens=50,
        priority="cost",
        p95_ttft_ms=2000.0,
        tokens_per_s_per_user=5.0,
        budget_usd_month=500.0,
        memory_bytes=2**30,
        energy_usd_per_kwh=0.2,
        box_usd_month=80.0,
        box_watts=120.0,
        top=5,
        gpus=False,
    ),
    "plan_render": platform_calls.plan_render("m@cpu-s1-c2048-t1"),
    "plan_gpus": platform_calls.plan_gpus(),
    "plan_apply": platform_calls.plan_apply("m@cpu-s1-c2048-t1", wait_s=60.0),
    "plan_rollback": platform_calls.plan_rollback(),
    "plan_applies": platform_calls.plan_applies(),
    "plan_record_validation": platform_calls.plan_record_validation(
        {
            "config_id": "m@cpu-s1-c2048-t1",
            "users": 2,
            "requests": 10,
            "errors": 0,
            "rows": [
                {
                    "metric": "p95 ttft",
                    "predicted": 100.0,
                    "interval": [80.0, 130.0],
                    "measured": 110.0,
                    "error": -0.09,
                    "inside_interval": True,
                    "raw_predicted": 90.0,
                }
            ],
            "slo_p95_ttft_ms": 500.0,
            "slo_predicted_met": True,
            "slo_measured_met": True,
            "model": "m",
            "slots": 1,
            "context": 2048,
            "calibration_id": "c1",
            "auto_rollback": True,
        }
    ),
    "plan_validations": platform_calls.plan_validations(),
    "plan_drop_refit": platform_calls.plan_drop_refit("v1", dropped=False),
    "plan_refits": platform_calls.plan_refits(),
    "plan_intent": platform_calls.plan_intent(
        [{"role": "user", "content": "a chat assistant"}, {"role": "assistant", "content": "How many users?"}]
    ),
    "calibrate_fusion": platform_calls.calibrate_fusion("docs", eval_set="docs-generated"),
    "collection_fusion": platform_calls.collection_fusion("docs"),
    "reset_fusion": platform_calls.reset_fusion("docs"),
    "collection_embedder": platform_calls.collection_embedder("docs"),
    "switch_embedder": platform_calls.switch_embedder("docs", "mpnet", min_gain=0.01),
    "confirm_embedder": platform_calls.confirm_embedder("docs"),
    "rollback_embedder": platform_calls.rollback_embedder("docs"),
    "workflow_memories": platform_calls.workflow_memories("triage", key="k1"),
    "delete_workflow_memories": platform_calls.delete_workflow_memories("triage", all=False),
}


def test_every_builder_has_an_example():
    builders = {
        name
        for module in (calls, platform_calls)
        for name, f in vars(module).items()
        if inspect.isfunction(f) and f.__module__ == module.__name__ and not name.startswith("_")
    }
    assert builders == set(EXAMPLES)


@pytest.fixture(scope="module")
def openapi(server) -> dict:
    with server.client() as c:
        r = c.get("/schema/openapi.json")
    assert r.status_code == 200, r.text
    return r.json()


def _schema(doc: dict, schema: dict) -> dict:
    if "$ref" in schema:
        return doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_builder_matches_the_servers_openapi_document(openapi, name):
    call = EXAMPLES[name]
    assert call.route in openapi["paths"], f"{call.route} is not a route of the server"
    operation = openapi["paths"][call.route].get(call.method.lower())
    assert operation is not None, f"{call.method} {call.route} is not an operation of the server"
    declared = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
    assert {("path", n) for n in call.path_params} == {d for d in declared if d[0] == "path"}
    assert {("query", n) for n in call.params or {}} <= declared
    body = operation.get("requestBody")
    if call.json is not None or call.data is not None:
        assert body is not None, f"{name} sends a body the route does not take"
        media = "multipart/form-data" if call.files else "application/json"
        schema = _schema(openapi, body["content"][media]["schema"])
        sent = set(call.json or {}) | set(call.data or {}) | set(call.files or {})
        assert sent <= set(schema.get("properties", {})), f"{name} sends fields the route does not declare"
        assert set(schema.get("required", [])) <= sent, f"{name} leaves out required fields"
    else:
        assert body is None or not body.get("required"), f"{name} sends no body to a route that needs one"


def test_path_parameters_are_one_segment_each():
    assert calls.document("a/b c").path == "/api/v1/documents/a%2Fb%20c"
    assert calls.sync_source("hand book").path == "/api/v1/sources/hand%20book/sync"


def test_unset_options_are_left_to_the_server():
    assert calls.search("q").json == {"query": "q", "top_k": 10}
    assert calls.documents().params == {"limit": 100, "offset": 0}
    assert calls.jobs().params == {"limit": 50}
    assert calls.ask("q").json == {"query": "q", "stream": True} and calls.ask("q").stream
    assert calls.ask("q").timeout is None and calls.collections().timeout is httpx.USE_CLIENT_DEFAULT


def test_results_are_picked_out_of_their_envelopes():
    assert calls.sources().result({"sources": [{"name": "a"}]}) == [{"name": "a"}]
    assert calls.quarantine().result({"files": []}) == []
    models = {
        "data": [
            {"id": "chat", "capabilities": ["chat"]},
            {"id": "embedding", "capabilities": ["embeddings"]},
        ]
    }
    assert calls.chat_models().result(models) == [{"id": "chat", "capabilities": ["chat"]}]
