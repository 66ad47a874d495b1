"""Remote models on the wire: an appliance whose model is served by a second appliance on loopback
(the real HTTP/SSE stack of both, in this process: the upstream serves the echo runtime and loads
the real SmolLM2 for tool calls), imported and probed through the registry API, chatted with
through the official openai SDK, refused outside network.allow, and failing over when it goes down."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from appliance.models.breaker import OPEN
from appliance.models.router import RouteDecision
from appliance.models.runtime import ChatMessage, GenerationParams
from tests.conftest import free_port
from tests.inprocess import InProcessServer, echo_appliance
from tests.test_cli import run_cli

SMOL = "SmolLM2-135M-Instruct"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The second appliance: echo as its default, SmolLM2 loaded on demand (constrained decoding)."""
    app = echo_appliance(tmp_path_factory.mktemp("remote-upstream") / "data", llm={"context_length": 2048})
    server = InProcessServer(app).start()
    yield server
    server.stop()
    app.close()


@pytest.fixture(scope="module")
def key_file(upstream, tmp_path_factory):
    path = tmp_path_factory.mktemp("remote-key") / "upstream.key"
    path.write_text(upstream.key + "\n")
    return path


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    # Retries would hide the breaker's count: one failure per request.
    app = echo_appliance(
        tmp_path_factory.mktemp("remote-front") / "data",
        llm={"breaker_failures": 2, "breaker_cooldown_s": 600, "remote_connect_timeout_s": 2},
    )
    server = InProcessServer(app).start()
    yield server
    server.stop()
    app.close()


@pytest.fixture(scope="module")
def admin(front):
    with httpx.Client(base_url=front.url, headers={"Authorization": f"Bearer {front.key}"}, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def client(front):
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=front.key, max_retries=0, timeout=120)


def _import(admin, url: str, model: str, name: str, **remote) -> httpx.Response:
    return admin.post(
        "/api/v1/models/import", json={"name": name, "remote": {"url": url, "model": model, **remote}}
    )


@pytest.fixture(scope="module")
def far_echo(admin, upstream, key_file) -> dict:
    answer = _import(admin, f"{upstream.url}/v1", "echo", "far-echo", api_key_file=str(key_file))
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def far_smol(admin, upstream, key_file) -> dict:
    answer = _import(admin, f"{upstream.url}/v1", SMOL, "far-smol", api_key_file=str(key_file))
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_remote_model_is_imported_and_probed_like_a_file(far_echo, admin, upstream, key_file):
    v = far_echo
    assert (v["backend"], v["state"], v["format"]) == ("remote", "ready", "openai-api")
    assert v["remote"]["model"] == "echo" and v["path"] == f"{upstream.url}/v1"
    probe = v["probe"]
    assert probe["listed"] and probe["completion"]["ok"] and probe["chat"]["ok"]
    # The upstream's echo cannot constrain its output: the probe says so, and no tag claims it.
    assert not probe["json_output"]["ok"] and not probe["tool_call"]["ok"]
    assert set(v["tags"]) == {"chat", "completion", "remote"}
    assert v["context_length"] == 2048  # what the upstream's /v1/models reports
    # The same server and model again is the same version, like the same bytes.
    again = _import(admin, f"{upstream.url}/v1", "echo", "far-echo", api_key_file=str(key_file))
    assert again.status_code == 201 and again.json()["version"] == v["version"]
    # The key is read on the server, never stored or shown.
    assert upstream.key not in admin.get("/api/v1/models/far-echo").text


def test_a_wrong_key_or_model_is_rejected_with_its_reason(admin, upstream, tmp_path):
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-key")
    refused = _import(admin, f"{upstream.url}/v1", "echo", "far-wrong-key", api_key_file=str(wrong))
    assert refused.status_code == 201 and refused.json()["state"] == "rejected"
    assert "refused our API key (HTTP 401)" in refused.json()["reason"] and "not-the-key" not in refused.text
    missing = _import(admin, f"{upstream.url}/v1", "echo", "far-no-key", api_key_file=str(tmp_path / "none"))
    assert missing.status_code == 400 and "cannot be read" in missing.json()["detail"]


def test_chat_and_streaming_through_the_sdk_reach_the_remote(far_echo, client, front):
    done = client.chat.completions.create(
        model="far-echo",
        messages=[{"role": "user", "content": "blue green yellow"}],
        max_tokens=5,
        temperature=0,
    )
    assert done.model == "far-echo"
    assert done.choices[0].message.content == "blue green yellow blue green"
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 5
    chunks = list(
        client.chat.completions.create(
            model="far-echo",
            messages=[{"role": "user", "content": "one two three"}],
            max_tokens=4,
            temperature=0,
            stop=["three"],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "one two"  # the stop sequence went through and was honoured upstream
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    completion = client.completions.create(model="far-echo", prompt="alpha beta", max_tokens=3, temperature=0)
    assert completion.choices[0].text == "alpha beta alpha"
    # Resident in the pool like any model, charged nothing against its memory budget.
    state = front.app.models.pool.state_of("far-echo")
    assert state["state"] == "loaded" and state["estimated_mb"] == 0 and state["resident_mb"] == 0


def test_tool_calls_round_trip_through_the_remote(far_smol, client):
    assert far_smol["state"] == "ready", far_smol
    assert {"tools", "json_output", "remote"} <= set(far_smol["tags"])
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    done = client.chat.completions.create(
        model="far-smol",
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=40,
        temperature=0,
    )
    (call,) = done.choices[0].message.tool_calls
    assert done.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    # The result goes back as a tool message; the remote answers in text.
    follow = client.chat.completions.create(
        model="far-smol",
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear", "celsius": 21}'},
        ],
        max_tokens=4,
        temperature=0,
    )
    assert follow.choices[0].message.content and not follow.choices[0].message.tool_calls
    # JSON output through response_format.
    shaped = client.chat.completions.create(
        model="far-smol",
        messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object", "properties": {"yes": {"type": "boolean"}}, "required": ["yes"]},
            },
        },
        max_tokens=12,
        temperature=0,
    )
    assert isinstance(json.loads(shaped.choices[0].message.content)["yes"], bool)


