"""Answer traces, ratings and their isolation, retention, regression items: the feedback service
in-process over real DuckDB, Tantivy, USearch and Huey, with the echo runtime as the chat model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from appliance.core.feedback import TraceWriter
from appliance.db.connection import Database
from appliance.db.keys import Principal
from appliance.db.migrations import migrate
from appliance.db.traces import TraceStore
from appliance.errors import InvalidInput, NotFound
from appliance.generate.prompts import ANSWER_PROMPT_VERSION, NO_ANSWER
from appliance.observability.metrics import Metrics
from tests.inprocess import echo_appliance, ingest

ALPHA = {"launch": "The alpha launch code is ZEBRA-4471. Launches happen on Tuesdays."}
BRAVO = {"okapi": "The bravo launch code is OKAPI-9902. The bravo team meets on Fridays."}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    appliance = echo_appliance(tmp_path_factory.mktemp("feedback") / "data", answer={"max_answer_tokens": 48})
    ingest(appliance, "alpha", ALPHA)
    ingest(appliance, "bravo", BRAVO)
    yield appliance
    appliance.close()


def user(key_id: str, *collections: str):
    def scope(app):
        return app.access.scope(Principal(key_id, key_id, "user", tuple(collections)))

    return scope


alice, bob = user("k_alice", "alpha"), user("k_bob", "bravo")


def metric(app, name: str, **labels) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


def test_an_answer_gets_an_id_and_a_complete_trace(app):
    answer = app.answers.answer(alice(app), "What is the alpha launch code?")
    assert answer.id.startswith("ans_")
    assert app.feedback.flush(10)
    trace = app.feedback.get_answer(alice(app), answer.id)
    assert trace.question == trace.query == "What is the alpha launch code?"
    assert trace.collections == ["alpha"] and trace.key_id == "k_alice" and trace.model == "echo"
    assert trace.prompt_version == ANSWER_PROMPT_VERSION
    assert trace.answer == answer.answer and trace.answer_chars == len(answer.answer)
    assert [r.source_id for r in trace.retrieved] == ["launch"] and trace.retrieved[0].score > 0
    assert [(s.n, s.source_id) for s in trace.sources] == [(1, "launch")]
    assert trace.citations == answer.citations
    assert trace.usage == answer.usage and trace.usage.completion_tokens > 0
    assert trace.latency_ms == answer.timings["total_ms"] and trace.timings == answer.timings
    assert 0 < trace.top_similarity <= 1 and trace.refused is False and trace.ratings == []
    # The query embedding is kept for drift: the same vector retrieval used.
    stored = app.traces.signals([answer.id]).embeddings
    expected = app.embedder.embed_query("What is the alpha launch code?")
    assert stored.shape == (1, 384) and np.allclose(stored[0], expected, atol=1e-6)


def test_a_streamed_answer_carries_its_id_in_the_last_event_and_is_traced(app):
    events = list(app.answers.open_stream(alice(app), "When do launches happen?"))
    final = events[-1]
    assert final["type"] == "answer" and final["id"].startswith("ans_")
    assert app.feedback.flush(10)
    trace = app.feedback.get_answer(alice(app), final["id"])
    assert trace.answer == final["answer"] and trace.latency_ms == final["timings"]["total_ms"]
    assert trace.usage.completion_tokens == final["usage"]["completion_tokens"]


def test_a_refusal_is_traced_and_a_trace_without_an_embedding_gets_one(app):
    # Nothing relevant: the no-answer reply without the model, recorded as refused.
    answer = app.answers.answer(alice(app), "Which enzyme splits starch in human saliva?")
    assert answer.answer == NO_ANSWER
    app.feedback.flush(10)
    refusal = app.feedback.get_answer(alice(app), answer.id)
    assert refusal.refused is True and refusal.usage.completion_tokens == 0
    # A keyword-only search embeds nothing: the writer embeds the query, off the answer's path.
    assert app.knowledge.search(alice(app), "ZEBRA-4471", mode="keyword").query_vector is None
    keyword = msgspec.structs.replace(refusal, id="ans_keyword", query="ZEBRA-4471", ratings=None)
    app.feedback.record(keyword, None)
    app.feedback.flush(10)
    stored = app.traces.signals(["ans_keyword"]).embeddings
    assert np.allclose(stored[0], app.embedder.embed_query("ZEBRA-4471"), atol=1e-6)


def test_conversation_turns_are_traced_with_their_conversation_and_rewritten_query(app):
    scope = alice(app)
    conv = app.answers.create_conversation(scope, ["alpha"])
    first = app.answers.converse(scope, conv.id, "What is the alpha launch code?")
    events = list(app.answers.converse(scope, conv.id, "and when do they launch?", stream=True))
    second = events[-1]
    app.feedback.flush(10)
    one = app.feedback.get_answer(scope, first.id)
    two = app.feedback.get_answer(scope, second["id"])
    assert one.conversation_id == two.conversation_id == conv.id
    assert two.question == "and when do they launch?" and two.query == second["query"]
    assert two.query != two.question  # the follow-up was rewritten (or joined) for retrieval


def test_ratings_round_trip_and_count_per_collection_model_and_rating(app):
    scope = alice(app)
    answer = app.answers.answer(scope, "What is the alpha launch code?")
    before = metric(app, "appliance_feedback_total", collection="alpha", model="echo", rating="down")
    rated = app.feedback.rate(scope, answer.id, "down", "wrong code", "ZEBRA-4471", ["launch"])
    assert (rated.rating, rated.comment, rated.correct_answer, rated.confirmed_sources) == (
        "down",
        "wrong code",
        "ZEBRA-4471",
        ["launch"],
    )
    assert (
        metric(app, "appliance_feedback_total", collection="alpha", model="echo", rating="down") == before + 1
    )
    # Rating again replaces the key's rating.
    app.feedback.rate(scope, answer.id, "up")
    trace = app.feedback.get_answer(scope, answer.id)
    assert [(r.key_id, r.rating, r.comment) for r in trace.ratings] == [("k_alice", "up", None)]
    page = app.feedback.list_feedback(scope, rating="up")
    assert answer.id in [i.answer_id for i in page.items] and page.total >= 1
    with pytest.raises(InvalidInput, match="rating must be one of"):
        app.feedback.rate(scope, answer.id, "meh")
    with pytest.raises(InvalidInput, match="not among the answer's sources"):
        app.feedback.rate(scope, answer.id, "down", confirmed_sources=["okapi"])
    with pytest.raises(InvalidInput, match="the limit is"):
        app.feedback.rate(scope, answer.id, "down", comment="x" * 5000)


def test_a_key_reaches_only_its_own_answers_over_collections_it_sees(app):
    mine = app.answers.answer(alice(app), "What is the alpha launch code?")
    theirs = app.answers.answer(bob(app), "What is the bravo launch code?")
    app.feedback.rate(bob(app), theirs.id, "up")
    for scope, foreign in ((alice(app), theirs.id), (bob(app), mine.id)):
        for attempt, args in ((app.feedback.get_answer, ()), (app.feedback.rate, ("down",))):
            with pytest.raises(NotFound) as err:
                attempt(scope, foreign, *args)
            # Exactly like an id that never existed.
            assert err.value.detail == f"answer {foreign!r} does not exist"
    with pytest.raises(NotFound) as missing:
        app.feedback.get_answer(alice(app), "ans_nothing")
    assert missing.value.detail == "answer 'ans_nothing' does not exist"
    # Another key over the same collection, and the same key after losing the collection: 404 too.
    with pytest.raises(NotFound):
        app.feedback.get_answer(user("k_carol", "alpha")(app), mine.id)
    with pytest.raises(NotFound):
        app.feedback.get_answer(user("k_alice", "bravo")(app), mine.id)
    with pytest.raises(NotFound):
        app.feedback.list_feedback(alice(app), collection="bravo")
    assert theirs.id not in [i.answer_id for i in app.feedback.list_feedback(alice(app)).items]
    assert theirs.id in [i.answer_id for i in app.feedback.list_feedback(bob(app)).items]
    # An admin reaches every answer and every rating.
    admin = app.access.system_scope()
    assert app.feedback.get_answer(admin, theirs.id).key_id == "k_bob"
    assert theirs.id in [i.answer_id for i in app.feedback.list_feedback(admin, collection="bravo").items]


def test_thumbs_down_answers_become_qa_items(app):
    scope = bob(app)
    answer = app.answers.answer(scope, "Which day does the bravo team meet?")
    unsure = app.answers.answer(scope, "Who leads the bravo team?")
    app.feedback.rate(scope, answer.id, "down", correct_answer="Fridays", confirmed_sources=["okapi"])
    app.feedback.rate(scope, unsure.id, "down", comment="no idea either")
    items = app.feedback.regression_items(scope, "bravo")
    by_question = {i["question"]: i for i in items}
    assert by_question["Which day does the bravo team meet?"] == {
        "id": f"feedback-{answer.id}",
        "question": "Which day does the bravo team meet?",
        "answers": ["Fridays"],
        "kind": "answerable",
        "gold": ["okapi"],
        "answer": "Fridays",
    }
    assert by_question["Who leads the bravo team?"]["answers"] == []
    assert by_question["Who leads the bravo team?"]["gold"] == []
    # Only answers rated down, and only what the caller reaches.
    assert all(i["question"] != "What is the bravo launch code?" for i in items)
    assert f"feedback-{answer.id}" not in [i["id"] for i in app.feedback.regression_items(alice(app))]


def test_traces_older_than_the_retention_are_pruned_with_their_ratings(app):
    scope = alice(app)
    answer = app.answers.answer(scope, "What is the alpha launch code?")
    app.feedback.flush(10)
    old = msgspec.structs.replace(
        app.feedback.get_answer(scope, answer.id),
        id="ans_old",
        created_at=(datetime.now(UTC) - timedelta(days=31)).isoformat(),
        ratings=None,
    )
    app.traces.insert([(old, None)])
    app.feedback.rate(scope, "ans_old", "down")
    assert app.feedback.prune() >= 1
    with pytest.raises(NotFound):
        app.feedback.get_answer(scope, "ans_old")
    assert app.traces.ratings("ans_old") == []
    assert app.feedback.get_answer(scope, answer.id).id == answer.id  # within the 30 days: kept
    # The scheduler's tick prunes at most once an hour.
    now = datetime.now(UTC)
    app.feedback.tick(now)
    app.traces.insert([(msgspec.structs.replace(old, id="ans_old2"), None)])
    assert app.feedback.tick(now + timedelta(minutes=5)) == 0
    assert app.feedback.tick(now + timedelta(hours=1, minutes=1)) == 1


def test_a_failing_trace_write_is_counted_never_raised(tmp_path):
    db = Database(tmp_path / "closed.duckdb")
    migrate(db)
    db.close()  # every write now fails
    metrics = Metrics()
    writer = TraceWriter(TraceStore(db), lambda q: np.zeros(4, np.float32), metrics, size=1)
    writer.start()
    trace = _trace()
    writer.submit(trace, None)
    assert writer.wait(trace.id, 10)
    writer.submit(msgspec.structs.replace(trace, id="ans_2"), None)
    writer.submit(msgspec.structs.replace(trace, id="ans_3"), None)  # may find the queue full
    writer.stop()
    failed = metrics.registry.get_sample_value("appliance_answer_traces_total", {"outcome": "failed"})
    dropped = metrics.registry.get_sample_value("appliance_answer_traces_total", {"outcome": "dropped"}) or 0
    assert failed >= 2 and failed + dropped == 3


def _trace():
    from appliance.records import Trace, Usage

    return Trace(
        id="ans_1",
        created_at=datetime.now(UTC).isoformat(),
        key_id="k",
        conversation_id=None,
        collections=["c"],
        question="q",
        query="q",
        model="m",
        prompt_version="v",
        answer="a",
        refused=False,
        citations=[],
        retrieved=[],
        sources=[],
        usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        timings={},
        top_similarity=None,
        answer_chars=1,
        latency_ms=1.0,
    )
