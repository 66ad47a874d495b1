"""Eval sets the appliance writes itself: generated from a collection (the `evalgen` job), or from feedback."""

from __future__ import annotations

import logging
import threading

import msgspec

from appliance.config import Settings
from appliance.core.access import Access, Scope
from appliance.core.evals import Evals
from appliance.core.feedback import Feedback
from appliance.core.gateway import Gateway
from appliance.core.jobs import Jobs
from appliance.core.knowledge import Knowledge
from appliance.db.jobs import JobStore
from appliance.errors import ApplianceError, InvalidInput
from appliance.evaluate.generate import DEFAULT_UNANSWERABLE_FRACTION, collection_chunks, generate_qa_items
from appliance.names import check_collection_name
from appliance.records import EvalSet, Job

log = logging.getLogger(__name__)

MAX_GENERATED_ITEMS = 2000


class EvalSources:
    """`generate` queues an `evalgen` job: the local LLM writes checked questions from sampled
    chunks of a collection (appliance/evaluate/generate.py), stored as a "generated" QA set whose
    gold sources are known. `from_feedback` turns answers users rated down into a "feedback" set."""

    def __init__(
        self,
        settings: Settings,
        access: Access,
        jobs: Jobs,
        job_store: JobStore,
        knowledge: Knowledge,
        gateway: Gateway,
        evals: Evals,
        feedback: Feedback,
        instance: str,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.access = access
        self.jobs = jobs
        self.job_store = job_store
        self.knowledge = knowledge
        self.gateway = gateway
        self.evals = evals
        self.feedback = feedback
        self.instance = instance
        self.stop = stop

    def generate(
        self,
        scope: Scope,
        collection: str,
        n: int,
        name: str | None = None,
        seed: int = 0,
        model: str | None = None,
        unanswerable_fraction: float = DEFAULT_UNANSWERABLE_FRACTION,
    ) -> Job:
        scope.require_admin()
        scope.collections([collection])  # NotFound when it does not exist
        if not 1 <= n <= MAX_GENERATED_ITEMS:
            raise InvalidInput(f"n must be between 1 and {MAX_GENERATED_ITEMS}")
        if not 0.0 <= unanswerable_fraction <= 1.0:
            raise InvalidInput("unanswerable_fraction must be between 0 and 1")
        name = name or f"{collection}-generated"
        check_collection_name(name)
        options = {
            "collection": collection,
            "n": n,
            "name": name,
            "seed": seed,
            "model": model,
            "unanswerable_fraction": unanswerable_fraction,
        }
        return self.jobs.submit("evalgen", collection, options)

    def run_job(self, job_id: str) -> None:
        """Worker entry point of an `evalgen` job. Generation is deterministic for its seed, so a
        job interrupted by a stop simply runs again from the start at the next one."""
        lease = self.settings.jobs.lease_seconds
        token = self.job_store.claim(job_id, self.instance, lease)
        if token is None:
            return
        cancel = threading.Event()
        try:
            options = (self.job_store.get(job_id).summary or {})["options"]
            summary = self._generate(job_id, token, options, cancel)
        except Exception as exc:
            log.exception("eval generation failed", extra={"job_id": job_id})
            detail = exc.detail if isinstance(exc, ApplianceError) else f"{type(exc).__name__}: {exc}"
            self.job_store.finish(job_id, "failed", detail, token=token)
            return
        if summary is not None:
            self.job_store.finish(job_id, "succeeded", None, summary, token=token)

    def _generate(self, job_id: str, token: str, options: dict, cancel: threading.Event) -> dict | None:
        collection = options["collection"]
        scope = self.access.system_scope()
        chunks = collection_chunks(self.knowledge.catalog, collection)
        if not chunks:
            raise InvalidInput(f"collection {collection!r} has no chunks to write questions from")
        runtime = self.gateway.runtime_for(options.get("model") or "default")

        def progress(done: int, total: int) -> None:
            self.job_store.set_progress(job_id, total, done)
            # A stop, or a cancel (the lease is gone), ends generation at the next candidate.
            if self.stop.is_set() or not self.job_store.renew(
                job_id, token, self.settings.jobs.lease_seconds
            ):
                cancel.set()

        def search(question: str) -> list[str]:
            return [h.text for h in self.knowledge.search(scope, question, [collection], top_k=5).hits]

        self.job_store.set_progress(job_id, options["n"], 0)
        items, report = generate_qa_items(
            chunks,
            runtime,
            options["n"],
            options.get("seed", 0),
            unanswerable_fraction=options.get("unanswerable_fraction", DEFAULT_UNANSWERABLE_FRACTION),
            search=search,
            progress=progress,
            cancel=cancel,
        )
        if cancel.is_set():
            # Stopped (the job runs again at the next start) or cancelled (the lease is gone):
            # either way this run leaves the job as it is.
            log.info("eval generation stopped before it finished", extra={"job_id": job_id})
            return None
        report_dict = msgspec.to_builtins(report)
        if not items:
            raise InvalidInput(f"no generated question passed the checks: {report_dict}")
        evalset = self.evals.create_qa_set(
            scope,
            options["name"],
            items,
            kind="generated",
            description=f"{len(items)} questions written by {runtime.name} from {collection}",
            collection=collection,
            origin=f"generated:{runtime.name}:seed={options.get('seed', 0)}",
        )
        return {
            "options": options,
            "report": report_dict,
            "set": {"name": evalset.name, "version": evalset.version},
        }

    def from_feedback(self, scope: Scope, collection: str, name: str | None = None) -> EvalSet:
        """Answers rated down over `collection` become a "feedback" QA set (regression items)."""
        scope.require_admin()
        scope.collections([collection])
        name = name or f"{collection}-feedback"
        items = self.feedback.regression_items(scope, collection)
        if not items:
            raise InvalidInput(f"no answer over {collection!r} has been rated down yet")
        return self.evals.create_qa_set(
            scope, name, items, kind="feedback", description="answers rated down", collection=collection
        )
