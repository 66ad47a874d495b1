"""Circuit breakers per tool: the models' CircuitBreaker, one per tool, made with that tool's own spec."""

from __future__ import annotations

import threading
import time

from appliance.models.breaker import CLOSED, OPEN, CircuitBreaker


class Breakers:
    """In-process state, shared by every run of this appliance (a breaker protects the tool, not a
    run). A tool without a `breaker` spec never opens. After `failures` failures within `window_s`
    calls go to the fallback (or fail fast) for `cooldown_s`; then one trial call decides."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._by_tool: dict[str, CircuitBreaker] = {}

    def _breaker(self, tool: str, spec: dict) -> CircuitBreaker:
        with self._lock:
            if tool not in self._by_tool:
                self._by_tool[tool] = CircuitBreaker(
                    spec.get("failures", 5), spec.get("window_s", 60), spec.get("cooldown_s", 30), self._clock
                )
            return self._by_tool[tool]

    def is_open(self, tool: str) -> bool:
        """Whether a call must not go to the tool now (a half-open breaker lets one trial through)."""
        breaker = self._by_tool.get(tool)
        return breaker is not None and not breaker.allow()

    def failure(self, tool: str, spec: dict | None) -> bool:
        """Count a failed call; True when this opened the breaker."""
        if not spec:
            return False
        breaker = self._breaker(tool, spec)
        before = breaker.state
        breaker.failure()
        return before != OPEN and breaker.state == OPEN

    def success(self, tool: str) -> None:
        if (breaker := self._by_tool.get(tool)) is not None:
            breaker.success()

    def states(self) -> dict[str, str]:
        with self._lock:
            breakers = list(self._by_tool.items())
        return {tool: b.state for tool, b in breakers if b.state != CLOSED}

    def all_states(self) -> dict[str, str]:
        """Every tool's breaker that has been made (at its first failure), closed ones included."""
        with self._lock:
            breakers = list(self._by_tool.items())
        return {tool: b.state for tool, b in breakers}
