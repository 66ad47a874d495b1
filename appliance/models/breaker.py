"""Circuit breakers per model: stop sending requests to a model that keeps failing, try it again later."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Closed: requests pass, failures are counted. `failures` failures within `window_s` open it:
    requests are refused for `cooldown_s`. Then it is half-open: one trial request passes at a time;
    its success closes the breaker, its failure opens it again for another cooldown.

    `clock` is injectable so that tests move time instead of sleeping.
    """

    def __init__(
        self,
        failures: int = 3,
        window_s: float = 60.0,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = max(1, failures)
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()
        self._opened_at: float | None = None
        self._trial = False  # a half-open trial is under way

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self._clock() - self._opened_at >= self.cooldown_s else OPEN

    def allow(self) -> bool:
        """Whether a request may go to the model now (a half-open breaker lets one trial through)."""
        with self._lock:
            state = self._state()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial:
                self._trial = True
                return True
            return False

    def retry_after_s(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def release(self) -> None:
        """A request let through ended without telling (cancelled, or refused for a reason that is
        not the model's fault): a half-open breaker may let the next trial through."""
        with self._lock:
            self._trial = False

    def success(self) -> None:
        with self._lock:
            self._opened_at, self._trial = None, False
            self._recent.clear()

    def failure(self) -> None:
        with self._lock:
            now = self._clock()
            if self._opened_at is not None:
                # A failed trial (or a late failure of a request admitted before it opened).
                self._opened_at, self._trial = now, False
                return
            self._recent.append(now)
            while self._recent and now - self._recent[0] > self.window_s:
                self._recent.popleft()
            if len(self._recent) >= self.failures:
                self._opened_at = now
                self._recent.clear()

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self._state(), "recent_failures": len(self._recent)}


class Breakers:
    """One CircuitBreaker per model name, made on first use with the same settings."""

    def __init__(
        self,
        failures: int = 3,
        window_s: float = 60.0,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make = lambda: CircuitBreaker(failures, window_s, cooldown_s, clock)
        self._by_model: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def __call__(self, model: str) -> CircuitBreaker:
        key = model.lower()
        with self._lock:
            if key not in self._by_model:
                self._by_model[key] = self._make()
            return self._by_model[key]

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            items = list(self._by_model.items())
        return {name: breaker.snapshot() for name, breaker in items}
