"""One contract for every LLMRuntime: the real llama.cpp runtime on SmolLM2, and the vLLM adapter on a double.

The vLLM case is a TEST DOUBLE, allowed only because vLLM cannot run without a GPU: `VLLMDouble` is
the real `VLLMRuntime` (its stream/generate/params mapping/delta/finish/abort/count code all run)
with only `_start_engine` replaced, returning `FakeEngine`, a minimal stand-in that mimics vLLM's
AsyncLLMEngine: an async `generate(prompt, sampling_params, request_id)` yielding RequestOutput-like
objects with cumulative text, token ids and finish reasons ("stop", "length", "abort"), stop strings
cut out of the text with a possible stop prefix held back, seeded sampling, and `abort(request_id)`.
The real vLLM path is exercised only on a machine with a GPU.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.models.runtime import (
    Cancelled,
    ChatMessage,
    GenerationParams,
    LLMRuntime,
    TokenStream,
)
from appliance.models.vllm_runtime import VLLMRuntime

CONTEXT = 512
STORY = [
    ChatMessage("system", "You are a storyteller."),
    ChatMessage("user", "Tell me a long story about a lighthouse keeper and a storm."),
]

# -- the vLLM double --------------------------------------------------------------------------------

_WORDS = "the keeper lit the lamp while the storm rolled over the grey sea and ships turned home".split()


@dataclass
class FakeSamplingParams:
    """Accepts exactly the vllm.SamplingParams keywords the adapter is meant to use."""

    n: int
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] | None
    seed: int | None


@dataclass
class FakeCompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None


@dataclass
class FakeRequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[FakeCompletionOutput]
    finished: bool


@dataclass
class FakeTokenizer:
    """Whitespace tokenizer with a BOS, standing in for the Hugging Face tokenizer vLLM hands out."""

    chat_template: str = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    bos_token: str = "<s>"
    eos_token: str = "</s>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [2 + (sum(map(ord, w)) % 30000) for w in text.split()]
        return [1, *ids] if add_special_tokens else ids


@dataclass
class FakeEngine:
    aborted: set[str] = field(default_factory=set)
    requests: list[tuple[list[int], FakeSamplingParams]] = field(default_factory=list)
    shut_down: bool = False

    async def generate(self, prompt: dict, sampling_params: FakeSamplingParams, request_id: str):
        ids = prompt["prompt_token_ids"]
        sp = sampling_params
        self.requests.append((ids, sp))
        if sp.temperature == 0:
            rng = random.Random(sum(ids))  # greedy: a function of the prompt only
        else:
            rng = random.Random(sp.seed) if sp.seed is not None else random.Random()
        text, tokens = "", []
        hold = max((len(s) - 1 for s in sp.stop or []), default=0)
        for i in range(sp.max_tokens):
            await asyncio.sleep(0.002)
            if request_id in self.aborted:
                yield FakeRequestOutput(request_id, ids, [FakeCompletionOutput(text, tokens, "abort")], True)
                return
            text += (" " if text else "") + rng.choice(_WORDS)
            tokens = [*tokens, i]
            hits = [text.find(s) for s in sp.stop or [] if s in text]
            if hits:  # vLLM cuts a stop string (and what follows) out of the text and finishes
                yield FakeRequestOutput(request_id, ids, [FakeCompletionOutput(text[: min(hits)], tokens, "stop")], True)
                return
            last = i == sp.max_tokens - 1
            # While streaming, vLLM holds back as many characters as could start a stop string.
            shown = text if last or not hold else text[: max(0, len(text) - hold)]
            yield FakeRequestOutput(
                request_id, ids, [FakeCompletionOutput(shown, tokens, "length" if last else None)], last
            )

    async def abort(self, request_id: str) -> None:
        self.aborted.add(request_id)

    def shutdown(self) -> None:
        self.shut_down = True


class VLLMDouble(VLLMRuntime):
    """VLLMRuntime with its engine replaced by FakeEngine; everything else is the adapter's own code."""

    async def _start_engine(self):
        self.fake_engine = FakeEngine()
        return self.fake_engine, FakeTokenizer(), FakeSamplingParams


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["llama.cpp", "vllm-double"])
def runtime(request) -> LLMRuntime:
    if request.param == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (scripts/build-llama-wheel.sh)")
        from appliance.models.llamacpp import LlamaCppRuntime
        from appliance.models.manifest import SMOLLM2, smollm2_path

        rt = LlamaCppRuntime(smollm2_path(), SMOLLM2.name, context_length=CONTEXT, threads=2, slots=1, max_queue=4)
    else:
        rt = VLLMDouble(Path("/models/fake"), "fake-vllm", context_length=CONTEXT, max_concurrent=1, max_queue=4)
    yield rt
    rt.close()


