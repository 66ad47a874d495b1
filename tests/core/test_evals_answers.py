"""A QA eval run with the real small chat model (SmolLM2-135M) in-process: answers, refusals,
citations, timings and tokens per item, and the model's identity in the run's configuration."""

from __future__ import annotations

import pytest

from appliance.config import load_settings
from appliance.core import Appliance
from appliance.generate.prompts import ANSWER_PROMPT_VERSION, NO_ANSWER
from appliance.models.manifest import SMOLLM2
from tests.conftest import TEST_MODEL_ENV
from tests.core.evalsets import write_jsonl


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    data = tmp_path_factory.mktemp("eval-answers") / "data"
    settings = load_settings(
        overrides={
            "data_dir": str(data),
            "llm": {"model": TEST_MODEL_ENV["APPLIANCE_LLM__MODEL"], "context_length": 2048},
            "answer": {"max_answer_tokens": 32},
            "eval": {"cost_per_1k_tokens": 0.5},
        },
        environ={},
    )
    app = Appliance(settings)
    app.start()
    yield app
    app.close()


def test_a_qa_run_answers_and_scores_every_item(appliance, tmp_path):
    admin = appliance.access.system_scope()
    root = tmp_path / "qa"
    write_jsonl(
        root / "corpus.jsonl",
        [
            {
                "_id": "tower",
                "title": "Eiffel Tower",
                "text": "The Eiffel Tower in Paris was completed in 1889. It is 330 metres tall.",
            },
            {
                "_id": "bridge",
                "title": "Golden Gate",
                "text": "The Golden Gate Bridge in San Francisco opened in 1937.",
            },
        ],
    )
    write_jsonl(
        root / "questions.jsonl",
        [
            {
                "id": "t",
                "question": "When was the Eiffel Tower completed?",
                "answers": ["1889"],
                "answer": "It was completed in 1889.",
                "gold": ["tower"],
            },
            {
                "id": "b",
                "question": "When did the Golden Gate Bridge open?",
                "answers": ["1937"],
                "gold": ["bridge"],
            },
            # Nothing in the corpus is about it: retrieval finds nothing relevant, and the answer
            # path refuses without asking the model.
            {
                "id": "u",
                "question": "zqxv wibble plorth frumious bandersnatch?",
                "kind": "unanswerable",
                "gold": [],
            },
        ],
    )
    evalset = appliance.evals.import_dir(admin, "qa", root)
    run = appliance.evals.start_run(admin, "qa", top_k=10)
    job = appliance.jobs.wait(run.job_id, timeout=300)
    assert job.state == "succeeded", job.error
    run = appliance.evals.get_run(admin, run.id)
    assert (evalset.kind, run.options.retrieval_only) == ("qa", False)

    config = run.config
    assert config["chat_model"]["name"] == SMOLLM2.name and config["chat_model"]["sha256"] == SMOLLM2.sha256
    assert config["prompt_version"] == ANSWER_PROMPT_VERSION and config["answer"]["max_answer_tokens"] == 32

    items = {o.item_id: o for o in appliance.evals.run_items(admin, run.id, order="ordinal")}
    assert all(o.state == "done" and o.answer for o in items.values())
    unanswerable = items["u"]
    assert unanswerable.answer == NO_ANSWER and unanswerable.refused
    assert unanswerable.scores == {"refusal_accuracy": 1.0}
    tower = items["t"]
    assert tower.retrieved[0].source_id == "tower" and tower.scores["recall@10"] == 1.0
    assert {"over_refusal", "accuracy", "token_f1", "grounded_rate"} <= set(tower.scores)
    if not tower.refused:  # SmolLM2's answer is what it is; its scores must follow from it
        assert tower.scores["accuracy"] == float("1889" in tower.answer)
        assert tower.scores["grounded_rate"] == float(any(c.source_id == "tower" for c in tower.citations))
    assert tower.usage.prompt_tokens > 0 and tower.timings["first_token_ms"] is not None

    card = run.scorecard
    assert card["refusal_accuracy"] == 1.0 and card["ndcg@10"] is not None
    assert {"accuracy", "token_f1", "over_refusal", "grounded_rate"} <= set(card)
    assert card["ttft_ms_p95"] is not None and card["total_ms_p99"] is not None
    assert card["prompt_tokens_per_query"] > 0 and card["cpu_seconds_per_query"] > 0
    tokens = [o.usage.total_tokens for o in items.values()]
    assert card["cost_per_query"] == pytest.approx(sum(tokens) / 3 / 1000 * 0.5, rel=1e-3)
