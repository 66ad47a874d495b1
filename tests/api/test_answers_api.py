"""Cited answers and conversations on a live server with the small test model."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import TEST_MODEL_ENV, ServerProcess

POLICY = """# Travel policy

## Per diems

Employees travelling in Europe receive a per diem of 75 EUR a day for meals.
In Asia the per diem is 80 USD a day.

## Booking

Flights over six hours may be booked in business class.
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("answers") / "data", env=TEST_MODEL_ENV).start(
        require_llm=True
    )
    with server.client() as c:
        c.post("/api/v1/collections", json={"name": "docs"})
        r = c.post(
            "/api/v1/documents",
            params={"wait": "true"},
            json={"collection": "docs", "source_id": "travel.md", "text": POLICY},
        )
        assert r.status_code == 200, r.text
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv):
    with srv.client() as c:
        yield c


def test_answer_has_checked_citations_and_timings(api):
    r = api.post(
        "/api/v1/knowledge/query", json={"query": "What is the per diem in Europe?", "collections": ["docs"]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"]
    for c in body["citations"]:
        assert f"[{c['n']}]" in body["answer"]
        assert {"n", "document_id", "source_id", "title", "chunk_id", "location", "snippet"} <= set(c)
        assert c["source_id"] == "travel.md"
    for stage in ("retrieval_ms", "first_token_ms", "generation_ms", "total_ms"):
        assert body["timings"][stage] is not None, stage
    assert body["usage"]["completion_tokens"] > 0
    # Every sentence was checked against the sources; a claim's citations are sources it was given
    # and, unless flagged, ones that support it.
    assert body["verifier"] == "lexical" and body["timings"]["verify_ms"] is not None
    cited = {c["n"] for c in body["citations"]}
    for i, sentence in enumerate(body["sentences"]):
        assert sentence["text"]
        assert (i in body["unsupported_sentences"]) is (not sentence["supported"])
        if sentence["supported"] and sentence["claim"]:
            assert set(sentence["citations"]) <= cited and sentence["citations"]


def test_unrelated_question_gets_an_honest_no_answer_without_the_model(api):
    r = api.post(
        "/api/v1/knowledge/query",
        json={"query": "Which enzyme splits starch in saliva?", "collections": ["docs"]},
    )
    body = r.json()
    assert body["answer"] == "The documents do not say." and body["citations"] == []
    assert body["usage"]["completion_tokens"] == 0


def test_streamed_answer(srv):
    events = []
    with httpx.stream(
        "POST",
        f"{srv.url}/api/v1/knowledge/query",
        headers={"Authorization": f"Bearer {srv.key}"},
        json={"query": "What is the per diem in Asia?", "collections": ["docs"], "stream": True},
        timeout=120,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "sources" and kinds[-1] == "answer" and "token" in kinds
    final = events[-1]
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    assert streamed.strip() and final["answer"]
    assert all(1 <= c["n"] <= events[0]["sources"] for c in final["citations"])


def test_conversation_keeps_history_and_rewrites_follow_ups(api):
    conv = api.post("/api/v1/conversations", json={"collections": ["docs"], "title": "travel"}).json()
    first = api.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"content": "What is the per diem in Europe?"}
    )
    assert first.status_code == 200, first.text
    second = api.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "And in Asia?"}).json()
    assert second["query"] != "And in Asia?"  # rewritten with the history before retrieval
    full = api.get(f"/api/v1/conversations/{conv['id']}").json()
    assert [m["role"] for m in full["messages"]] == ["user", "assistant", "user", "assistant"]
    assert full["messages"][2]["content"] == "And in Asia?"
    assert conv["id"] in {c["id"] for c in api.get("/api/v1/conversations").json()}
    assert api.post("/api/v1/conversations/conv_missing/messages", json={"content": "x"}).status_code == 404


def test_query_errors(api):
    assert api.post("/api/v1/knowledge/query", json={"query": "  "}).status_code == 400
    assert (
        api.post("/api/v1/knowledge/query", json={"query": "x", "collections": ["nope"]}).status_code == 404
    )
    assert api.post("/api/v1/knowledge/query", json={"query": "x", "model": "nope"}).status_code == 404
