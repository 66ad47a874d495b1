"""Per-collection fusion calibration: tune a collection's hybrid fusion on its own generated eval set."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import msgspec

from appliance.config import Settings
from appliance.core.access import Scope
from appliance.core.evals import Evals
from appliance.core.jobs import Jobs
from appliance.core.knowledge import Knowledge
from appliance.db.fusion import FusionStore
from appliance.db.jobs import JobStore
from appliance.errors import ApplianceError, InvalidInput
from appliance.evaluate.fusion_calibration import CalibrationQuery, calibrate
from appliance.index.protocols import IndexHit
from appliance.records import CollectionFusion, EvalSet, FusionSettings, Job

log = logging.getLogger(__name__)


class Calibration:
    """`start` queues a `calibrate` job over a collection's latest generated eval set (or a named
    set on that collection); the job fetches every question's keyword and semantic candidates
    once, scores the fusion grid on them and stores the choice with the scores that made it.
    Nothing outside the collection is used: no human labels, no other corpus."""

    def __init__(
        self,
        settings: Settings,
        store: FusionStore,
        jobs: Jobs,
        job_store: JobStore,
        knowledge: Knowledge,
        evals: Evals,
        system_scope: Callable[[], Scope],
        instance: str,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.job_store = job_store
        self.knowledge = knowledge
        self.evals = evals
        self.system_scope = system_scope
        self.instance = instance
        self.stop = stop

    def start(self, scope: Scope, collection: str, eval_set: str | None = None) -> Job:
        scope.require_admin()
        scope.collections([collection])  # NotFound when it does not exist
        chosen = self._eval_set(scope, collection, eval_set)
        options = {"collection": collection, "set": chosen.name, "version": chosen.version}
        return self.jobs.submit("calibrate", collection, options)

    def get(self, scope: Scope, collection: str) -> CollectionFusion:
        scope.require_admin()
        return self.store.get(collection)

    def reset(self, scope: Scope, collection: str) -> bool:
        """Back to the server's default fusion for `collection`."""
        scope.require_admin()
        return self.store.delete(collection)

    @property
    def default_fusion(self) -> FusionSettings:
        return self.knowledge.searcher.default_fusion

    def _eval_set(self, scope: Scope, collection: str, name: str | None) -> EvalSet:
        if name:
            found = self.evals.get_set(scope, name)
            if found.collection != collection:
                raise InvalidInput(f"eval set {name!r} is not over collection {collection!r}")
            return found
        generated = [
            s for s in self.evals.list_sets(scope) if s.kind == "generated" and s.collection == collection
        ]
        if not generated:
            raise InvalidInput(
                f"collection {collection!r} has no generated eval set: write one first with "
                f"`appliance eval generate --collection {collection}`"
            )
        return max(generated, key=lambda s: (s.created_at or "", s.version))

    def run_job(self, job_id: str) -> None:
        """Worker entry point of a `calibrate` job; interrupted, it runs again from the start."""
        token = self.job_store.claim(job_id, self.instance, self.settings.jobs.lease_seconds)
        if token is None:
            return
        try:
            options = (self.job_store.get(job_id).summary or {})["options"]
            record = self._calibrate(job_id, token, options)
        except Exception as exc:
            log.exception("fusion calibration failed", extra={"job_id": job_id})
            detail = exc.detail if isinstance(exc, ApplianceError) else f"{type(exc).__name__}: {exc}"
            self.job_store.finish(job_id, "failed", detail, token=token)
            return
        if record is not None:
            summary = {
                "options": options,
                "chosen": msgspec.to_builtins(record.settings),
                "ndcg_at_10": record.scores[0].ndcg_at_10 if record.scores else None,
                "default_ndcg_at_10": record.default_score.ndcg_at_10,
                "items": record.items,
            }
            self.job_store.finish(job_id, "succeeded", None, summary, token=token)

    def _calibrate(self, job_id: str, token: str, options: dict) -> CollectionFusion | None:
        collection = options["collection"]
        scope = self.system_scope()
        items = [
            i
            for i in self.evals.store.items(options["set"], options["version"])
            if i.kind != "unanswerable" and (i.relevance or i.gold)
        ]
        if not items:
            raise InvalidInput(f"eval set {options['set']!r} has no answerable questions with gold sources")
        default = self.knowledge.searcher.default_fusion
        depth = default.candidates
        queries = []
        self.job_store.set_progress(job_id, len(items), 0)
        for n, item in enumerate(items, start=1):
            if self.stop.is_set() or not self.job_store.renew(
                job_id, token, self.settings.jobs.lease_seconds
            ):
                return None
            lists, source_of = {}, {}
            for mode in ("keyword", "semantic"):
                hits = self.knowledge.search(
                    scope, item.question, [collection], top_k=depth, mode=mode, rerank=False, cache=False
                ).hits
                lists[mode] = [IndexHit(h.chunk_id, h.score) for h in hits]
                source_of.update({h.chunk_id: h.source_id for h in hits})
            relevance = item.relevance or {g: 1 for g in item.gold}
            queries.append(
                CalibrationQuery(item.question, relevance, lists["keyword"], lists["semantic"], source_of)
            )
            self.job_store.set_progress(job_id, len(items), n)
        chosen, baseline, scores = calibrate(default, queries)
        record = CollectionFusion(
            collection=collection,
            settings=chosen,
            eval_set=f"{options['set']}@{options['version']}",
            items=len(queries),
            default_score=baseline,
            scores=scores,
            job_id=job_id,
            chunks=self.knowledge.catalog.get_collection(collection).chunks,
        )
        saved = self.store.save(record)
        log.info(
            "fusion calibrated", extra={"collection": collection, "settings": msgspec.to_builtins(chosen)}
        )
        return saved
