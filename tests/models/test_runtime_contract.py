"""One contract for every LLMRuntime (the real llama.cpp runtime on SmolLM2, the vLLM adapter on a double, the
in-memory EchoRuntime), and for ServedModel, the admission in front of each of them.

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
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.errors import InvalidInput, NotReady, TooManyRequests
from appliance.models.echo import EchoRuntime
from appliance.models.grammar import json_grammar
from appliance.models.runtime import ChatMessage, GenerationParams, LLMRuntime, TokenStream
from appliance.models.served import ServedModel
from appliance.models.slots import Cancelled
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
    structured_outputs: FakeStructuredOutputsParams | None = None


@dataclass
class FakeStructuredOutputsParams:
    """vllm.sampling_params.StructuredOutputsParams' two fields the adapter uses."""

    json: dict | None = None
    grammar: str | None = None


def _instance(schema: dict):
    """The smallest value of a checked schema (appliance.models.grammar's subset): what the double's
    'structured decoding' produces, so the contract's check that output obeys the schema runs on it."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return _instance(schema["anyOf"][0])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {k: _instance(schema["properties"][k]) for k in schema.get("required", [])}
    if kind == "array":
        return [_instance(schema.get("items", {"type": "null"}))] * schema.get("minItems", 0)
    return {"string": "a" * schema.get("minLength", 1), "integer": 1, "number": 1.5, "boolean": True}.get(
        kind
    )


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
        structured = sp.structured_outputs
        if structured is not None:
            if structured.json is None:
                raise ValueError("the double decodes JSON schemas only")
            text = json.dumps(_instance(structured.json))
            yield FakeRequestOutput(request_id, ids, [FakeCompletionOutput(text, [0], "stop")], True)
            return
        for i in range(sp.max_tokens):
            await asyncio.sleep(0.002)
            if request_id in self.aborted:
                yield FakeRequestOutput(request_id, ids, [FakeCompletionOutput(text, tokens, "abort")], True)
                return
            text += (" " if text else "") + rng.choice(_WORDS)
            tokens = [*tokens, i]
            hits = [text.find(s) for s in sp.stop or [] if s in text]
            if hits:  # vLLM cuts a stop string (and what follows) out of the text and finishes
                yield FakeRequestOutput(
                    request_id, ids, [FakeCompletionOutput(text[: min(hits)], tokens, "stop")], True
                )
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
        return (
            self.fake_engine,
            FakeTokenizer(),
            FakeSamplingParams,
            ("structured_outputs", FakeStructuredOutputsParams),
        )


# -- fixtures ---------------------------------------------------------------------------------------

BACKENDS = ["llama.cpp", "vllm-double", "echo"]


def make_runtime(kind: str) -> LLMRuntime:
    """A fresh backend with capacity 1."""
    if kind == "llama.cpp":
        pytest.importorskip(
            "llama_cpp", reason="llama-cpp-python not installed (scripts/build-llama-wheel.sh)"
        )
        from appliance.models.llamacpp import LlamaCppRuntime
        from appliance.models.manifest import SMOLLM2, smollm2_path

        return LlamaCppRuntime(smollm2_path(), SMOLLM2.name, context_length=CONTEXT, threads=2, slots=1)
    if kind == "vllm-double":
        return VLLMDouble(Path("/models/fake"), "fake-vllm", context_length=CONTEXT, max_concurrent=1)
    # A token takes as long as the double's, so streams can be closed or cancelled midway.
    return EchoRuntime("echo", context_length=CONTEXT, capacity=1, token_delay_s=0.002)


@pytest.fixture(scope="module", params=BACKENDS)
def runtime(request) -> LLMRuntime:
    rt = make_runtime(request.param)
    yield rt
    rt.close()


@pytest.fixture
def served(runtime) -> ServedModel:
    """Admission over the module's backend (not closed here: that would close the backend)."""
    return ServedModel(runtime, max_queue=4)


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


def busy(runtime: LLMRuntime) -> int:
    return runtime.health()["busy"]


