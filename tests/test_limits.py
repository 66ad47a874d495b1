"""Rate limits: token buckets per key for requests and model tokens, on a clock the test moves."""

from __future__ import annotations

import threading

import pytest

from appliance.errors import TooManyRequests
from appliance.limits import SWEEP_EVERY_SECONDS, FailedAuthLimiter, RateLimiter, RefusalSummary


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_rpm_allows_a_burst_of_rpm_then_refuses(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    for _ in range(3):
        limiter.check_request("key_a", rpm=3)
    with pytest.raises(TooManyRequests) as caught:
        limiter.check_request("key_a", rpm=3)
    assert caught.value.status == 429
    # One request comes back every 20 s at 3 per minute.
    assert caught.value.retry_after == 20
    assert "3 requests per minute" in caught.value.detail


def test_retry_after_rounds_up_and_is_honest(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    limiter.check_request("key_a", rpm=7)
    for _ in range(6):
        limiter.check_request("key_a", rpm=7)
    clock.advance(1.0)
    with pytest.raises(TooManyRequests) as caught:
        limiter.check_request("key_a", rpm=7)
    # A token takes 60/7 = 8.57 s; 1 s has passed: 7.57 s left, announced as 8.
    assert caught.value.retry_after == 8
    clock.advance(7.5)
    with pytest.raises(TooManyRequests):
        limiter.check_request("key_a", rpm=7)
    clock.advance(0.1)
    limiter.check_request("key_a", rpm=7)


def test_bucket_refills_but_never_beyond_its_limit(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    for _ in range(60):
        limiter.check_request("key_a", rpm=60)
    with pytest.raises(TooManyRequests):
        limiter.check_request("key_a", rpm=60)
    clock.advance(1.0)
    limiter.check_request("key_a", rpm=60)  # one per second
    clock.advance(3600.0)  # an hour idle still allows only one minute's worth at once
    for _ in range(60):
        limiter.check_request("key_a", rpm=60)
    with pytest.raises(TooManyRequests):
        limiter.check_request("key_a", rpm=60)


def test_keys_are_independent(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    limiter.check_request("key_a", rpm=1)
    with pytest.raises(TooManyRequests):
        limiter.check_request("key_a", rpm=1)
    limiter.check_request("key_b", rpm=1)
    limiter.charge_tokens("key_a", tpm=100, n=1000)
    limiter.check_request("key_b", rpm=None, tpm=100)


def test_no_limit_means_unlimited(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    for _ in range(1000):
        limiter.check_request("key_a", rpm=0, tpm=None)
    limiter.charge_tokens("key_a", tpm=0, n=10**9)
    assert len(limiter) == 0


def test_token_debt_refuses_requests_until_repaid(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    limiter.check_request("key_a", rpm=100, tpm=600)
    limiter.charge_tokens("key_a", tpm=600, n=500)
    limiter.check_request("key_a", rpm=100, tpm=600)  # 100 tokens left: still admitted
    limiter.charge_tokens("key_a", tpm=600, n=400)  # the generation overshoots: 300 in debt
    with pytest.raises(TooManyRequests) as caught:
        limiter.check_request("key_a", rpm=100, tpm=600)
    # 600 per minute refills 10 per second: 300 of debt is 30 s.
    assert caught.value.retry_after == 30
    assert "tokens per minute" in caught.value.detail
    # A refusal for tokens does not spend a request.
    assert limiter.remaining("key_a", rpm=100, tpm=600)["requests"] == pytest.approx(98.0)
    clock.advance(29.0)
    with pytest.raises(TooManyRequests) as caught:
        limiter.check_request("key_a", rpm=100, tpm=600)
    assert caught.value.retry_after == 1
    clock.advance(1.0)
    limiter.check_request("key_a", rpm=100, tpm=600)


def test_lowered_limit_applies_at_once(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    limiter.check_request("key_a", rpm=100)  # 99 left under the old limit
    # The new limit caps what is left at its own burst: 2, not 99.
    limiter.check_request("key_a", rpm=2)
    limiter.check_request("key_a", rpm=2)
    with pytest.raises(TooManyRequests):
        limiter.check_request("key_a", rpm=2)


def test_full_buckets_are_dropped_but_debts_are_kept(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    for n in range(1000):
        limiter.check_request(f"key_{n}", rpm=10)
    limiter.charge_tokens("key_debtor", tpm=60, n=6000)  # 100 minutes of debt
    assert len(limiter) == 1001
    clock.advance(SWEEP_EVERY_SECONDS + 60.0)
    limiter.check_request("key_new", rpm=10)  # a call triggers the sweep
    assert len(limiter) == 2  # key_new and the debtor
    with pytest.raises(TooManyRequests):
        limiter.check_request("key_debtor", rpm=None, tpm=60)


def test_concurrent_requests_never_exceed_the_limit(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    admitted = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            try:
                limiter.check_request("key_a", rpm=100)
            except TooManyRequests:
                continue
            with lock:
                admitted.append(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 100  # the clock stood still: exactly one minute's burst


def test_failed_auth_allowance_then_429_until_the_window_ends(clock: FakeClock) -> None:
    limiter = FailedAuthLimiter(per_window=3, clock=clock)
    assert [limiter.refused("10.0.0.1") for _ in range(3)] == [True, True, True]
    assert limiter.retry_after("10.0.0.1") == 60.0
    assert limiter.retry_after("10.0.0.2") is None  # another client is untouched
    clock.advance(15)
    assert limiter.retry_after("10.0.0.1") == 45.0
    assert [limiter.refused("10.0.0.1") for _ in range(5)] == [False] * 5  # counted, not audited
    assert limiter.summaries() == []  # the window is still open
    clock.advance(45)
    assert limiter.retry_after("10.0.0.1") is None
    assert limiter.summaries() == [RefusalSummary("10.0.0.1", 3, 5, 60.0)]
    assert limiter.summaries() == []  # handed out once
    assert len(limiter) == 0


def test_failed_auth_windows_without_excess_leave_no_summary_and_shutdown_flushes(clock: FakeClock) -> None:
    limiter = FailedAuthLimiter(per_window=2, clock=clock)
    limiter.refused("a")
    for _ in range(4):
        limiter.refused("b")
    clock.advance(61)
    assert limiter.summaries() == [RefusalSummary("b", 2, 2, 60.0)]
    for _ in range(3):
        limiter.refused("c")
    assert limiter.summaries(final=True) == [RefusalSummary("c", 2, 1, 60.0)]


def test_failed_auth_memory_is_bounded_by_max_clients(clock: FakeClock) -> None:
    limiter = FailedAuthLimiter(per_window=1, max_clients=100, clock=clock)
    for i in range(10_000):
        limiter.refused(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 101  # a hundred clients and the one entry the rest share
    # The many are counted together, and none of them is blocked for the others' failures.
    assert limiter.retry_after("10.0.39.15") is None
    overflow = [s for s in limiter.summaries(final=True) if s.client == FailedAuthLimiter.OVERFLOW]
    assert overflow == [RefusalSummary("*", 1, 10_000 - 100 - 1, 60.0)]
