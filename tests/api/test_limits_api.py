"""Limits on a live server: slots and queue for the model, per-key request and token rates."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import TEST_MODEL_ENV, ServerProcess

LONG = {
    "model": "default",
    "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
    "max_tokens": 1900,
    "temperature": 0.8,
    "seed": 3,
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    env = {
        **TEST_MODEL_ENV,
        "APPLIANCE_LLM__SLOTS": "1",
        "APPLIANCE_LLM__MAX_QUEUE": "1",
        # One search at a time and none waiting: any two that meet, one is refused.
        "APPLIANCE_ADMISSION__SEARCH_CONCURRENCY": "1",
        "APPLIANCE_ADMISSION__SEARCH_QUEUE": "0",
    }
    server = ServerProcess(tmp_path_factory.mktemp("limits") / "data", env=env).start(require_llm=True)
    yield server
    server.stop()


def _queue(srv) -> dict:
    return httpx.get(f"{srv.url}/readyz").json()["chat_model"]["queue"]


def _wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_queue_then_429_then_disconnect_frees_the_slot(srv):
    headers = {"Authorization": f"Bearer {srv.key}"}
    with httpx.Client(base_url=srv.url, headers=headers, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as holder:
            assert holder.status_code == 200
            lines = holder.iter_lines()
            next(line for line in lines if line.startswith("data: "))  # generation is under way: slot held
            assert _queue(srv)["in_use"] == 1

            queued: dict = {"lines": []}

            def second() -> None:
                with httpx.stream(
                    "POST",
                    f"{srv.url}/v1/chat/completions",
                    headers=headers,
                    timeout=120,
                    json={
                        "model": "default",
                        "messages": [{"role": "user", "content": "Say hi."}],
                        "max_tokens": 3,
                        "stream": True,
                    },
                ) as r:
                    queued["status"] = r.status_code
                    queued["lines"] = [line for line in r.iter_lines() if line]

            waiter = threading.Thread(target=second)
            waiter.start()
            _wait_for(lambda: _queue(srv)["waiting"] == 1, "the second request to queue")

            refused = http.post(
                "/v1/chat/completions",
                json={
                    "model": "default",
                    "messages": [{"role": "user", "content": "Say hi."}],
                    "max_tokens": 3,
                },
            )
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["type"] == "rate_limit_error"
        # Leaving the stream disconnects the client: its generation is cancelled (not run to the 1900
        # tokens it asked for) and its slot goes to the queued request.
        waiter.join(120)
        assert not waiter.is_alive(), "the queued request still waits: the disconnected stream kept its slot"
        metrics = http.get("/metrics").text
        assert (
            'llm_requests_total{endpoint="chat",model="SmolLM2-135M-Instruct",outcome="cancelled"} 1.0'
            in metrics
        )
        assert queued["status"] == 200
        # It was queued, so it was told its place before anything else (the queue reports the place
        # at once, and the route relays it even when the slot came in the same instant); then its tokens.
        assert queued["lines"][0] == ": queue position 1", queued["lines"][:3]
        assert (
            any('"content":' in line for line in queued["lines"][1:])
            and queued["lines"][-1] == "data: [DONE]"
        )
        _wait_for(
            lambda: _queue(srv)["in_use"] == 0 and _queue(srv)["waiting"] == 0, "the slot to be free", 15
        )


def test_per_key_request_rate(srv):
    with srv.client() as admin:
        admin.post("/api/v1/collections", json={"name": "limited"})
        key = admin.post(
            "/api/v1/keys", json={"name": "slow", "role": "user", "collections": ["limited"], "rpm": 2}
        ).json()
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key['key']}"}) as client:
        assert client.get("/api/v1/collections").status_code == 200
        assert client.get("/api/v1/collections").status_code == 200
        third = client.get("/api/v1/collections")
        assert third.status_code == 429 and int(third.headers["Retry-After"]) >= 1
        assert "rate" in third.json()["detail"].lower()


def test_per_key_token_rate(srv):
    with srv.client() as admin:
        admin.post("/api/v1/collections", json={"name": "tokens"})
        key = admin.post(
            "/api/v1/keys", json={"name": "frugal", "role": "user", "collections": ["tokens"], "tpm": 20}
        ).json()
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key["key"], max_retries=0)
    client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Tell me about the sea."}], max_tokens=30
    )  # spends more than 20 tokens: the budget goes negative
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    assert int(info.value.response.headers["Retry-After"]) >= 1


def _counter(srv, name: str, **labels: str) -> float:
    """A counter's value on /metrics (0 when it has not appeared yet)."""
    text = httpx.get(f"{srv.url}/metrics", headers={"Authorization": f"Bearer {srv.key}"}).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_plain_chat_whose_client_left_frees_its_slot(srv):
    """Not streamed: nothing is written until the answer is whole, so only the connection's close
    tells the server nobody is waiting. The generation must stop there (counted as cancelled), not
    run on to its 1900 tokens holding the only slot."""
    labels = {"endpoint": "chat", "model": "SmolLM2-135M-Instruct"}
    cancelled = _counter(srv, "llm_requests_total", outcome="cancelled", **labels)
    finished = _counter(srv, "llm_requests_total", outcome="ok", **labels)
    body = json.dumps(LONG).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {srv.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", srv.port)) as client:
        client.sendall(head + body)
        _wait_for(lambda: _queue(srv)["in_use"] == 1, "the generation to take the slot")
    # The client has gone.

    def freed() -> bool:
        assert _counter(srv, "llm_requests_total", outcome="ok", **labels) == finished, (
            "the generation ran to its end after its client had left"
        )
        return _queue(srv)["in_use"] == 0 and (
            _counter(srv, "llm_requests_total", outcome="cancelled", **labels) == cancelled + 1
        )

    _wait_for(freed, "the abandoned generation to be cancelled and its slot freed", 120)
    with srv.client() as http:
        short = http.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3},
        )
    assert short.status_code == 200


def test_searches_beyond_the_admission_limit_get_429_with_retry_after(srv):
    """search: one at a time, none waiting (the fixture's settings). Bursts of simultaneous
    searches until one is refused: every answer is a 200 or a 429 with Retry-After, nothing else."""
    headers = {"Authorization": f"Bearer {srv.key}"}
    statuses: list[int] = []
    retry_after: list[str | None] = []
    with httpx.Client(base_url=srv.url, headers=headers, timeout=120) as http:
        for _ in range(20):
            start = threading.Barrier(16)

            def search(start: threading.Barrier = start) -> None:
                start.wait()
                r = http.post("/api/v1/knowledge/search", json={"query": "lighthouse keeper", "top_k": 3})
                statuses.append(r.status_code)
                if r.status_code == 429:
                    retry_after.append(r.headers.get("Retry-After"))
                    assert r.headers["content-type"].startswith("application/problem+json")
                    assert "search" in r.json()["detail"]

            burst = [threading.Thread(target=search) for _ in range(16)]
            for t in burst:
                t.start()
            for t in burst:
                t.join(120)
            if 429 in statuses:
                break
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses and 429 in statuses, statuses
    assert retry_after and all(v is not None and int(v) >= 1 for v in retry_after), retry_after
    rejected = _counter(srv, "admission_rejected_total", work="search")
    assert rejected == statuses.count(429)
    assert re.fullmatch(r"\d+", retry_after[0])
