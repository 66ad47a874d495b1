"""The retrieval and answer caches: hits for the same request, misses exactly after a change."""

from __future__ import annotations

import pytest

from appliance.models.echo import EchoRuntime
from tests.inprocess import echo_appliance, ingest


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = echo_appliance(tmp_path_factory.mktemp("caches") / "data", answer={"max_answer_tokens": 24})
    ingest(app, "alpha", {"launch": "The alpha launch code is ZEBRA-4471. Launches happen on Tuesdays."})
    ingest(app, "bravo", {"okapi": "The bravo launch code is OKAPI-9902. The bravo team meets on Fridays."})
    yield app
    app.close()


@pytest.fixture(scope="module")
def admin(app):
    return app.access.system_scope()


def lookups(app, cache: str, outcome: str) -> float:
    return app.metrics.cache_lookups.labels(cache=cache, outcome=outcome)._value.get()


def test_a_repeated_search_is_served_from_the_cache_until_its_collection_changes(app, admin):
    first = app.knowledge.search(admin, "launch code", ["alpha"], top_k=5)
    again = app.knowledge.search(admin, "launch code", ["alpha"], top_k=5)
    assert not first.cached and again.cached
    assert [h.chunk_id for h in again.hits] == [h.chunk_id for h in first.hits]
    other = app.knowledge.search(admin, "launch code", ["bravo"], top_k=5)
    assert not other.cached  # another collection is another entry
    # A different depth, mode or an explicit bypass is not served from it.
    assert not app.knowledge.search(admin, "launch code", ["alpha"], top_k=4).cached
    assert not app.knowledge.search(admin, "launch code", ["alpha"], top_k=5, mode="keyword").cached
    assert not app.knowledge.search(admin, "launch code", ["alpha"], top_k=5, cache=False).cached

    ingest(app, "alpha", {"gate": "The alpha launch code for the gate is HERON-1234."})
    after = app.knowledge.search(admin, "launch code", ["alpha"], top_k=5)
    assert not after.cached and "gate" in {h.source_id for h in after.hits}
    # bravo did not change: its entry still serves.
    assert app.knowledge.search(admin, "launch code", ["bravo"], top_k=5).cached

    app.knowledge.delete_document(admin, next(h.document_id for h in after.hits if h.source_id == "gate"))
    gone = app.knowledge.search(admin, "launch code", ["alpha"], top_k=5)
    assert not gone.cached and "gate" not in {h.source_id for h in gone.hits}
    assert lookups(app, "retrieval", "hit") == 2 and lookups(app, "embedding", "hit") >= 3


def test_a_repeated_answer_is_cached_with_its_citations_and_spends_no_tokens(app, admin):
    question = "What is the bravo launch code?"
    first = app.answers.answer(admin, question, ["bravo"])
    again = app.answers.answer(admin, question, ["bravo"])
    assert not first.cached and again.cached
    assert again.answer == first.answer and again.citations == first.citations
    assert again.id != first.id and again.usage.completion_tokens == 0 < first.usage.completion_tokens
    # Each answer keeps its own trace, so a cached one can be rated like any other.
    app.feedback.flush(10)
    assert app.feedback.get_answer(admin, again.id).answer == again.answer

    # Streamed: the same answer, replayed as one token event.
    events = list(app.answers.open_stream(admin, question, ["bravo"]))
    final = events[-1]
    assert [e["type"] for e in events] == ["sources", "token", "answer"]
    assert final["cached"] and final["answer"] == first.answer and events[1]["text"] == first.answer

    assert not app.answers.answer(admin, question, ["bravo"], cache=False).cached


def test_a_document_change_or_another_model_load_invalidates_cached_answers(app, admin):
    question = "When do launches happen?"
    app.answers.answer(admin, question, ["alpha"])
    assert app.answers.answer(admin, question, ["alpha"]).cached

    ingest(app, "alpha", {"launch": "The alpha launch code is ZEBRA-4471. Launches happen on Mondays now."})
    changed = app.answers.answer(admin, question, ["alpha"])
    assert not changed.cached
    assert app.answers.answer(admin, question, ["alpha"]).cached

    # The same model name, loaded again: answers it did not write are not served.
    app.models.serve(EchoRuntime("echo", context_length=2048))
    assert not app.answers.answer(admin, question, ["alpha"]).cached
    assert lookups(app, "answer", "hit") >= 3
