"""The OpenAI-compatible API, driven by the official `openai` SDK against a live server."""

from __future__ import annotations

import time

import openai
import pytest

from tests.conftest import TEST_MODEL_ENV, ServerProcess


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("llm") / "data", env=TEST_MODEL_ENV).start(require_llm=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(llm_server):
    return openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key=llm_server.key, max_retries=0, timeout=120)


def test_models_list(client):
    models = {m.id: m.model_dump() for m in client.models.list().data}
    assert {"default", "SmolLM2-135M-Instruct", "embedding"} <= set(models)
    assert (
        models["SmolLM2-135M-Instruct"]["state"] == "loaded" and models["default"]["context_length"] == 2048
    )


def test_chat_completion(client):
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Say hello."}], max_tokens=24, temperature=0
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == "SmolLM2-135M-Instruct"


def test_chat_stream_matches_and_reports_usage(client):
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip() and finishes and finishes[-1] in ("stop", "length")
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens > 0
    plain = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        temperature=0,
        seed=1,
    )
    assert plain.choices[0].message.content == text


def test_max_tokens_seed_and_stop(client):
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Write a long story."}], max_tokens=5
    )
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens <= 5
    msgs = [{"role": "user", "content": "Give me a random word."}]
    a = client.chat.completions.create(
        model="default", messages=msgs, max_tokens=12, temperature=0.9, seed=42
    )
    b = client.chat.completions.create(
        model="default", messages=msgs, max_tokens=12, temperature=0.9, seed=42
    )
    assert a.choices[0].message.content == b.choices[0].message.content
    s = client.chat.completions.create(
        model="default",
        max_tokens=40,
        temperature=0,
        messages=[{"role": "user", "content": "List the numbers 1, 2, 3, 4, 5 separated by commas."}],
        stop=["3"],
    )
    assert "3" not in s.choices[0].message.content


def test_completions(client):
    r = client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert r.choices[0].text and r.usage.completion_tokens <= 8
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="default", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == r.choices[0].text


def test_embeddings(client):
    r = client.embeddings.create(model="embedding", input=["per diem rules", "key rotation"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 384
    assert abs(sum(x * x for x in r.data[0].embedding) - 1.0) < 1e-3
    f = client.embeddings.create(model="embedding", input="per diem rules", encoding_format="float")
    assert f.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)
    assert r.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        (
            dict(model="no-such-model", messages=[{"role": "user", "content": "hi"}]),
            openai.NotFoundError,
            "no-such-model",
        ),
        (dict(model="default", messages=[]), openai.BadRequestError, "messages"),
        (
            dict(model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=10**9),
            openai.BadRequestError,
            "max_tokens",
        ),
        (
            dict(model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=0),
            openai.BadRequestError,
            "max_tokens",
        ),
        (
            dict(model="default", messages=[{"role": "robot", "content": "hi"}]),
            openai.BadRequestError,
            "role",
        ),
        (
            dict(model="default", messages=[{"role": "user", "content": "word " * 5000}]),
            openai.BadRequestError,
            "context",
        ),
        (
            dict(model="embedding", messages=[{"role": "user", "content": "hi"}]),
            openai.BadRequestError,
            "embedding",
        ),
        (
            dict(model="default", messages=[{"role": "user", "content": "hi"}], n=3),
            openai.BadRequestError,
            "n=1",
        ),
    ],
)
def test_bad_requests_get_openai_error_envelopes(client, kwargs, error, needle):
    with pytest.raises(error) as info:
        client.chat.completions.create(**kwargs)
    body = info.value.body
    assert needle.lower() in body["message"].lower(), body
    assert body["type"]


def test_wrong_key_and_bad_embedding_input(llm_server, client):
    bad = openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key="apk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gpt-4", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="embedding", input=[[1, 2, 3]])


def _chat_entries(client) -> dict[str, dict]:
    return {
        m.id: m.model_dump() for m in client.models.list().data if "chat" in m.model_dump()["capabilities"]
    }


def _until_settled(client, name: str) -> tuple[dict, set[str]]:
    """Poll /v1/models until `name` is no longer loading: its entry, and every state seen on the way."""
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entries = _chat_entries(client)
        assert name in entries and "default" in entries, entries  # listed all along, whatever its state
        seen.add(entries[name]["state"])
        if entries[name]["state"] != "loading":
            return entries[name], seen
        time.sleep(0.1)
    raise AssertionError(f"{name} still loading")


def test_models_lists_the_chat_model_in_every_state(tmp_path):
    srv = ServerProcess(tmp_path / "data", env={"APPLIANCE_LLM__LOAD_AT_START": "false"}).start()
    try:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=srv.key, max_retries=0, timeout=120)
        chat = _chat_entries(client)
        smol = chat["SmolLM2-135M-Instruct"]
        assert smol["state"] == "unloaded" and chat["default"]["state"] == "unloaded"
        assert smol["object"] == "model" and smol["owned_by"] == "appliance" and smol["created"] > 0
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 503 and "no chat model is loaded" in info.value.body["message"]

        broken = tmp_path / "broken.gguf"
        broken.write_bytes(b"not a GGUF file " * 256)
        with srv.client() as admin:
            assert admin.post("/api/v1/admin/models/load", json={"model": str(broken)}).status_code == 202
            failed, seen = _until_settled(client, "broken")
            assert (
                failed["state"] == "failed"
                and "cannot read" in failed["error"]
                and seen <= {"loading", "failed"}
            )
            assert (
                admin.post("/api/v1/admin/models/load", json={"model": "smollm2-135m-instruct"}).status_code
                == 202
            )
            loaded, seen = _until_settled(client, "SmolLM2-135M-Instruct")
        assert (
            loaded["state"] == "loaded" and loaded["backend"] == "llama.cpp" and seen <= {"loading", "loaded"}
        )
        assert "broken" not in _chat_entries(client)
        assert (
            client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            ).usage.completion_tokens
            > 0
        )
    finally:
        srv.stop()
