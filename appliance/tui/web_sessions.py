"""The web console's browser sessions: random tokens that stand for an API key, ending when idle, when old, or on sign-out."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

IDLE_MINUTES = 30.0
MAX_HOURS = 12.0
MAX_SESSIONS = 1000


@dataclass(slots=True)
class WebSession:
    key: str
    opened: float  # clock seconds
    seen: float  # the last request or console message of its browser
    consoles: int = 0  # consoles open now: a session in use is not idle


class WebSessions:
    """Sessions by token. One ends `idle_seconds` after its browser was last seen with no console
    open, `max_seconds` after sign-in whatever it does (an open console is closed then: see
    `remaining`), on sign-out, or when more than `limit` are open (the least recently seen goes)."""

    def __init__(
        self,
        idle_seconds: float = IDLE_MINUTES * 60,
        max_seconds: float = MAX_HOURS * 3600,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_seconds <= 0 or max_seconds <= 0 or limit < 1:
            raise ValueError("idle and maximum session lengths must be positive, the limit at least 1")
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        # By the SHA-256 of the token: a lookup is a dict get, and the table never holds a
        # credential a browser could present (the token is random, so its hash leaks nothing).
        self._sessions: dict[bytes, WebSession] = {}

    def open(self, key: str) -> str:
        """A new session for `key`; its token goes in the browser's cookie."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._expire(now)
            while len(self._sessions) >= self.limit:
                oldest = min(self._sessions, key=lambda t: self._sessions[t].seen)
                del self._sessions[oldest]
            self._sessions[_digest(token)] = WebSession(key, now, now)
        return token

    def key(self, token: str) -> str | None:
        """The key `token` stands for (None when unknown or ended); the browser counts as seen."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            session = self._find(token)
            if session is None:
                return None
            session.seen = now
            return session.key

    def hold(self, token: str) -> None:
        """A console of this session opened: it is not idle until `release`."""
        with self._lock:
            if session := self._find(token):
                session.consoles += 1
                session.seen = self._clock()

    def release(self, token: str) -> None:
        with self._lock:
            if session := self._find(token):
                session.consoles = max(0, session.consoles - 1)
                session.seen = self._clock()

    def remaining(self, token: str) -> float:
        """Seconds until the session reaches its maximum length (0 when unknown or ended)."""
        now = self._clock()
        with self._lock:
            session = self._find(token)
            return 0.0 if session is None else max(0.0, session.opened + self.max_seconds - now)

    def close(self, token: str) -> None:
        """Sign-out: the token stands for nothing from now on."""
        with self._lock:
            self._sessions.pop(_digest(token), None)

    def end_key(self, key: str) -> None:
        """End every session of `key` (the API no longer accepts it)."""
        with self._lock:
            for digest in [d for d, s in self._sessions.items() if s.key == key]:
                del self._sessions[digest]

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._sessions)

    def _find(self, token: str) -> WebSession | None:
        return self._sessions.get(_digest(token))

    def _expire(self, now: float) -> None:
        ended = [
            digest
            for digest, s in self._sessions.items()
            if now - s.opened >= self.max_seconds or (s.consoles == 0 and now - s.seen >= self.idle_seconds)
        ]
        for digest in ended:
            del self._sessions[digest]


def _digest(token: str) -> bytes:
    # Any text a cookie may hold, characters outside ASCII included.
    return hashlib.sha256(token.encode(errors="surrogatepass")).digest()
