"""Rate limits: per-key token buckets (requests and model tokens per minute), and per-client failed authentications."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.errors import TooManyRequests

# Buckets that have refilled completely carry no information (a new bucket starts full), so they are
# dropped on a sweep this often; memory is then bounded by the keys active in the last minute or so.
SWEEP_EVERY_SECONDS = 60.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    limit: int  # per minute, as of the last update


class RateLimiter:
    """Token buckets keyed by API key id, refilled continuously at limit/60 per second.

    Requests: `check_request` takes one token from the key's rpm bucket, or raises TooManyRequests.
    Model tokens follow OpenAI's rule rather than reserve-and-settle: a generation's token count is
    only known when it ends, so `charge_tokens` takes the actual count afterwards and may drive the
    balance negative; while it is negative, `check_request` refuses the key's requests until the
    refill brings it back to zero. A request therefore never waits for an estimate, one request may
    overshoot the budget by its own size, and the key pays for it with the wait that follows.

    A limit of 0 or None means unlimited. Limits are passed on each call (they live on the key),
    so changing a key's limit takes effect at its next request.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._next_sweep = clock() + SWEEP_EVERY_SECONDS

    def _bucket(self, key_id: str, kind: str, limit: int, now: float) -> _Bucket:
        """Called under the lock: the key's bucket, refilled up to now (new buckets start full)."""
        bucket = self._buckets.get((key_id, kind))
        if bucket is None:
            bucket = self._buckets[(key_id, kind)] = _Bucket(float(limit), now, limit)
            return bucket
        elapsed = max(0.0, now - bucket.updated)
        # min() also applies a lowered limit at once; a raised one fills in over the next minute.
        bucket.tokens = min(float(limit), bucket.tokens + elapsed * limit / 60.0)
        bucket.updated = now
        bucket.limit = limit
        return bucket

    def check_request(self, key_id: str, rpm: int | None, tpm: int | None = None) -> None:
        """Admit one request of `key_id`, or raise TooManyRequests with retry_after (whole seconds, rounded up)."""
        now = self._clock()
        with self._lock:
            self._maybe_sweep(now)
            # Tokens first, and without taking anything: a refused request must not spend an rpm token.
            if tpm:
                tokens = self._bucket(key_id, "tpm", tpm, now)
                if tokens.tokens < 0:
                    wait = -tokens.tokens * 60.0 / tpm
                    raise TooManyRequests(
                        f"token rate limit of {tpm} tokens per minute reached for this key; retry after {wait:.1f} s",
                        retry_after=wait,
                        code="rate_limit_exceeded",
                    )
            if rpm:
                requests = self._bucket(key_id, "rpm", rpm, now)
                if requests.tokens < 1.0:
                    wait = (1.0 - requests.tokens) * 60.0 / rpm
                    raise TooManyRequests(
                        f"rate limit of {rpm} requests per minute reached for this key; retry after {wait:.1f} s",
                        retry_after=wait,
                        code="rate_limit_exceeded",
                    )
                requests.tokens -= 1.0

    def charge_tokens(self, key_id: str, tpm: int | None, n: int) -> None:
        """Charge `n` model tokens (prompt + completion) used by a finished request; may go into debt."""
        if not tpm or n <= 0:
            return
        now = self._clock()
        with self._lock:
            self._bucket(key_id, "tpm", tpm, now).tokens -= n

    def remaining(self, key_id: str, rpm: int | None, tpm: int | None = None) -> dict[str, float | None]:
        """What the key has left now (None where unlimited), for x-ratelimit-* response headers."""
        now = self._clock()
        with self._lock:
            return {
                "requests": self._bucket(key_id, "rpm", rpm, now).tokens if rpm else None,
                "tokens": self._bucket(key_id, "tpm", tpm, now).tokens if tpm else None,
            }

    def __len__(self) -> int:
        """Buckets held (memory bound check)."""
        with self._lock:
            return len(self._buckets)

    def _maybe_sweep(self, now: float) -> None:
        """Called under the lock: drop buckets that would be full by now (one in debt stays until repaid)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY_SECONDS
        full = [
            k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * b.limit / 60.0 >= b.limit
        ]
        for k in full:
            del self._buckets[k]


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """One client's window of refused unauthenticated requests, of which only the first were audited."""

    client: str
    audited: int  # refusals audited one by one (answered 401)
    counted: int  # refusals past the allowance, counted only (answered 429)
    window_seconds: float


@dataclass(slots=True)
class _Window:
    start: float
    audited: int = 0
    counted: int = 0


class FailedAuthLimiter:
    """Requests refused for a missing or bad key, per client address, in fixed windows that open at
    a client's first refusal. The first `per_window` refusals of a window are answered 401 and
    audited one by one; past them the client is refused 429 until the window ends, whatever key it
    sends (were a right key still let through, the change from 401 to 200 would tell a guesser when
    it found one), and its refusals are only counted, into one summary per window. So a flood of
    bad keys costs a bounded number of audit rows: at most `per_window` + 1 per client and window.

    Memory holds the clients with an open window, at most `max_clients`; past that, new clients are
    counted together under "*" (their refusals stay bounded in the audit, none is blocked for it).
    """

    OVERFLOW = "*"

    def __init__(
        self,
        per_window: int,
        window_seconds: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_seconds = window_seconds
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}  # in order of opening: the oldest ends first
        self._ended: list[RefusalSummary] = []

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again, or None when it is not over its allowance."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            window = self._windows.get(client)
            if window is None or window.audited < self.per_window:
                return None
            return window.start + self.window_seconds - now

    def refused(self, client: str) -> bool:
        """Count one refused unauthenticated request of `client`; True while it is to be audited by itself."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            window = self._windows.get(client)
            if window is None:
                if len(self._windows) >= self.max_clients:
                    client = self.OVERFLOW
                window = self._windows.setdefault(client, _Window(now))
            if window.audited < self.per_window:
                window.audited += 1
                return True
            window.counted += 1
            return False

    def summaries(self, final: bool = False) -> list[RefusalSummary]:
        """The windows that ended (every open one too when `final`, at shutdown) with refusals that
        were only counted; each is handed out once."""
        now = self._clock()
        with self._lock:
            self._expire(float("inf") if final else now)
            ended, self._ended = self._ended, []
            return ended

    def _expire(self, now: float) -> None:
        """Called under the lock: close the windows that ended by `now`."""
        while self._windows:
            client, window = next(iter(self._windows.items()))
            if window.start + self.window_seconds > now:
                return
            del self._windows[client]
            if window.counted:
                self._ended.append(
                    RefusalSummary(client, window.audited, window.counted, self.window_seconds)
                )

    def __len__(self) -> int:
        """Clients with an open window (memory bound check)."""
        with self._lock:
            return len(self._windows)
