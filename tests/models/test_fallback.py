"""Circuit breakers and fallbacks until the first token, over echo runtimes with injected faults."""

from __future__ import annotations

import threading

import pytest

from appliance.errors import NotReady
from appliance.models.breaker import CLOSED, HALF_OPEN, OPEN, Breakers, CircuitBreaker
from appliance.models.echo import EchoRuntime
from appliance.models.fallback import Timeouts, open_first
from appliance.models.router import RouteDecision
from appliance.models.runtime import GenerationParams, TokenStream, collect
from appliance.models.served import ServedModel

PARAMS = GenerationParams(max_tokens=4, temperature=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Faulty(EchoRuntime):
    """An echo runtime that fails on demand: before its first token, or after `fail_after` tokens."""

    def __init__(self, name: str, token_delay_s: float = 0.0) -> None:
        super().__init__(name, context_length=256, token_delay_s=token_delay_s)
        self.fail_before_first = False
        self.fail_after: int | None = None

    def stream(self, prompt, params, cancel=None) -> TokenStream:
        if self.fail_before_first:
            raise RuntimeError(f"{self.name}: CUDA error: an illegal memory access")
        inner = super().stream(prompt, params, cancel)
        if self.fail_after is None:
            return inner
        limit = self.fail_after

        def source(ts):
            for i, delta in enumerate(inner):
                if i >= limit:
                    raise RuntimeError(f"{self.name} crashed mid-stream")
                yield delta

        return TokenStream(source, inner.close)


def test_breaker_opens_after_failures_in_window_and_half_opens_after_cooldown():
    clock = Clock()
    b = CircuitBreaker(failures=3, window_s=60, cooldown_s=30, clock=clock)
    b.failure()
    clock.now += 61  # the first failure leaves the window
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.allow()
    b.failure()
    assert b.state == OPEN and not b.allow() and b.retry_after_s() == 30
    clock.now += 30
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()  # one trial at a time
    b.failure()  # the trial failed: open for another cooldown
    assert b.state == OPEN
    clock.now += 30
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow() and b.allow()


def _pool(*runtimes):
    models = {r.name: ServedModel(r, max_queue=4) for r in runtimes}

    def get(name, cancel, on_position):
        return models[name]

    return models, get


def _build(served):
    return "<|user|>\nalpha beta gamma\n<|assistant|>\n", None, PARAMS


def _decision(*names: str) -> RouteDecision:
    return RouteDecision(names[0], "code", "test", 0.9, names)


def test_fallback_before_the_first_token_to_the_next_model():
    first, second = Faulty("first"), Faulty("second")
    first.fail_before_first = True
    _, get = _pool(first, second)
    errors: list[tuple[str, str]] = []
    breakers = Breakers(failures=2, clock=Clock())
    opened = open_first(
        _decision("first", "second"), get, _build, breakers, Timeouts(), on_error=lambda *e: errors.append(e)
    )
    assert opened.served.name == "second" and collect(opened.stream).text == "alpha beta gamma alpha"
    assert (
        opened.decision.model == "second"
        and "first (error before the first token" in opened.decision.header()
    )
    assert errors == [("first", "generation")] and breakers("first").state == CLOSED
    collect(open_first(_decision("first", "second"), get, _build, breakers, Timeouts()).stream)
    assert breakers("first").state == OPEN  # two failures: the third request skips it
    skipped = open_first(_decision("first", "second"), get, _build, breakers, Timeouts())
    assert "first (circuit open)" in skipped.decision.header()
    collect(skipped.stream)


def test_no_fallback_after_the_first_token():
    first, second = Faulty("first"), Faulty("second")
    first.fail_after = 2
    _, get = _pool(first, second)
    breakers = Breakers(failures=1, clock=Clock())
    opened = open_first(_decision("first", "second"), get, _build, breakers, Timeouts())
    assert opened.served.name == "first"
    seen = []
    with pytest.raises(RuntimeError, match="crashed mid-stream"):
        for delta in opened.stream:
            seen.append(delta.text)
    assert seen == ["alpha", " beta"]  # what was sent stays sent; no second model's text follows
    assert second.health()["busy"] == 0 and breakers("first").state == OPEN


def test_first_token_timeout_falls_back_and_counts_against_the_slow_model():
    slow, fast = Faulty("slow", token_delay_s=30.0), Faulty("fast")
    _, get = _pool(slow, fast)
    breakers = Breakers(failures=1, clock=Clock())
    errors: list = []
    opened = open_first(
        _decision("slow", "fast"),
        get,
        _build,
        breakers,
        Timeouts(first_token_s=0.05),
        on_error=lambda *e: errors.append(e),
    )
    assert opened.served.name == "fast" and "no first token within 0.05 s" in opened.decision.header()
    assert errors == [("slow", "first_token")] and breakers("slow").state == OPEN
    collect(opened.stream)
    assert slow.health()["busy"] == 0  # the slow model's generation was stopped, its slot freed


def test_total_timeout_ends_the_stream_and_counts_a_failure():
    slow = Faulty("slow", token_delay_s=0.02)
    _, get = _pool(slow)
    breakers = Breakers(failures=1, clock=Clock())
    params = GenerationParams(max_tokens=200, temperature=0.0)
    opened = open_first(
        _decision("slow"), get, lambda s: (_build(s)[0], None, params), breakers, Timeouts(total_s=0.1)
    )
    done = collect(opened.stream)
    assert done.finish_reason == "cancelled" and done.completion_tokens < 200
    assert breakers("slow").state == OPEN


def test_last_candidate_error_is_raised_as_it_is_and_open_breakers_say_when():
    only = Faulty("only")
    only.fail_before_first = True
    _, get = _pool(only)
    breakers = Breakers(failures=1, cooldown_s=30, clock=Clock())
    with pytest.raises(RuntimeError, match="illegal memory access"):
        open_first(_decision("only"), get, _build, breakers, Timeouts())
    with pytest.raises(NotReady) as info:
        open_first(_decision("only"), get, _build, breakers, Timeouts())
    assert info.value.extra["code"] == "model_unavailable" and info.value.extra["retry_after"] == 30


def test_client_cancel_while_opening_is_not_a_model_failure():
    slow = Faulty("slow", token_delay_s=30.0)
    _, get = _pool(slow)
    breakers = Breakers(failures=1, clock=Clock())
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    opened = open_first(_decision("slow"), get, _build, breakers, Timeouts(first_token_s=10), cancel=cancel)
    assert collect(opened.stream).finish_reason == "cancelled"
    assert breakers("slow").state == CLOSED


def test_a_trial_the_client_abandons_lets_the_next_trial_through():
    only = Faulty("only")
    only.fail_before_first = True
    clock = Clock()
    breakers = Breakers(failures=1, cooldown_s=30, clock=clock)
    with pytest.raises(RuntimeError):
        open_first(_decision("only"), get := _pool(only)[1], _build, breakers, Timeouts())
    only.fail_before_first = False
    clock.now += 30
    trial = open_first(_decision("only"), get, _build, breakers, Timeouts())
    trial.stream.close()  # the client left before the end: neither a success nor a failure
    assert breakers("only").state == HALF_OPEN and breakers("only").allow()