def greedy(max_tokens: int | None = 24, **kw) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, temperature=0.0, **kw)


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


# -- the contract -----------------------------------------------------------------------------------


def test_protocol_and_health(runtime):
    assert isinstance(runtime, LLMRuntime)
    assert runtime.backend in ("llama.cpp", "vllm") and runtime.context_length == CONTEXT
    health = runtime.health()
    assert health["ok"] is True and health["name"] == runtime.name and health["queue"]["in_use"] == 0


def test_render_chat_and_count_tokens(runtime):
    prompt = runtime.render_chat(STORY)
    assert "lighthouse keeper" in prompt and "storyteller" in prompt
    assert 10 < runtime.count_tokens(prompt) < 100
    with pytest.raises(InvalidInput, match="role"):
        ChatMessage("tool", "x")
    with pytest.raises(InvalidInput, match="at least one message"):
        runtime.render_chat([])


def test_generate_returns_text_and_counts(runtime):
    prompt = runtime.render_chat(STORY)
    done = runtime.generate(prompt, greedy(16))
    assert done.text.strip()
    assert done.finish_reason in ("stop", "length")
    assert 1 <= done.completion_tokens <= 16
    assert done.prompt_tokens - runtime.count_tokens(prompt) in (0, 1)  # 1: the model's BOS
    assert 0 < done.time_to_first_token_s <= done.total_s


def test_stream_deltas_add_up_to_the_final_text(runtime):
    prompt = runtime.render_chat(STORY)
    done = runtime.generate(prompt, greedy(24))
    stream = runtime.stream(prompt, greedy(24))
    assert isinstance(stream, TokenStream)
    deltas = list(stream)
    assert len(deltas) >= 2
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == done.finish_reason
    assert "".join(d.text for d in deltas) == done.text
    assert stream.stats is not None
    assert stream.stats.completion_tokens == done.completion_tokens
    assert stream.stats.prompt_tokens == done.prompt_tokens
    assert 0 < stream.stats.time_to_first_token_s <= stream.stats.total_s
    assert runtime.health()["queue"]["in_use"] == 0


def test_max_tokens_is_respected(runtime):
    done = runtime.generate(runtime.render_chat(STORY), greedy(5))
    assert done.finish_reason == "length" and done.completion_tokens == 5


def test_stop_sequences(runtime):
    prompt = runtime.render_chat(STORY)
    full = runtime.generate(prompt, greedy(24)).text
    word = next(w for w in full.split()[3:] if len(w) >= 3)
    stop = word[:3]
    expected = full[: full.find(stop)]
    done = runtime.generate(prompt, greedy(24, stop=(stop, "@@never@@")))
    assert done.finish_reason == "stop" and done.text == expected and stop not in done.text
    streamed = list(runtime.stream(prompt, greedy(24, stop=(stop,))))
    assert "".join(d.text for d in streamed) == expected and streamed[-1].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(runtime):
    prompt = runtime.render_chat(STORY)
    params = GenerationParams(max_tokens=12, temperature=1.0, top_p=0.95, seed=1234)
    first = runtime.generate(prompt, params).text
    assert runtime.generate(prompt, params).text == first
    others = {runtime.generate(prompt, GenerationParams(max_tokens=12, temperature=1.0, seed=s)).text for s in (1, 2)}
    assert len(others | {first}) > 1  # the seed is used at all


def test_prompt_too_long_is_invalid_input(runtime):
    too_long = "lamp " * (CONTEXT + 10)
    with pytest.raises(InvalidInput, match="context holds 512"):
        runtime.generate(too_long, greedy(4))
    with pytest.raises(InvalidInput, match="context holds 512"):
        runtime.stream(too_long, greedy(4))
    assert runtime.health()["queue"]["in_use"] == 0


