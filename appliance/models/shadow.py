"""Shadow traffic off the hot path: a bounded queue of mirrored requests, one worker, dropped when full."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class ShadowMirror:
    """Mirrored requests wait in a queue of at most `capacity`; one worker thread runs them through
    `handle`. `offer` never blocks and never raises: a full queue drops the request (counted), so
    production never waits for, or fails because of, its shadow."""

    def __init__(self, handle: Callable[[Any], None], capacity: int = 16, name: str = "shadow") -> None:
        self.capacity = max(1, capacity)
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=self.capacity)
        self._name = name
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.offered = 0
        self.dropped = 0
        self.done = 0
        self.failed = 0
        self.max_depth = 0  # the deepest the queue ever was: never above capacity

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def offer(self, item: Any) -> bool:
        """Queue `item` for the worker; False (dropped) when the queue is full or the mirror stopped."""
        with self._lock:
            self.offered += 1
            if self._stop.is_set():
                self.dropped += 1
                return False
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1
                return False
            self.max_depth = max(self.max_depth, self._queue.qsize())
            return True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(item)
                ok = True
            except Exception:  # one mirrored request failing never stops the mirror
                log.exception("a shadow request failed")
                ok = False
            finally:
                self._queue.task_done()
            with self._lock:
                self.done += ok
                self.failed += not ok

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued request was handled (tests, the benchmark); False on timeout."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "capacity": self.capacity,
                "depth": self._queue.qsize(),
                "max_depth": self.max_depth,
                "offered": self.offered,
                "dropped": self.dropped,
                "done": self.done,
                "failed": self.failed,
            }

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
