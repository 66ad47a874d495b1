"""Retry helper used by internal services when calling each other."""

import random
import time


def backoff_delays(attempts: int, base: float = 0.2, cap: float = 10.0):
    """Exponential backoff with full jitter: the delay before each retry, in seconds."""
    for attempt in range(attempts):
        yield random.uniform(0, min(cap, base * 2**attempt))


def call_with_retries(fn, attempts: int = 5, retry_on=(ConnectionError, TimeoutError)):
    """Call fn, retrying transient network errors. Other errors propagate at once."""
    last = None
    for delay in backoff_delays(attempts):
        try:
            return fn()
        except retry_on as exc:
            last = exc
            time.sleep(delay)
    raise last
