"""`appliance eval` and /api/v1/evals on a live server: import, run with --wait, history, compare,
gates, worst items, errors as problem details, admin only, and the records in the OpenAPI document."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TEST_MODEL_ENV, ServerProcess
from tests.core.evalsets import beir_set, write_jsonl
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    env = {**TEST_MODEL_ENV, "APPLIANCE_ANSWER__MAX_ANSWER_TOKENS": "24"}
    server = ServerProcess(tmp_path_factory.mktemp("evals-api") / "data", env=env).start(require_llm=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env(srv):
    return {"APPLIANCE_URL": srv.url, "APPLIANCE_KEY": srv.key}


def _json(*args: str, env: dict, code: int = 0):
    done = run_cli(*args, "--json", env=env)
    assert done.returncode == code, done.stderr + done.stdout
    return json.loads(done.stdout)


def test_import_run_compare_and_gate_through_the_cli(srv, env, tmp_path):
    root = beir_set(tmp_path / "topics")
    evalset = _json("eval", "import", str(root), "--name", "topics", "--wait", env=env)
    assert (evalset["kind"], evalset["item_count"], evalset["collection"]) == ("retrieval", 20, "topics")

    good = _json("eval", "run", "topics", "--wait", env=env)
    assert good["state"] == "succeeded" and good["progress"]["processed"] == 20
    assert {"ndcg@10", "recall@10", "recall@100", "mrr", "total_ms_p95"} <= set(good["scorecard"])
    assert good["scorecard"]["recall@100"] == pytest.approx(1.0)
    degraded = _json("eval", "run", "topics", "--top-k", "1", "--mode", "keyword", "--wait", env=env)

    compared = _json("eval", "compare", good["id"], degraded["id"], env=env)
    recall = next(m for m in compared["metrics"] if m["metric"] == "recall@10")
    assert recall["verdict"] == "regressed" and recall["high"] < 0
    human = run_cli("eval", "compare", good["id"], good["id"], env=env)
    assert human.returncode == 0 and "within noise" in human.stdout and "regressed" not in human.stdout

    gate = _json("eval", "gate-create", "floor", "--set", "topics", "--min", "recall@10=0.9", env=env)
    assert gate["thresholds"] == [{"metric": "recall@10", "min": 0.9}]
    assert _json("eval", "gate-check", "floor", "--run", good["id"], env=env)["state"] == "passed"
    failing = run_cli("eval", "gate-check", "floor", "--run", degraded["id"], env=env)
    assert failing.returncode == 1 and "FAIL" in failing.stdout and "recall@10" in failing.stdout

    runs = _json("eval", "runs", env=env)
    assert [r["id"] for r in runs[:2]] == [degraded["id"], good["id"]]
    shown = _json("eval", "show", degraded["id"], "--items", "3", env=env)
    assert shown["run"]["id"] == degraded["id"] and len(shown["items"]) == 3
    listing = run_cli("eval", "sets", env=env)
    assert listing.returncode == 0 and "topics" in listing.stdout
    assert "floor" in run_cli("eval", "gates", env=env).stdout


def test_a_qa_run_prints_the_answer_metrics(srv, env, tmp_path):
    root = tmp_path / "qa"
    write_jsonl(root / "corpus.jsonl", [{"_id": "t", "text": "The Eiffel Tower was completed in 1889."}])
    write_jsonl(
        root / "questions.jsonl",
        [
            {"question": "When was the Eiffel Tower completed?", "answers": ["1889"], "gold": ["t"]},
            {"question": "zqxv wibble plorth frumious?", "kind": "unanswerable"},
        ],
    )
    _json("eval", "import", str(root), "--name", "qa", env=env)
    run = _json("eval", "run", "qa", "--wait", env=env)
    card = run["scorecard"]
    assert run["config"]["chat_model"]["name"] == TEST_MODEL_ENV["APPLIANCE_LLM__MODEL"]
    assert {"ndcg@10", "accuracy", "refusal_accuracy", "citation_precision", "ttft_ms_p95"} <= set(card)
    assert card["refusal_accuracy"] == 1.0


def test_the_api_is_admin_only_with_problem_details_and_typed_records(srv):
    with srv.client() as admin:
        admin.post("/api/v1/collections", json={"name": "kb"})
        key = admin.post("/api/v1/keys", json={"name": "u", "role": "user", "collections": ["kb"]}).json()[
            "key"
        ]
        bad = admin.post(
            "/api/v1/evals/sets",
            json={"name": "bad", "files": {"questions.jsonl": '{"question": "ok"}\n{"id": 1}\n'}},
        )
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
        assert "questions.jsonl:2: missing field 'question'" in bad.json()["detail"]
        both = admin.post("/api/v1/evals/sets", json={"name": "x", "path": "/nonexistent", "files": {}})
        assert both.status_code == 400
        assert admin.get("/api/v1/evals/runs/run_missing").status_code == 404
        schemas = admin.get("/schema/openapi.json").json()["components"]["schemas"]
        assert {"EvalSet", "EvalRun", "EvalOutcome", "RunComparison", "GateReport"} <= set(schemas)
    with srv.client(key) as user:
        assert user.get("/api/v1/evals/sets").status_code == 403
        assert user.post("/api/v1/evals/gates/floor/check", json={}).status_code == 403
