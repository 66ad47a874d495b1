"""Circuit breakers per tool: after `failures` failures within `window_s`, calls go to the fallback
(or fail fast) until `cooldown_s` has passed; then one trial call decides."""

from __future__ import annotations

import threading
import time
from collections import deque


class Breakers:
    """In-process state, shared by every run of this appliance (a breaker protects the tool, not a run)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._open_until: dict[str, float] = {}

    def is_open(self, tool: str) -> bool:
        with self._lock:
            until = self._open_until.get(tool)
            if until is None:
                return False
            if self._clock() >= until:
                # Half-open: let the next call through; a failure opens the breaker again.
                del self._open_until[tool]
                self._failures.pop(tool, None)
                return False
            return True

    def failure(self, tool: str, spec: dict | None) -> bool:
        """Count a failed call; True when this opened the breaker."""
        if not spec:
            return False
        now = self._clock()
        with self._lock:
            window = self._failures.setdefault(tool, deque())
            window.append(now)
            while window and window[0] < now - spec.get("window_s", 60):
                window.popleft()
            if len(window) >= spec.get("failures", 5):
                self._open_until[tool] = now + spec.get("cooldown_s", 30)
                window.clear()
                return True
        return False

    def success(self, tool: str) -> None:
        with self._lock:
            self._failures.pop(tool, None)

    def states(self) -> dict[str, str]:
        with self._lock:
            now = self._clock()
            return {t: "open" if until > now else "half_open" for t, until in self._open_until.items()}
