"""A run in progress: its pinned documents, state, gate and the durable record of each step (a step
completed before a crash is returned from its record, never executed again)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.workflows.builtins import Interrupted, RunServices
from appliance.workflows.gate import Gate
from appliance.workflows.memory import summarize, text_of
from appliance.workflows.store import WorkflowStore

log = logging.getLogger(__name__)


class Waiting(Exception):
    """The run waits for a person (approvals): it ends its job and resumes when answered."""

    def __init__(self, approvals: list[str]) -> None:
        super().__init__(f"waiting for approval {', '.join(approvals)}")
        self.approvals = approvals


class StepFailed(Exception):
    """A step that cannot succeed (its retries spent, a refused call, bad input): the run fails."""


@dataclass
class RunContext:
    run_id: str
    key_id: str
    bundle: dict  # workflow, agents, tools, policy, pins: everything pinned when the run started
    inputs: dict
    rows: dict[str, dict]  # step records as the run (re)started
    gate: Gate
    stop: threading.Event
    services: RunServices
    store: WorkflowStore
    collections: list[str] | None  # the policy's collections (None: the key's)
    llm: Any = None  # this run's LLM (charged to its key); None: the engine's
    on_step: Callable[[str, str, float], None] | None = None  # (kind, outcome, seconds), for metrics
    degraded: bool = False
    flags: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # A step's record and the run's usage are written together; fan-out branches of one run take
    # turns (DuckDB refuses two transactions updating the run's row at once).
    write_lock: threading.Lock = field(default_factory=threading.Lock)

    def flag(self, name: str, value: Any) -> None:
        with self.lock:
            self.flags.setdefault(name, []).append(value)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("the run was stopped")

    def done(self, key: str) -> tuple[bool, Any]:
        """(True, output) when the step completed before (its output from the record)."""
        row = self.rows.get(key)
        if row is not None and row["state"] in ("succeeded", "skipped"):
            return True, json.loads(row["output"]) if row["output"] is not None else None
        return False, None

    def durable(
        self,
        key: str,
        step_id: str,
        parent: str | None,
        ordinal: int,
        kind: str,
        input: Any,
        work: Callable[[int], Any],
        count_step: str | None | bool = False,
    ) -> Any:
        """Run `work(attempt)` as a recorded step, or return the output recorded before."""
        finished, output = self.done(key)
        if finished:
            return output
        self.check_stop()
        if count_step is not False:
            self.gate.before_step(count_step if isinstance(count_step, str) else None)
        attempt = self.store.begin_step(
            self.run_id, key, step_id, parent, ordinal, kind, input, first=key not in self.rows
        )
        started = time.perf_counter()
        tokens_before = self.gate.usage["tokens"]
        try:
            output = work(attempt)
        except Interrupted:
            raise  # stays `running`: resumed from here
        except Waiting:
            self._end(key, "waiting", None, None, 0, None)
            raise
        except Exception as exc:
            seconds = time.perf_counter() - started
            state = "refused" if type(exc).__name__ == "Refused" else "failed"
            self._end(key, state, None, str(exc), 0, seconds * 1000)
            if self.on_step:
                self.on_step(kind, state, seconds)
            raise
        seconds = time.perf_counter() - started
        tokens = int(self.gate.usage["tokens"] - tokens_before) if kind == "llm" else 0
        self._end(key, "succeeded", output, None, tokens, seconds * 1000)
        if self.on_step:
            self.on_step(kind, "succeeded", seconds)
        return output

    def _end(
        self, key: str, state: str, output: Any, error: str | None, tokens: int, ms: float | None
    ) -> None:
        with self.write_lock:
            self.store.end_step(self.run_id, key, state, output, error, tokens, ms, self.gate.snapshot())

    # -- long-term memory ------------------------------------------------------------------------
    def embed(self, text: str, document: bool = False) -> tuple[str, list[float]] | None:
        """The text's vector, or None: an embedder that fails leaves memory to words, never fails a
        run (memory is a hint; the run's own work decides its outcome)."""
        try:
            return self.services.embed(text, document)
        except Exception:
            log.warning("memory embedding failed; ranking by words", exc_info=True)
            return None

    def recall(
        self, key: str, parent: str | None, ordinal: int, scope: str, memory: dict, query: str
    ) -> list[dict]:
        """The key's memories of `scope` (a workflow, or `agent:<name>`) most relevant to `query`, as
        a recorded step: the trace shows what was given, and a resumed run reads the same back."""

        def work(attempt: int) -> list[dict]:
            found = self.store.recall(
                self.key_id, scope, query, memory["top_k"], self.embed(query), memory["min_similarity"]
            )
            return [
                {"summary": m.summary, "run_id": m.run_id, "score": m.score, "created_at": m.created_at}
                for m in found
            ]

        return self.durable(key, key, parent, ordinal, "memory", {"scope": scope, **memory}, work)

    def remember(self, scope: str, inputs: Any, outputs: Any) -> None:
        vector = self.embed(f"{text_of(inputs)} {text_of(outputs)}", document=True)
        self.store.remember(self.key_id, scope, self.run_id, summarize(inputs, outputs), vector)

    def skip(self, key: str, step_id: str, ordinal: int, kind: str) -> None:
        if self.done(key)[0]:
            return
        self.store.begin_step(
            self.run_id, key, step_id, None, ordinal, kind, None, first=key not in self.rows
        )
        self.store.end_step(self.run_id, key, "skipped", None, None, 0, 0.0)