# -- the backend contract ---------------------------------------------------------------------------


def test_protocol_and_health(runtime):
    assert isinstance(runtime, LLMRuntime)
    assert runtime.backend in ("llama.cpp", "vllm", "echo") and runtime.context_length == CONTEXT
    assert runtime.capacity == 1
    health = runtime.health()
    assert health["ok"] is True and health["name"] == runtime.name and health["busy"] == 0
    assert health["capacity"] == 1 and health["context_length"] == CONTEXT


def test_render_chat_and_count_tokens(runtime):
    prompt = runtime.render_chat(STORY)
    assert "lighthouse keeper" in prompt and "storyteller" in prompt
    assert 10 < runtime.count_tokens(prompt) < 100
    with pytest.raises(InvalidInput, match="role"):
        ChatMessage("robot", "x")
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
    assert busy(runtime) == 0


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
    others = {
        runtime.generate(prompt, GenerationParams(max_tokens=12, temperature=1.0, seed=s)).text
        for s in (1, 2)
    }
    assert len(others | {first}) > 1  # the seed is used at all


def test_prompt_too_long_is_invalid_input(runtime):
    too_long = "lamp " * (CONTEXT + 10)
    with pytest.raises(InvalidInput, match="context holds 512"):
        runtime.generate(too_long, greedy(4))
    with pytest.raises(InvalidInput, match="context holds 512"):
        runtime.stream(too_long, greedy(4))
    assert busy(runtime) == 0


def test_max_tokens_is_clamped_to_the_context_left(runtime):
    words = CONTEXT - 8
    prompt = " lamp" * words
    done = runtime.generate(prompt, GenerationParams(max_tokens=None, temperature=0.0))
    assert done.prompt_tokens + done.completion_tokens <= CONTEXT
    assert done.prompt_tokens >= words - 1
    huge = runtime.generate(prompt, GenerationParams(max_tokens=10_000, temperature=0.0))
    assert huge.prompt_tokens + huge.completion_tokens <= CONTEXT


def test_beyond_capacity_it_refuses_and_closing_a_stream_frees_it(runtime):
    prompt = runtime.render_chat(STORY)
    stream = runtime.stream(prompt, greedy(400))
    assert next(stream).finish_reason is None
    assert busy(runtime) == 1
    with pytest.raises(TooManyRequests):  # no admission in front: a backend never queues
        runtime.stream(prompt, greedy(4))
    stream.close()
    assert list(stream) == []  # nothing more after close
    assert busy(runtime) == 0
    assert runtime.generate(prompt, greedy(4)).completion_tokens <= 4


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
    wait_until(lambda: busy(runtime) == 0)


def test_cancel_event_stops_generation(runtime):
    prompt = runtime.render_chat(STORY)
    cancel = threading.Event()
    stream = runtime.stream(prompt, greedy(400), cancel=cancel)
    next(stream)
    cancel.set()
    rest = list(stream)
    assert rest[-1].finish_reason == "cancelled"
    assert stream.stats is not None and stream.stats.completion_tokens < 400
    assert busy(runtime) == 0

    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    done = runtime.generate(prompt, greedy(400), cancel=cancel)
    assert done.finish_reason == "cancelled" and done.completion_tokens < 400


@pytest.mark.parametrize("kind", BACKENDS)
def test_close_lets_running_requests_finish_and_refuses_new_ones(kind):
    rt = make_runtime(kind)
    prompt = rt.render_chat(STORY)
    stream = rt.stream(prompt, greedy(400))
    next(stream)
    closer, _ = in_thread(rt.close)
    wait_until(lambda: not rt.health()["ok"])  # closing has begun
    with pytest.raises(NotReady):
        rt.stream(prompt, greedy(4))
    assert closer.is_alive()  # it waits for the running stream, which still reads
    assert next(stream).finish_reason is None
    stream.close()
    closer.join(30)
    assert not closer.is_alive() and busy(rt) == 0


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer"},
        "role": {"enum": ["keeper", "sailor"]},
    },
    "required": ["name", "age", "role"],
}


