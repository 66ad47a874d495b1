"""`appliance eval` and /api/v1/evals on a live server: import, run with --wait, history, compare,
gates, worst items, errors as problem details, admin only, and the records in the OpenAPI document."""

from __future__ import annotations

import json

import pytest

from appliance.cli import main
from tests.conftest import TEST_MODEL_ENV, ServerProcess
from tests.core.evalsets import beir_set, write_jsonl


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    env = {**TEST_MODEL_ENV, "APPLIANCE_ANSWER__MAX_ANSWER_TOKENS": "24"}
    server = ServerProcess(tmp_path_factory.mktemp("evals-api") / "data", env=env).start(require_llm=True)
    yield server
    server.stop()


@pytest.fixture
def run_cli(srv, capsys):
    """The `appliance` command, in this process (the server is the live one)."""

    def run(*args: str) -> tuple[int, str]:
        code = main([*args, "--url", srv.url, "--key", srv.key])
        out = capsys.readouterr()
        return code, out.out + out.err

    return run


@pytest.fixture
def cli_json(run_cli):
    def run(*args: str, code: int = 0):
        got, out = run_cli(*args, "--json")
        assert got == code, out
        return json.loads(out)

    return run


def test_import_run_compare_and_gate_through_the_cli(run_cli, cli_json, tmp_path):
    root = beir_set(tmp_path / "topics")
    evalset = cli_json("eval", "import", str(root), "--name", "topics", "--wait")
    assert (evalset["kind"], evalset["item_count"], evalset["collection"]) == ("retrieval", 20, "topics")

    good = cli_json("eval", "run", "topics", "--wait")
    assert good["state"] == "succeeded" and good["progress"]["processed"] == 20
    assert {"ndcg@10", "recall@10", "recall@100", "mrr", "total_ms_p95"} <= set(good["scorecard"])
    assert good["scorecard"]["recall@100"] == pytest.approx(1.0)
    degraded = cli_json("eval", "run", "topics", "--top-k", "1", "--mode", "keyword", "--wait")

    compared = cli_json("eval", "compare", good["id"], degraded["id"])
    recall = next(m for m in compared["metrics"] if m["metric"] == "recall@10")
    assert recall["verdict"] == "regressed" and recall["high"] < 0
    code, human = run_cli("eval", "compare", good["id"], good["id"])
    assert code == 0 and "within noise" in human and "regressed" not in human

    gate = cli_json("eval", "gate-create", "floor", "--set", "topics", "--min", "recall@10=0.9")
    assert gate["thresholds"] == [{"metric": "recall@10", "min": 0.9}]
    assert cli_json("eval", "gate-check", "floor", "--run", good["id"])["state"] == "passed"
    code, failing = run_cli("eval", "gate-check", "floor", "--run", degraded["id"])
    assert code == 1 and "FAIL" in failing and "recall@10" in failing

    runs = cli_json("eval", "runs")
    assert [r["id"] for r in runs[:2]] == [degraded["id"], good["id"]]
    shown = cli_json("eval", "show", degraded["id"], "--items", "3")
    assert shown["run"]["id"] == degraded["id"] and len(shown["items"]) == 3
    code, listing = run_cli("eval", "sets")
    assert code == 0 and "topics" in listing
    assert "floor" in run_cli("eval", "gates")[1]


def test_a_qa_run_prints_the_answer_metrics(cli_json, tmp_path):
    root = tmp_path / "qa"
    write_jsonl(root / "corpus.jsonl", [{"_id": "t", "text": "The Eiffel Tower was completed in 1889."}])
    write_jsonl(
        root / "questions.jsonl",
        [
            {"question": "When was the Eiffel Tower completed?", "answers": ["1889"], "gold": ["t"]},
            {"question": "zqxv wibble plorth frumious?", "kind": "unanswerable"},
        ],
    )
    cli_json("eval", "import", str(root), "--name", "qa")
    run = cli_json("eval", "run", "qa", "--wait")
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
