"""Feedback and drift over HTTP, and the CLI commands on them: the appliance in-process (echo
runtime) behind its real API on a free port."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest

from appliance.cli import main
from appliance.core.drift import Drift
from appliance.records import Trace, Usage
from tests.inprocess import InProcessServer, echo_appliance, ingest


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # The minute scheduler checks no drift here: the test drives a schedule of its own.
    app = echo_appliance(
        tmp_path_factory.mktemp("feedback-api") / "data",
        drift={"check_interval_hours": 0},
        answer={"max_answer_tokens": 48},
    )
    ingest(app, "alpha", {"launch": "The alpha launch code is ZEBRA-4471. Launches happen on Tuesdays."})
    ingest(app, "bravo", {"okapi": "The bravo launch code is OKAPI-9902. The bravo team meets on Fridays."})
    server = InProcessServer(app).start()
    yield server
    server.stop()
    app.close()


@pytest.fixture(scope="module")
def admin(srv):
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.key}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def users(srv, admin):
    """Two user keys, each with one collection."""
    clients = {}
    for name, collection in (("alice", "alpha"), ("bob", "bravo")):
        key = admin.post("/api/v1/keys", json={"name": name, "role": "user", "collections": [collection]})
        assert key.status_code == 201, key.text
        clients[name] = httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {key.json()['key']}"}, timeout=60
        )
    yield clients
    for c in clients.values():
        c.close()


def ask(client: httpx.Client, question: str, stream: bool = False) -> dict:
    if not stream:
        r = client.post("/api/v1/knowledge/query", json={"query": question})
        assert r.status_code == 200, r.text
        return r.json()
    with client.stream("POST", "/api/v1/knowledge/query", json={"query": question, "stream": True}) as r:
        assert r.status_code == 200
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert events[-1]["type"] == "answer"
    return events[-1]


def test_rate_an_answer_read_its_trace_and_list_the_feedback(users):
    alice = users["alice"]
    answer = ask(alice, "What is the alpha launch code?")
    streamed = ask(alice, "When do launches happen?", stream=True)
    assert answer["id"].startswith("ans_") and streamed["id"].startswith("ans_")

    # Rated at once: the trace may still be queued for writing; the rating waits for it.
    r = alice.post(
        f"/api/v1/answers/{streamed['id']}/feedback",
        json={"rating": "down", "comment": "too long", "correct_answer": "On Tuesdays"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["rating"] == "down" and r.json()["correct_answer"] == "On Tuesdays"
    assert alice.post(f"/api/v1/answers/{answer['id']}/feedback", json={"rating": "up"}).status_code == 201

    trace = alice.get(f"/api/v1/answers/{streamed['id']}").json()
    assert trace["answer"] == streamed["answer"] and trace["question"] == "When do launches happen?"
    assert trace["collections"] == ["alpha"] and trace["sources"][0]["source_id"] == "launch"
    assert "embedding" not in trace and trace["ratings"][0]["comment"] == "too long"

    page = alice.get("/api/v1/feedback", params={"rating": "down"}).json()
    assert [i["answer_id"] for i in page["items"]] == [streamed["id"]] and page["total"] == 1
    both = alice.get("/api/v1/feedback", params={"collection": "alpha", "limit": 1}).json()
    assert both["total"] == 2 and len(both["items"]) == 1


def test_a_user_key_cannot_read_or_rate_another_collections_answer(users):
    alice, bob = users["alice"], users["bob"]
    theirs = ask(bob, "What is the bravo launch code?")
    mine = ask(alice, "What is the alpha launch code?")
    for client, foreign in ((alice, theirs["id"]), (bob, mine["id"])):
        read = client.get(f"/api/v1/answers/{foreign}")
        rate = client.post(f"/api/v1/answers/{foreign}/feedback", json={"rating": "down"})
        missing = client.get("/api/v1/answers/ans_00000000000000000000")
        assert read.status_code == rate.status_code == missing.status_code == 404
        assert read.json()["detail"] == f"answer {foreign!r} does not exist"
    assert alice.get("/api/v1/feedback", params={"collection": "bravo"}).status_code == 404
    assert theirs["id"] not in json.dumps(alice.get("/api/v1/feedback").json())


def test_bad_feedback_is_a_clear_400(users):
    alice = users["alice"]
    answer = ask(alice, "What is the alpha launch code?")
    for body in ({"rating": "meh"}, {"rating": "up", "stars": 5}, {}):
        r = alice.post(f"/api/v1/answers/{answer['id']}/feedback", json=body)
        assert r.status_code == 400, (body, r.text)
    r = alice.post(f"/api/v1/answers/{answer['id']}/feedback", json={"rating": "up", "comment": "x" * 5000})
    assert r.status_code == 400 and "limit" in r.json()["detail"]
    assert alice.get("/api/v1/feedback", params={"rating": "sideways"}).status_code == 400


def test_feedback_counts_are_exported_per_collection_model_and_rating(srv, admin, users):
    answer = ask(users["bob"], "When does the bravo team meet?")
    assert (
        users["bob"].post(f"/api/v1/answers/{answer['id']}/feedback", json={"rating": "up"}).status_code
        == 201
    )
    text = admin.get("/metrics").text
    assert 'appliance_feedback_total{collection="bravo",model="echo",rating="up"}' in text
    assert 'appliance_answer_traces_total{outcome="written"}' in text


def test_the_weeks_ratings_per_collection_for_the_dashboard(srv, admin):
    key = admin.post("/api/v1/keys", json={"name": "carol", "role": "user", "collections": ["alpha"]})
    with httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {key.json()['key']}"}, timeout=60
    ) as carol:
        assert carol.get("/api/v1/feedback/summary").json() == []  # nothing of hers yet
        for question, rating in (("What is the alpha launch code?", "up"), ("When are launches?", "down")):
            answer = ask(carol, question)
            rated = carol.post(f"/api/v1/answers/{answer['id']}/feedback", json={"rating": rating})
            assert rated.status_code == 201
        # A user key counts its own answers; the admin's counts hold hers and everyone's.
        mine = carol.get("/api/v1/feedback/summary").json()
        assert mine == [{"collection": "alpha", "up": 1, "down": 1, "answers": 2, "days": 7}]
        assert carol.get("/api/v1/feedback/summary", params={"days": 0}).status_code == 400
    every = {c["collection"]: c for c in admin.get("/api/v1/feedback/summary", params={"days": 30}).json()}
    assert every["alpha"]["up"] >= 1 and every["alpha"]["down"] >= 1 and every["alpha"]["answers"] >= 2
    assert every["alpha"]["days"] == 30


def _seed_traces(app, collection: str, questions: list[str], when: datetime) -> None:
    vectors = app.embedder.embed_documents(questions)
    rows = []
    for i, (question, vector) in enumerate(zip(questions, vectors, strict=True)):
        rows.append(
            (
                Trace(
                    id=f"ans_{collection}_{when.date()}_{i}",
                    created_at=(when + timedelta(seconds=i)).isoformat(),
                    key_id="k_seed",
                    conversation_id=None,
                    collections=[collection],
                    question=question,
                    query=question,
                    model="echo",
                    prompt_version="v",
                    answer="an answer",
                    refused=False,
                    citations=[],
                    retrieved=[],
                    sources=[],
                    usage=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
                    timings={},
                    top_similarity=0.6,
                    answer_chars=9,
                    latency_ms=1000.0 + i % 7,
                ),
                vector,
            )
        )
    app.traces.insert(rows)


def test_drift_check_over_http_and_cli_then_the_schedule(srv, admin, users, capsys):
    app = srv.app
    now = datetime.now(UTC)
    topics = ["per diem", "hotel rate", "taxi receipts", "flight booking", "vacation days", "mileage"]
    places = ["in Berlin", "in Asia", "for contractors", "for a conference", "for managers", "on weekends"]
    travel = [f"What is the rule on {t} {p}?" for t in topics for p in places]  # 36
    cooking = [
        f"How long do I bake {d} {w}?"
        for d in ("bread", "cake", "pie", "pizza", "fish", "chicken")
        for w in places
    ]
    _seed_traces(app, "alpha", travel, now - timedelta(days=3))
    _seed_traces(app, "alpha", cooking, now - timedelta(hours=2))

    body = {
        "collection": "alpha",
        "reference": {
            "start": (now - timedelta(days=4)).isoformat(),
            "end": (now - timedelta(days=2)).isoformat(),
        },
        # Up to an hour ago: the answers of the other tests, moments ago, stay out of it.
        "current": {
            "start": (now - timedelta(hours=3)).isoformat(),
            "end": (now - timedelta(hours=1)).isoformat(),
        },
    }
    assert users["alice"].post("/api/v1/drift/check", json=body).status_code == 403
    r = admin.post("/api/v1/drift/check", json=body)
    assert r.status_code == 200, r.text
    report = r.json()
    signals = {s["signal"]: s for s in report["signals"]}
    assert report["drifted"] and signals["embedding"]["drifted"], signals["embedding"]
    assert signals["embedding"]["reference_n"] == 36 and signals["embedding"]["current_n"] == 36
    assert not signals["latency"]["drifted"] and not signals["top_similarity"]["drifted"]
    assert "too few answers" in signals["thumbs_down_rate"]["note"]

    # The latest check, per collection, for a key that sees it; another key sees none of it.
    assert [c["id"] for c in users["alice"].get("/api/v1/drift").json()] == [report["id"]]
    assert users["bob"].get("/api/v1/drift").json() == []
    assert users["bob"].get("/api/v1/drift", params={"collection": "alpha"}).status_code == 404
    metrics = admin.get("/metrics").text
    assert 'appliance_drift_detected{collection="alpha",signal="embedding"} 1.0' in metrics
    assert 'appliance_drift_pvalue{collection="alpha",signal="embedding"}' in metrics
    assert 'appliance_drift_psi{collection="alpha",signal="latency"}' in metrics

    bad = {**body, "reference": {"start": "yesterday"}}
    assert admin.post("/api/v1/drift/check", json=bad).status_code == 400
    first = {**body, "reference": {"first_n": 36, "after": (now - timedelta(days=5)).isoformat()}}
    assert admin.post("/api/v1/drift/check", json=first).json()["signals"][0]["drifted"]

    # The CLI, in-process against the same server.
    flags = ["--url", srv.url, "--key", srv.key, "--json"]
    assert main(["eval", "drift", "--collection", "alpha", *flags]) == 2  # 2: drift found
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["collection"] == "alpha" and shown[0]["drifted"]
    assert main(["eval", "drift", "--collection", "alpha", *flags[:4]]) == 2
    assert "! embedding" in capsys.readouterr().out

    # The schedule (off in this appliance: it would run at the real minute): due at the first
    # tick, then not again within the interval, also after a restart (from the stored check).
    assert app.drift.tick(now) == []
    daily = msgspec.structs.replace(app.settings.drift, check_interval_hours=24)
    scheduled = Drift(daily, app.traces, app.metrics).tick(now + timedelta(minutes=1))
    assert "alpha" in [r.collection for r in scheduled] and {r.trigger for r in scheduled} == {"schedule"}
    restarted = Drift(daily, app.traces, app.metrics)
    assert restarted.tick(now + timedelta(minutes=2)) == []


def test_feedback_commands_of_the_cli(srv, users, capsys):
    answer = ask(users["alice"], "What is the alpha launch code?")
    flags = ["--url", srv.url, "--key", srv.key]
    assert (
        main(
            [
                "feedback",
                "rate",
                answer["id"],
                "down",
                "--comment",
                "wrong",
                "--source",
                "launch",
                *flags,
                "--json",
            ]
        )
        == 0
    )
    rated = json.loads(capsys.readouterr().out)
    assert rated["rating"] == "down" and rated["confirmed_sources"] == ["launch"]
    assert main(["feedback", "show", answer["id"], *flags, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == answer["id"]
    assert main(["feedback", "show", answer["id"], *flags]) == 0
    assert "rated down" in capsys.readouterr().out
    assert main(["feedback", "list", "--rating", "down", *flags]) == 0
    assert answer["id"] in capsys.readouterr().out
    assert main(["feedback", "show", "ans_missing", *flags]) == 1
    assert "does not exist" in capsys.readouterr().err
