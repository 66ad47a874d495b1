"""Routing and the pool on the wire: `model: auto` with its x-appliance-route header (official openai
SDK), cold loads answered 503 model_loading or waited for with queue positions, the knowledge
answer's route in its header and trace. The appliance in-process: echo runtimes, and the real
SmolLM2 as the model that loads cold."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from appliance.models.echo import EchoRuntime
from tests.inprocess import InProcessServer, echo_appliance, ingest

SMOL = "SmolLM2-135M-Instruct"
CODE_Q = "how do I read a csv file with pandas and skip the header row"
GENERAL_Q = "why do onions make people cry"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = echo_appliance(
        tmp_path_factory.mktemp("routing-api") / "data",
        llm={"load_at_start": False, "cold_start": "reject"},
        answer={"max_answer_tokens": 16},
    )
    ingest(
        app, "handbook", {"leave": "Employees receive 27 days of annual leave. Requests go to the manager."}
    )
    app.models.serve_also(EchoRuntime("coder"), capabilities=("chat", "completion", "code"))
    yield app
    app.close()


@pytest.fixture(scope="module")
def srv(app):
    server = InProcessServer(app).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=srv.key, max_retries=0, timeout=120)


def _chat(client, model: str, text: str, **kw):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=4, temperature=0, **kw
    )


def test_auto_routes_code_to_the_code_model_and_says_why(client):
    raw = _chat(client, "auto", CODE_Q)
    header = raw.headers["x-appliance-route"]
    assert header.startswith("route=code; model=coder; score=") and "reason=semantic: code" in header
    done = raw.parse()
    assert done.model == "coder" and done.choices[0].message.content.startswith("how do I")


def test_auto_routes_general_questions_to_the_default(client):
    raw = _chat(client, "auto", GENERAL_Q)
    assert raw.headers["x-appliance-route"].startswith("route=general; model=echo")
    assert raw.parse().model == "echo"


def test_streams_carry_the_route_header_too(client):
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": CODE_Q}], max_tokens=3, temperature=0, stream=True
    ) as response:
        assert response.headers["x-appliance-route"].startswith("route=code; model=coder")
        chunks = list(response.parse())
    assert {c.model for c in chunks} == {"coder"}


def test_named_models_are_explicit_and_paths_are_refused(client):
    raw = _chat(client, "default", GENERAL_Q)
    assert (
        raw.headers["x-appliance-route"] == "route=explicit; model=echo; reason=the request names its model"
    )
    assert _chat(client, "coder", GENERAL_Q).parse().model == "coder"
    for bad in ("no-such-model", "/etc/hosts.gguf"):
        with pytest.raises(openai.NotFoundError) as info:
            _chat(client, bad, "hi")
        assert info.value.body["code"] == "model_not_found"


def test_models_list_shows_auto_and_the_pool(client):
    models = {m.id: m.model_dump() for m in client.models.list().data}
    assert models["auto"]["routes"] == ["code", "documents", "general"]
    assert models["coder"]["state"] == "loaded" and "code" in models["coder"]["capabilities"]


def test_knowledge_answer_route_in_header_and_trace(app, srv):
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.key}"}, timeout=60) as c:
        r = c.post(
            "/api/v1/knowledge/query",
            json={"query": "how many days of annual leave do employees get", "model": "auto"},
        )
        assert r.status_code == 200, r.text
        header = r.headers["x-appliance-route"]
        assert header.startswith("route=documents; model=echo")
        assert app.feedback.flush(30)
        trace = c.get(f"/api/v1/answers/{r.json()['id']}")
        assert trace.status_code == 200 and trace.json()["route"] == header
        with c.stream(
            "POST", "/api/v1/knowledge/query", json={"query": CODE_Q, "model": "auto", "stream": True}
        ) as s:
            assert s.headers["x-appliance-route"].startswith("route=code; model=coder")
            s.read()


def _until_loaded(client, name: str) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entry = {m.id: m.model_dump() for m in client.models.list().data}.get(name)
        seen.add(entry["state"] if entry else "absent")
        if entry and entry["state"] != "loading":
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{name} still loading: {seen}")


def test_cold_model_503_model_loading_then_served(app, client):
    with pytest.raises(openai.APIStatusError) as info:
        _chat(client, SMOL, "Say hi.")
    assert info.value.status_code == 503 and info.value.body["code"] == "model_loading"
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert _until_loaded(client, SMOL) <= {"loading", "loaded"}  # a cold load is never a failure
    raw = _chat(client, SMOL, "Say hi.")
    assert raw.parse().model == SMOL and raw.parse().usage.completion_tokens > 0
    health = app.models.health()["pool"]
    assert health["used_mb"] <= health["budget_mb"]
    assert {m["name"]: m["state"] for m in health["models"]}[SMOL] == "loaded"


def test_cold_model_stream_waits_hearing_its_place(app, srv, monkeypatch):
    app.models.pool.remove(SMOL)
    monkeypatch.setattr(app.models.settings.llm, "cold_start", "wait")
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.key}"}, timeout=120) as c:
        body = {
            "model": SMOL,
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 3,
            "stream": True,
        }
        with c.stream("POST", "/v1/chat/completions", json=body) as s:
            assert s.status_code == 200
            text = s.read().decode()
    assert text.startswith(": queue position 1") and '"model":"SmolLM2-135M-Instruct"' in text.replace(
        " ", ""
    )
    assert text.rstrip().endswith("data: [DONE]")
    app.models.pool.remove(SMOL)  # and a knowledge answer's stream, the same way
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.key}"}, timeout=120) as c:
        body = {"query": "how many days of annual leave?", "model": SMOL, "stream": True}
        with c.stream("POST", "/api/v1/knowledge/query", json=body) as s:
            assert s.status_code == 200 and s.headers["x-appliance-route"].startswith("route=explicit")
            events = s.read().decode()
    assert events.startswith('event: queue\ndata: {"type":"queue","position":1}'), events[:200]
    assert "event: answer" in events


def test_per_model_metrics_labelled_by_model_version_alias(srv, client):
    _chat(client, "coder", GENERAL_Q)
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.key}"}, timeout=60) as c:
        text = c.get("/metrics").text
    for family in ("model_first_token_seconds", "model_request_seconds", "model_tokens_per_second"):
        assert f'{family}_count{{alias="",model="coder",version=""}}' in text, family