def test_max_tokens_is_clamped_to_the_context_left(runtime):
    words = CONTEXT - 8
    prompt = " lamp" * words
    done = runtime.generate(prompt, GenerationParams(max_tokens=None, temperature=0.0))
    assert done.prompt_tokens + done.completion_tokens <= CONTEXT
    assert done.prompt_tokens >= words - 1
    huge = runtime.generate(prompt, GenerationParams(max_tokens=10_000, temperature=0.0))
    assert huge.prompt_tokens + huge.completion_tokens <= CONTEXT


def test_closing_a_stream_frees_the_slot_for_the_next_request(runtime):
    prompt = runtime.render_chat(STORY)
    stream = runtime.stream(prompt, greedy(400))
    first = next(stream)
    assert first.finish_reason is None
    assert runtime.health()["queue"]["in_use"] == 1
    thread, result = in_thread(runtime.generate, prompt, greedy(4))
    wait_until(lambda: runtime.health()["queue"]["waiting"] == 1)  # queued behind the open stream
    stream.close()
    thread.join(30)
    assert not thread.is_alive() and "error" not in result
    assert result["value"].completion_tokens <= 4
    assert list(stream) == []  # nothing more after close
    assert runtime.health()["queue"]["in_use"] == 0


def test_close_from_another_thread_stops_a_stream_being_read(runtime):
    stream = runtime.stream(runtime.render_chat(STORY), greedy(400))
    received: list = []
    reader = threading.Thread(target=lambda: received.extend(stream), daemon=True)
    reader.start()
    wait_until(lambda: len(received) >= 2)
    stream.close()
    reader.join(10)
    assert not reader.is_alive()
    assert received[-1].finish_reason in ("cancelled", None) and len(received) < 400
    wait_until(lambda: runtime.health()["queue"]["in_use"] == 0)


def test_cancel_event_stops_generation(runtime):
    prompt = runtime.render_chat(STORY)
    cancel = threading.Event()
    stream = runtime.stream(prompt, greedy(400), cancel=cancel)
    next(stream)
    cancel.set()
    rest = list(stream)
    assert rest[-1].finish_reason == "cancelled"
    assert stream.stats is not None and stream.stats.completion_tokens < 400
    assert runtime.health()["queue"]["in_use"] == 0

    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    done = runtime.generate(prompt, greedy(400), cancel=cancel)
    assert done.finish_reason == "cancelled" and done.completion_tokens < 400


def test_cancel_while_queued_raises_cancelled(runtime):
    prompt = runtime.render_chat(STORY)
    with runtime.stream(prompt, greedy(400)) as holder:
        next(holder)
        cancel = threading.Event()
        thread, result = in_thread(runtime.generate, prompt, greedy(4), cancel)
        wait_until(lambda: runtime.health()["queue"]["waiting"] == 1)
        cancel.set()
        thread.join(5)
        assert isinstance(result.get("error"), Cancelled)
        assert runtime.health()["queue"]["waiting"] == 0
    assert runtime.health()["queue"]["in_use"] == 0


def test_invalid_generation_parameters():
    for bad in ({"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"stop": ("",)}, {"seed": -1}):
        with pytest.raises(InvalidInput, match="invalid generation parameters"):
            GenerationParams(**bad)


def test_vllm_adapter_maps_parameters_and_aborts():
    """Double-only checks: what the adapter hands the engine, and that a close aborts the engine request."""
    rt = VLLMDouble(Path("/models/fake"), "fake-vllm", context_length=CONTEXT, max_concurrent=2, max_queue=2)
    try:
        prompt = rt.render_chat(STORY)
        rt.generate(prompt, GenerationParams(max_tokens=7, temperature=0.3, top_p=0.9, stop=("x",), seed=5))
        ids, sp = rt.fake_engine.requests[-1]
        assert ids == FakeTokenizer().encode(prompt) and ids[0] == 1
        assert sp == FakeSamplingParams(n=1, max_tokens=7, temperature=0.3, top_p=0.9, stop=["x"], seed=5)
        rt.generate(prompt, GenerationParams(temperature=0.0))
        assert rt.fake_engine.requests[-1][1].max_tokens == CONTEXT - len(ids)  # None: clamped to the room left
        assert rt.fake_engine.requests[-1][1].stop is None
        stream = rt.stream(prompt, greedy(400))
        next(stream)
        stream.close()
        wait_until(lambda: len(rt.fake_engine.aborted) == 1)
    finally:
        rt.close()
    assert rt.fake_engine.shut_down and not rt.health()["ok"]
