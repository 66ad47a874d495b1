"""Jobs: background work seen by callers (state, cancel, retry, wait) and run by kind from one table."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from appliance.core.access import Scope
from appliance.db.jobs import TERMINAL_STATES, JobStore
from appliance.errors import InvalidInput
from appliance.records import Job

JobRunner = Callable[[str], None]  # runs one job by id; safe to call twice (its lease decides)


class Jobs:
    """Every job kind registers its runner here, built-ins exactly as later capabilities will
    (ingest, sync and verify today); a worker signalled with a job id runs it through `run`."""

    def __init__(self, store: JobStore, signal: Callable[[str], None], wait_timeout: float) -> None:
        self.store = store
        self.signal = signal
        self.wait_timeout = wait_timeout
        self._runners: dict[str, JobRunner] = {}

    def register(self, kind: str, runner: JobRunner) -> None:
        if kind in self._runners:
            raise ValueError(f"a runner for job kind {kind!r} is registered already")
        self._runners[kind] = runner

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._runners)

    def run(self, job_id: str) -> None:
        """Worker entry point."""
        kind = self.store.get(job_id).kind
        runner = self._runners.get(kind)
        if runner is None:
            # A job of a kind this version does not know (written by a newer one): leave it queued.
            raise InvalidInput(f"no runner for job kind {kind!r} (job {job_id})")
        runner(job_id)

    def submit(self, kind: str, collection: str | None, options: dict | None = None) -> Job:
        """Queue a job without items (its runner finds its work); `options` go in its summary."""
        job_id = self.store.create(kind, collection, [])
        if options is not None:
            self.store.set_summary(job_id, {"options": options})
        self.signal(job_id)
        return self.store.get(job_id)

    # -- what callers see ------------------------------------------------------------------------
    def get(self, scope: Scope, job_id: str, with_items: bool = False) -> Job:
        job = self.store.get(job_id)
        scope.check(job.collection, f"job {job_id!r} does not exist")
        if with_items:
            job = msgspec.structs.replace(job, items=self.store.items(job_id))
        return job

    def list(self, scope: Scope, state: str | None = None, limit: int = 50) -> list[Job]:
        return self.store.list(scope.visible(), state, limit)

    def cancel(self, scope: Scope, job_id: str) -> Job:
        self.get(scope, job_id)
        return self.store.cancel(job_id)

    def retry(self, scope: Scope, job_id: str) -> Job:
        self.get(scope, job_id)
        job = self.store.retry(job_id)
        self.signal(job_id)
        return job

    def finished(self, job_id: str) -> bool:
        return self.store.get(job_id).state in TERMINAL_STATES

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until a job ends (for in-process callers; the API polls asynchronously)."""
        deadline = time.monotonic() + (timeout or self.wait_timeout)
        while time.monotonic() < deadline:
            job = self.store.get(job_id)
            if job.state in TERMINAL_STATES:
                return job
            time.sleep(0.25)  # each poll is a DuckDB query competing with the embedder for the cores
        return self.store.get(job_id)

    def verify_chunks(self, scope: Scope, collection: str | None = None, repair: bool = False) -> Job:
        """Queue a check of every stored document's chunks against its source (ingest/verify.py);
        with `repair`, damaged documents whose source is at hand are re-ingested from it."""
        scope.require_admin()
        if collection is not None:
            scope.collections([collection])
        return self.submit("verify", collection, {"repair": repair})