def test_a_url_outside_the_allow_list_is_refused_before_anything_connects(admin, front):
    before = front.app.registry.registry.families()
    refused = _import(admin, "http://10.20.30.40:8000/v1", "big-model", "far-away")
    assert refused.status_code == 400
    assert "not in settings network.allow" in refused.json()["detail"]
    with_credentials = _import(admin, "https://me:secret@10.20.30.40/v1", "big-model", "far-away")
    assert with_credentials.status_code == 400 and "secret" not in with_credentials.text
    assert "no credentials" in with_credentials.json()["detail"]
    neither = admin.post("/api/v1/models/import", json={"name": "x"})
    assert neither.status_code == 400 and "either path" in neither.json()["detail"]
    assert front.app.registry.registry.families() == before  # nothing registered
    denied = [e for e in front.app.audit.recent(action="model.import") if e["outcome"] == "denied"]
    assert denied and "secret" not in str(denied)


def _second_port(upstream: InProcessServer) -> tuple[uvicorn.Server, threading.Thread, str]:
    """The upstream's API served on a port of its own as well, to be closed while the first stays."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            upstream.server.config.app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn-second", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the second port did not open"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def test_a_remote_that_goes_down_opens_its_breaker_and_falls_back_before_the_first_byte(
    upstream, key_file, admin, client, front
):
    second, thread, url = _second_port(upstream)
    try:
        imported = _import(admin, f"{url}/v1", "echo", "far-flaky", api_key_file=str(key_file))
        assert imported.status_code == 201 and imported.json()["state"] == "ready", imported.text
        ok = client.chat.completions.create(
            model="far-flaky", messages=[{"role": "user", "content": "up"}], max_tokens=1, temperature=0
        )
        assert ok.choices[0].message.content == "up"
    finally:
        second.should_exit = True
        thread.join(15)
    models = front.app.models
    # A routed request whose first choice is down is served by the next, before any byte is sent.
    decision = RouteDecision("far-flaky", "general", "test", None, ("far-flaky", "echo"))
    opened = front.app.gateway.open_chat(
        decision,
        [ChatMessage("user", "still here")],
        None,
        None,
        GenerationParams(max_tokens=2, temperature=0),
    )
    text = "".join(d.text for d in opened.stream)
    assert opened.served.name == "echo" and text == "still here"
    assert opened.decision.fallback_from and "far-flaky" in opened.decision.fallback_from[0]
    assert "unreachable" in opened.decision.fallback_from[0]
    # Named alone, it fails with a clear 503 until its breaker opens (2 failures here), then rests.
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(
            model="far-flaky", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
    assert failed.value.status_code == 503 and "unreachable" in failed.value.message
    assert models.breakers("far-flaky").state == OPEN
    with pytest.raises(openai.APIStatusError) as resting:
        client.chat.completions.create(
            model="far-flaky", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
    assert resting.value.status_code == 503 and "circuit breaker open" in resting.value.message


def test_aliases_promote_and_rollback_work_on_remote_versions(far_echo, far_smol, admin, client):
    moved = admin.post("/api/v1/models/far-echo/aliases/production", json={"version": far_echo["version"]})
    assert moved.status_code == 200 and moved.json()["gated"] is False, moved.text
    done = client.chat.completions.create(
        model="far-echo@production",
        messages=[{"role": "user", "content": "via alias"}],
        max_tokens=2,
        temperature=0,
    )
    assert done.choices[0].message.content == "via alias"
    history = admin.get("/api/v1/models/far-echo/history").json()
    assert [(h["alias"], h["version"]) for h in history] == [("production", far_echo["version"])]


def test_the_cli_imports_a_remote_model_and_says_why_it_refuses_one(front, upstream, key_file):
    # The CLI in its own process: llama-cpp-python swaps sys.stdout/sys.stderr while it loads a model,
    # and the upstream here may be loading SmolLM2 in a thread of this process, putting back the
    # streams it saw (pytest's, not this test's capture) under an in-process CLI's feet.
    common = ["--url", front.url, "--key", front.key, "--json"]
    done = run_cli(
        *["models", "import", "--remote", f"{upstream.url}/v1", "--model", "echo", "--name", "far-cli"],
        *["--api-key-file", str(key_file), "--capacity", "2", *common],
    )
    out = json.loads(done.stdout)
    assert done.returncode == 0 and out["state"] == "ready" and out["remote"]["capacity"] == 2, done.stderr
    refused = run_cli("models", "import", "--remote", "http://192.0.2.7/v1", "--model", "m", *common)
    assert refused.returncode != 0 and "not in settings network.allow" in refused.stdout + refused.stderr
    no_path = run_cli("models", "import", "--model", "m", *common)
    assert no_path.returncode != 0 and "PATH" in no_path.stdout + no_path.stderr