def test_a_grammar_is_honoured_or_refused(runtime):
    """Constrained decoding: a runtime that claims it keeps the output inside the grammar; one that
    does not refuses the request (never generates as if there were no grammar)."""
    prompt = runtime.render_chat([ChatMessage("user", "Describe the keeper as JSON.")])
    params = GenerationParams(max_tokens=60, temperature=1.0, seed=3, grammar=json_grammar(PERSON))
    if not runtime.constrained_decoding:
        with pytest.raises(InvalidInput) as refused:
            runtime.generate(prompt, params)
        assert refused.value.extra["param"] == "response_format" and busy(runtime) == 0
        return
    done = runtime.generate(prompt, params)
    value = json.loads(done.text)
    assert set(value) == {"name", "age", "role"} and isinstance(value["age"], int)
    assert value["role"] in ("keeper", "sailor") and len(value["name"]) <= 12
    streamed = "".join(d.text for d in runtime.stream(prompt, params))
    assert streamed == done.text  # the same seed under the same grammar: the same output
    assert busy(runtime) == 0


def test_tools_render_natively_or_are_refused(runtime):
    tool = {"type": "function", "function": {"name": "lamp", "parameters": {"type": "object"}}}
    if runtime.native_tools:
        assert "lamp" in runtime.render_chat(STORY, [tool])
    else:
        with pytest.raises(InvalidInput) as refused:
            runtime.render_chat(STORY, [tool])
        assert refused.value.extra["param"] == "tools"


def test_invalid_generation_parameters_name_the_parameter():
    for bad in (
        {"max_tokens": 0},
        {"temperature": -1},
        {"top_p": 0},
        {"stop": ("",)},
        {"seed": -1},
        {"stop": ("a", "b", "c", "d", "e")},
    ):
        with pytest.raises(InvalidInput) as refused:
            GenerationParams(**bad)
        assert refused.value.extra["param"] == next(iter(bad))


# -- ServedModel over each backend ------------------------------------------------------------------


def test_served_model_is_a_runtime_and_serves_what_the_backend_would(served, runtime):
    assert isinstance(served, LLMRuntime) and served.name == runtime.name and served.capacity == 1
    prompt = served.render_chat(STORY)
    direct = runtime.generate(prompt, greedy(16))
    stream = served.stream(prompt, greedy(16))
    deltas = list(stream)
    assert "".join(d.text for d in deltas) == direct.text and deltas[-1].finish_reason == direct.finish_reason
    stats = stream.stats
    assert stats.completion_tokens == direct.completion_tokens and stats.prompt_tokens == direct.prompt_tokens
    assert 0 <= stats.queued_s <= stats.time_to_first_token_s <= stats.total_s
    queue = served.health()["queue"]
    assert queue["in_use"] == 0 and queue["served"] == 1 and busy(runtime) == 0


def test_closing_a_stream_frees_the_slot_for_the_next_request(served, runtime):
    prompt = served.render_chat(STORY)
    stream = served.stream(prompt, greedy(400))
    first = next(stream)
    assert first.finish_reason is None
    assert served.health()["queue"]["in_use"] == 1
    thread, result = in_thread(served.generate, prompt, greedy(4))
    wait_until(lambda: served.health()["queue"]["waiting"] == 1)  # queued behind the open stream
    stream.close()
    thread.join(30)
    assert not thread.is_alive() and "error" not in result
    assert result["value"].completion_tokens <= 4
    assert result["value"].queued_s > 0 and result["value"].time_to_first_token_s >= result["value"].queued_s
    assert list(stream) == []  # nothing more after close
    assert served.health()["queue"]["in_use"] == 0 and busy(runtime) == 0


def test_close_from_another_thread_stops_a_served_stream_being_read(served, runtime):
    stream = served.stream(served.render_chat(STORY), greedy(400))
    received: list = []
    reader = threading.Thread(target=lambda: received.extend(stream), daemon=True)
    reader.start()
    wait_until(lambda: len(received) >= 2)
    stream.close()
    reader.join(10)
    assert not reader.is_alive()
    # The backend heard the close too: it ended its request instead of running to 400 tokens.
    assert received[-1].finish_reason in ("cancelled", None) and len(received) < 400
    wait_until(lambda: served.health()["queue"]["in_use"] == 0 and busy(runtime) == 0)


