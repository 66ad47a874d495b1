"""Evaluation in-process over real DuckDB, Tantivy, USearch, Huey, the packaged embedder and the
small chat model (SmolLM2-135M): importing sets, runs as jobs, immutability, comparison, gates,
and a QA run's answers, refusals, timings, tokens and cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.core import Appliance
from appliance.errors import InvalidInput, NotFound
from appliance.evaluate.normalize import contains_answer
from appliance.generate.prompts import ANSWER_PROMPT_VERSION, NO_ANSWER
from appliance.models.manifest import SMOLLM2
from appliance.records import EvalRunOptions, GateThreshold, QAItem
from tests.conftest import TEST_MODEL_ENV
from tests.core.evalsets import TOPICS, beir_set, write_jsonl


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    data = tmp_path_factory.mktemp("evals") / "data"
    settings = load_settings(
        overrides={
            "data_dir": str(data),
            # The chat model loads in the background while the retrieval runs (which never ask it).
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


@pytest.fixture(scope="module")
def admin(appliance):
    return appliance.access.system_scope()


@pytest.fixture(scope="module")
def topics_set(appliance, admin, tmp_path_factory):
    """A retrieval set imported from files, its corpus ingested into the collection `topics`."""
    root = beir_set(tmp_path_factory.mktemp("sets") / "topics")
    evalset = appliance.evals.import_dir(admin, "topics", root)
    for job in evalset.ingest_jobs:
        assert appliance.jobs.wait(job).state == "succeeded"
    return evalset


def _finished(appliance, admin, run):
    job = appliance.jobs.wait(run.job_id)
    assert job.state == "succeeded", job.error
    return appliance.evals.get_run(admin, run.id)


@pytest.fixture(scope="module")
def runs(appliance, admin, topics_set):
    """Two runs of the same configuration and one deliberately degraded (top_k=1)."""
    start = appliance.evals.start_run
    good = start(admin, "topics", mode="hybrid", top_k=10)
    same = start(admin, "topics", mode="hybrid", top_k=10)
    degraded = start(admin, "topics", mode="hybrid", top_k=1)
    return {
        name: _finished(appliance, admin, r)
        for name, r in (("good", good), ("same", same), ("degraded", degraded))
    }


def test_importing_a_beir_set_ingests_its_corpus_under_its_own_ids(appliance, admin, topics_set):
    assert (topics_set.kind, topics_set.version, topics_set.item_count) == ("retrieval", 1, 20)
    assert (topics_set.collection, topics_set.corpus_documents, topics_set.used) == ("topics", 40, False)
    hits = appliance.knowledge.search(admin, "saxophone survey", ["topics"], mode="keyword").hits
    assert {h.source_id for h in hits[:2]} == {"saxophone-1", "saxophone-2"}
    stored = appliance.evals.get_set(admin, "topics", with_items=True).items
    assert stored[0].relevance == {f"{TOPICS[0]}-1": 2, f"{TOPICS[0]}-2": 1}


def test_a_run_is_a_job_with_progress_config_and_traceable_items(appliance, admin, runs):
    run = runs["good"]
    job = appliance.jobs.get(admin, run.job_id)
    assert (job.kind, job.state, job.progress.total, job.progress.processed) == ("eval", "succeeded", 20, 20)
    assert job.summary["run_id"] == run.id and job.summary["scorecard"] == run.scorecard
    card = run.scorecard
    assert card["items"] == 20 and card["failed"] == 0
    assert (
        card["recall@10"] == pytest.approx(1.0)
        and card["ndcg@10"] > 0.9
        and card["mrr"] == pytest.approx(1.0)
    )
    assert card["retrieval_ms_p95"] is not None and card["ttft_ms_p50"] is None  # no answers: retrieval only
    assert "accuracy" not in card
    config = run.config
    assert config["retrieval"]["mode"] == "hybrid" and config["retrieval"]["top_k"] == 10
    assert config["embedder"]["name"] and config["chat_model"] is None
    assert config["index"] == {
        "collection": "topics",
        "documents": 40,
        "chunks": 40,
        "generation": config["index"]["generation"],
    }
    assert config["prompt_version"].startswith("cited-answer-")
    items = appliance.evals.run_items(admin, run.id, order="ordinal", limit=100)
    assert len(items) == 20 and items[0].retrieved[0].source_id in {f"{TOPICS[0]}-1", f"{TOPICS[0]}-2"}
    # The scorecard is the items' mean: any number traces back to them.
    assert card["ndcg@10"] == pytest.approx(sum(i.scores["ndcg@10"] for i in items) / 20, abs=1e-6)
    worst = appliance.evals.run_items(admin, runs["degraded"].id, limit=3)
    assert [w.scores["ndcg@10"] for w in worst] == sorted(w.scores["ndcg@10"] for w in worst)
    assert appliance.evals.list_runs(admin, "topics")[0].set_name == "topics"


def test_compare_flags_a_degraded_configuration_and_not_a_repeat(appliance, admin, runs):
    repeat = {m.metric: m for m in appliance.evals.compare(admin, runs["good"].id, runs["same"].id).metrics}
    quality = ("ndcg@10", "recall@10", "recall@100", "precision@10", "mrr")
    assert all(repeat[m].verdict == "within noise" for m in quality)
    degraded = appliance.evals.compare(admin, runs["good"].id, runs["degraded"].id)
    by_metric = {m.metric: m for m in degraded.metrics}
    assert degraded.paired_items == 20
    recall = by_metric["recall@10"]
    assert recall.b == pytest.approx(0.5) and recall.high < 0 and recall.verdict == "regressed"
    assert by_metric["precision@10"].verdict == "regressed"


def test_gates_pass_and_fail_absolute_and_against_a_baseline(appliance, admin, runs):
    evals = appliance.evals
    evals.create_gate(admin, "recall-floor", "topics", [GateThreshold(metric="recall@10", min=0.9)])
    assert evals.check_gate(admin, "recall-floor", runs["good"].id).state == "passed"
    failed = evals.check_gate(admin, "recall-floor", runs["degraded"].id)
    assert failed.state == "failed" and failed.checks[0].value == pytest.approx(0.5)
    evals.create_gate(
        admin,
        "no-regression",
        "topics",
        [
            GateThreshold(metric="recall@10", max_regression=0.05),
            GateThreshold(metric="total_ms_p95", max=60_000),
        ],
        baseline_run=runs["good"].id,
        run_options=EvalRunOptions(collection="topics", top_k=10),
    )
    report = evals.check_gate(admin, "no-regression", runs["degraded"].id)
    assert [(c.bound, c.passed) for c in report.checks] == [("max_regression", False), ("max", True)]
    assert report.baseline_run == runs["good"].id and report.checks[0].baseline == pytest.approx(1.0)
    # Without a run, the gate runs its set with its run options.
    fresh = evals.check_gate(admin, "no-regression")
    assert fresh.state == "passed" and fresh.run_id not in {r.id for r in runs.values()}
    assert [g.name for g in evals.list_gates(admin)] == ["no-regression", "recall-floor"]
    with pytest.raises(InvalidInput, match="need a baseline run"):
        evals.create_gate(admin, "bad", "topics", [GateThreshold(metric="mrr", min_delta=0.1)])
    with pytest.raises(NotFound):
        evals.check_gate(admin, "no-such-gate", runs["good"].id)


def test_a_set_is_immutable_once_a_run_used_it(appliance, admin, tmp_path):
    root = tmp_path / "small"
    write_jsonl(
        root / "questions.jsonl", [{"id": "a", "question": "saxophone survey log?", "gold": ["saxophone-1"]}]
    )
    first = appliance.evals.import_dir(admin, "small", root, collection="topics")
    assert (first.version, first.kind, first.collection, first.ingest_jobs) == (1, "qa", None, [])
    # Unused: a changed import replaces version 1 in place.
    write_jsonl(
        root / "questions.jsonl", [{"id": "a", "question": "volcano survey log?", "gold": ["volcano-1"]}]
    )
    replaced = appliance.evals.import_dir(admin, "small", root)
    assert replaced.version == 1 and replaced.content_hash != first.content_hash
    run = appliance.evals.start_run(admin, "small", collection="topics", top_k=10, retrieval_only=True)
    _finished(appliance, admin, run)
    assert appliance.evals.get_set(admin, "small").used
    # Used: the same content is the same version; new content is version 2, version 1 unchanged.
    assert appliance.evals.import_dir(admin, "small", root).version == 1
    write_jsonl(
        root / "questions.jsonl", [{"id": "a", "question": "glacier survey log?", "gold": ["glacier-1"]}]
    )
    second = appliance.evals.import_dir(admin, "small", root)
    assert second.version == 2 and not second.used
    v1 = appliance.evals.get_set(admin, "small", version=1, with_items=True)
    assert v1.used and v1.items[0].question == "volcano survey log?"
    assert appliance.evals.get_run(admin, run.id).set_version == 1
    assert [s.version for s in appliance.evals.list_sets(admin, all_versions=True) if s.name == "small"] == [
        1,
        2,
    ]


def test_a_generated_qa_set_from_memory_runs_against_its_collection(appliance, admin, topics_set):
    items = [
        QAItem(
            question="Where are the lighthouse field notes?",
            answer="the lighthouse log",
            gold=["lighthouse-1"],
        ),
        {"question": "What about the orchard?", "answers": ["orchard"], "gold": ["orchard-2"], "id": "o"},
        QAItem(question="Is there a note on unicorns?", kind="unanswerable"),
    ]
    evalset = appliance.evals.create_qa_set(admin, "gen", items, kind="generated", collection="topics")
    assert (evalset.kind, evalset.item_count, evalset.answerable, evalset.unanswerable) == (
        "generated",
        3,
        2,
        1,
    )
    assert (evalset.collection, evalset.origin) == ("topics", "generated")
    run = _finished(appliance, admin, appliance.evals.start_run(admin, "gen", top_k=10, retrieval_only=True))
    assert run.options.collection == "topics" and run.scorecard["recall@10"] == pytest.approx(1.0)
    with pytest.raises(InvalidInput, match="kind 'mystery'"):
        appliance.evals.create_qa_set(admin, "gen2", items, kind="mystery")
    with pytest.raises(InvalidInput, match=r"items\[0\]: question is empty"):
        appliance.evals.create_qa_set(admin, "gen2", [QAItem(question=" ")])


def test_bad_requests_are_clear_errors(appliance, admin, topics_set):
    with pytest.raises(InvalidInput, match="qrels/test.tsv:2: document 'ghost' names no document"):
        appliance.evals.import_files(
            admin,
            "broken",
            {
                "corpus.jsonl": '{"_id": "d1", "text": "x"}\n',
                "queries.jsonl": '{"_id": "q1", "text": "x"}\n',
                "qrels/test.tsv": "q1\td1\t1\nq1\tghost\t1\n",
            },
        )
    with pytest.raises(NotFound):
        appliance.evals.get_set(admin, "broken")
    with pytest.raises(InvalidInput, match="carries no corpus"):
        appliance.evals.create_qa_set(admin, "nocorpus", [QAItem(question="q?")])
        appliance.evals.start_run(admin, "nocorpus")
    with pytest.raises(NotFound):
        appliance.evals.start_run(admin, "topics", collection="no-such-collection")
    with pytest.raises(InvalidInput, match="unknown search mode"):
        appliance.evals.start_run(admin, "topics", mode="psychic")
    with pytest.raises(InvalidInput, match="unknown judge 'oracle'"):
        appliance.evals.start_run(admin, "topics", judge="oracle")
    with pytest.raises(InvalidInput, match="a retrieval-only run has none"):
        appliance.evals.start_run(admin, "topics", judge="llm")  # a retrieval set
    with pytest.raises(InvalidInput, match="different sets"):
        other = appliance.evals.create_qa_set(admin, "other", [QAItem(question="q?")], collection="topics")
        a = appliance.evals.start_run(admin, other.name, retrieval_only=True)
        b = appliance.evals.start_run(admin, "topics", top_k=5)
        appliance.evals.compare(admin, a.id, b.id)


def test_a_qa_run_with_the_small_chat_model_answers_and_scores_every_item(appliance, admin, tmp_path):
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
    run = appliance.evals.start_run(admin, "qa", top_k=10, judge="llm")
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
    # The answers are the answer path's own, checked by its citation verifier (lexical by default).
    assert config["answer"]["verify_citations"] == "lexical"
    answered = [o for o in items.values() if o.kind != "unanswerable" and not o.refused]
    assert answered and any("unsupported_rate" in o.scores for o in answered)
    # The chat model judged each answered item against its gold answer; refusals are judged wrong.
    assert config["judge"] == "llm" and run.options.judge == "llm"
    for o in (items["t"], items["b"]):
        assert o.scores["judge_correct"] in (0.0, 1.0) and o.timings["judge_ms"] is not None
        if o.refused:
            assert o.scores["judge_correct"] == 0.0
    assert "judge_correct" not in unanswerable.scores and run.scorecard["judge_correct"] is not None
    assert tower.usage.prompt_tokens > 0 and tower.timings["first_token_ms"] is not None

    card = run.scorecard
    assert card["refusal_accuracy"] == 1.0 and card["ndcg@10"] is not None
    assert {"accuracy", "token_f1", "over_refusal", "grounded_rate"} <= set(card)
    assert card["ttft_ms_p95"] is not None and card["total_ms_p99"] is not None
    assert card["prompt_tokens_per_query"] > 0 and card["cpu_seconds_per_query"] > 0
    tokens = [o.usage.total_tokens for o in items.values()]
    assert card["cost_per_query"] == pytest.approx(sum(tokens) / 3 / 1000 * 0.5, rel=1e-3)


def _wait_for_chat_model(appliance) -> None:
    import time

    deadline = time.monotonic() + 300
    while appliance.models.health()["state"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert appliance.models.health()["state"] == "loaded"


SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def test_a_generated_set_is_written_by_the_chat_model_and_its_gold_holds_the_answers(appliance, admin):
    job_id = appliance.knowledge.ingest_folder(admin, SAMPLE, "handbook")
    assert appliance.jobs.wait(job_id).state == "succeeded"
    _wait_for_chat_model(appliance)
    job = appliance.eval_sources.generate(
        admin, "handbook", n=2, name="handbook-gen", unanswerable_fraction=0.0
    )
    assert job.kind == "evalgen" and job.collection == "handbook"
    done = appliance.jobs.wait(job.id)
    assert done.state == "succeeded", done.error
    report = done.summary["report"]
    assert report["produced"] >= 1 and report["candidates"] >= report["produced"]
    generated = appliance.evals.get_set(admin, "handbook-gen", with_items=True)
    assert generated.kind == "generated" and generated.collection == "handbook"
    assert done.summary["set"] == {"name": "handbook-gen", "version": generated.version}
    for item in generated.items:
        [gold] = item.gold
        document = next(
            d for d in appliance.knowledge.list_documents(admin, "handbook").documents if d.source_id == gold
        )
        chunks = appliance.knowledge.get_document(admin, document.id, with_chunks=True).chunks
        assert item.answers and any(contains_answer(c.text, item.answers[0]) for c in chunks), item


def test_generation_and_feedback_sets_refuse_what_they_cannot_do(appliance, admin, topics_set):
    with pytest.raises(NotFound):
        appliance.eval_sources.generate(admin, "no-such-collection", n=5)
    with pytest.raises(InvalidInput):
        appliance.eval_sources.generate(admin, "topics", n=0)
    with pytest.raises(InvalidInput, match="rated down"):
        appliance.eval_sources.from_feedback(admin, "topics")
