"""ServedModel's admission over a real in-memory backend (EchoRuntime): positions, 429, accounting, slots."""

from __future__ import annotations

import threading
import time

import pytest

from appliance.errors import TooManyRequests
from appliance.models.echo import EchoRuntime
from appliance.models.runtime import ChatMessage, GenerationParams
from appliance.models.served import ServedModel
from appliance.models.slots import QueueFull

CHAT = [ChatMessage("user", "keep the lamp lit through the night")]
LONG = GenerationParams(max_tokens=10_000, temperature=0.0)
SHORT = GenerationParams(max_tokens=3, temperature=0.0)


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def served():
    model = ServedModel(
        EchoRuntime("echo", context_length=20_000, capacity=1, token_delay_s=0.001), max_queue=2
    )
    yield model
    model.close()


def _queued_generate(
    served: ServedModel, heard: list[int], out: dict, params: GenerationParams = SHORT
) -> threading.Thread:
    """A thread opening a stream (hearing its positions in `heard`): `out["stream"]` once admitted,
    `out["value"]` its text once read to the end."""

    def run() -> None:
        try:
            out["stream"] = served.stream(served.render_chat(CHAT), params, on_position=heard.append)
            out["value"] = "".join(d.text for d in out["stream"])
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_waiters_hear_their_positions_and_are_served_in_order(served):
    holder = served.stream(served.render_chat(CHAT), LONG)
    next(holder)
    heard: dict[int, list[int]] = {1: [], 2: []}
    results: dict[int, dict] = {1: {}, 2: {}}
    first = _queued_generate(served, heard[1], results[1], LONG)
    wait_until(lambda: served.health()["queue"]["waiting"] == 1)
    second = _queued_generate(served, heard[2], results[2])
    wait_until(lambda: served.health()["queue"]["waiting"] == 2)
    assert heard[1] == [1] and heard[2] == [2]  # told at once, before any slot moved
    holder.close()
    wait_until(lambda: "stream" in results[1] and 1 in heard[2])  # the first runs, the second moved up
    assert heard[1] == [1, 0] and "stream" not in results[2]
    results[1]["stream"].close()
    first.join(10)
    second.join(10)
    assert heard[2] == [2, 1, 0] and results[2]["value"] == "keep the lamp"


def test_beyond_the_queue_a_request_gets_429_with_retry_after(served):
    holder = served.stream(served.render_chat(CHAT), LONG)
    next(holder)
    out: list[dict] = [{}, {}]
    waiters = [_queued_generate(served, [], out[i]) for i in range(2)]
    wait_until(lambda: served.health()["queue"]["waiting"] == 2)
    with pytest.raises(QueueFull) as info:
        served.stream(served.render_chat(CHAT), LONG)
    assert isinstance(info.value, TooManyRequests) and info.value.retry_after >= 1
    holder.close()
    for waiter in waiters:
        waiter.join(10)
    queue = served.health()["queue"]
    assert queue["rejected"] == 1 and queue["served"] == 3 and queue["in_use"] == queue["waiting"] == 0
    assert all(o["value"] == "keep the lamp" for o in out)


def test_slots_follow_the_backends_capacity():
    served = ServedModel(EchoRuntime("echo", capacity=2, token_delay_s=0.001), max_queue=0)
    try:
        streams = [served.stream(served.render_chat(CHAT), LONG) for _ in range(2)]
        for stream in streams:
            next(stream)
        health = served.health()
        assert health["queue"]["slots"] == 2 and health["queue"]["in_use"] == 2 and health["busy"] == 2
        with pytest.raises(QueueFull):  # max_queue 0: nobody waits
            served.stream(served.render_chat(CHAT), LONG)
        streams[0].close()
        assert served.health()["queue"]["in_use"] == 1 and served.health()["busy"] == 1
        streams[1].close()
    finally:
        served.close()


class _ScoringEcho(EchoRuntime):
    """The echo runtime that also reports next-token log-probabilities (as llama.cpp does)."""

    def next_token_logprobs(self, prompt: str, top: int = 20) -> dict[str, float]:
        return {"yes": -0.1, "no": -2.3}


def test_scoring_takes_one_slot_and_gives_it_back():
    served = ServedModel(_ScoringEcho(capacity=1), max_queue=1)
    done: list[dict] = []
    worker = threading.Thread(
        target=lambda: done.extend(served.next_token_logprobs("q") for _ in range(3)), daemon=True
    )
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "scoring waited for a slot it already held"
    assert done == [{"yes": -0.1, "no": -2.3}] * 3 and served.queue.in_use == 0
    # Generation after scoring finds the slot free as well.
    prompt = served.render_chat([ChatMessage("user", "hello there")])
    assert served.generate(prompt, GenerationParams(max_tokens=2, temperature=0.0)).completion_tokens == 2