def test_cancel_while_queued_raises_cancelled(served):
    prompt = served.render_chat(STORY)
    with served.stream(prompt, greedy(400)) as holder:
        next(holder)
        cancel = threading.Event()
        thread, result = in_thread(served.generate, prompt, greedy(4), cancel)
        wait_until(lambda: served.health()["queue"]["waiting"] == 1)
        cancel.set()
        thread.join(5)
        assert isinstance(result.get("error"), Cancelled)
        assert served.health()["queue"]["waiting"] == 0
    assert served.health()["queue"]["in_use"] == 0


def test_a_prompt_that_cannot_fit_is_refused_without_queueing(served):
    with served.stream(served.render_chat(STORY), greedy(400)) as holder:
        next(holder)  # the only slot is taken: a request that queued would wait here
        with pytest.raises(InvalidInput, match="context holds 512"):
            served.stream("lamp " * (CONTEXT + 10), greedy(4))
        assert served.health()["queue"]["waiting"] == 0


@pytest.mark.parametrize("kind", BACKENDS)
def test_closing_a_served_model_turns_the_queue_away_and_closes_the_backend(kind):
    rt = make_runtime(kind)
    served = ServedModel(rt, max_queue=2)
    prompt = served.render_chat(STORY)
    stream = served.stream(prompt, greedy(400))
    next(stream)
    waiter, result = in_thread(served.generate, prompt, greedy(4))
    wait_until(lambda: served.health()["queue"]["waiting"] == 1)
    closer, _ = in_thread(served.close)
    waiter.join(10)
    assert isinstance(result.get("error"), NotReady) and "unloaded while this request waited" in str(
        result["error"]
    )
    with pytest.raises(NotReady):
        served.stream(prompt, greedy(4))
    assert not served.health()["ok"]
    assert next(stream).finish_reason is None  # the running request goes on until it ends
    stream.close()
    closer.join(30)
    assert not closer.is_alive() and not rt.health()["ok"]  # then the backend was closed
    assert served.health()["queue"]["in_use"] == 0


def test_vllm_adapter_maps_parameters_and_aborts():
    """Double-only checks: what the adapter hands the engine, and that a close aborts the engine request."""
    rt = VLLMDouble(Path("/models/fake"), "fake-vllm", context_length=CONTEXT, max_concurrent=2)
    try:
        prompt = rt.render_chat(STORY)
        rt.generate(prompt, GenerationParams(max_tokens=7, temperature=0.3, top_p=0.9, stop=("x",), seed=5))
        ids, sp = rt.fake_engine.requests[-1]
        assert ids == FakeTokenizer().encode(prompt) and ids[0] == 1
        assert sp == FakeSamplingParams(n=1, max_tokens=7, temperature=0.3, top_p=0.9, stop=["x"], seed=5)
        grammar = json_grammar(PERSON)
        rt.generate(prompt, GenerationParams(max_tokens=7, grammar=grammar))
        # A JSON-schema grammar goes to vLLM as the schema (its JSON mode), not as GBNF.
        assert rt.fake_engine.requests[-1][1].structured_outputs == FakeStructuredOutputsParams(
            json=grammar.json_schema
        )
        rt.generate(prompt, GenerationParams(temperature=0.0))
        assert rt.fake_engine.requests[-1][1].max_tokens == CONTEXT - len(
            ids
        )  # None: clamped to the room left
        assert rt.fake_engine.requests[-1][1].stop is None
        stream = rt.stream(prompt, greedy(400))
        next(stream)
        stream.close()
        wait_until(lambda: len(rt.fake_engine.aborted) == 1)
    finally:
        rt.close()
    assert rt.fake_engine.shut_down and not rt.health()["ok"]
