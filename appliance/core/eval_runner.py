"""Runs one eval run as a job: each item retrieved (and answered), scored and stored as it completes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import msgspec

from appliance.config import Settings
from appliance.core.access import Scope
from appliance.core.gateway import Gateway
from appliance.core.knowledge import Knowledge
from appliance.db.catalog import Catalog
from appliance.db.evals import EvalStore
from appliance.db.jobs import TERMINAL_STATES, JobStore
from appliance.errors import ApplianceError, NotFound, TooManyRequests
from appliance.evaluate.answer_metrics import LexicalSupport, SupportCheck, is_refusal
from appliance.evaluate.judge import Judge, LexicalJudge, LLMJudge
from appliance.evaluate.retrieval_metrics import document_ranking
from appliance.evaluate.scorecard import Costs, score_item, scorecard
from appliance.generate.answer import Answerer
from appliance.generate.prompts import ANSWER_PROMPT_VERSION
from appliance.generate.support import CitationVerifier
from appliance.index.sync import IndexSync
from appliance.models.served import ServedModel
from appliance.models.service import ModelService
from appliance.records import EvalItem, EvalOutcome, EvalRunOptions

log = logging.getLogger(__name__)

# How long a run waits between looks at what it waits for (its set's ingestion, the chat model).
_POLL_S = 0.5
_QUEUE_RETRIES = 60


class _Stopped(Exception):
    """The appliance is stopping: the run stays running and resumes at the next start."""


class EvalRunner:
    """The `eval` job kind. Item outcomes are stored as they complete, so a run interrupted by a
    stop or a crash resumes at the next start (or on retry) with the items it had not done; its
    configuration is recorded once, at its first start."""

    def __init__(
        self,
        settings: Settings,
        store: EvalStore,
        job_store: JobStore,
        catalog: Catalog,
        knowledge: Knowledge,
        gateway: Gateway,
        models: ModelService,
        sync: IndexSync,
        scope: Callable[[], Scope],
        instance: str,
        stop: threading.Event,
        verifier: CitationVerifier | None = None,
        support: SupportCheck | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.job_store = job_store
        self.catalog = catalog
        self.knowledge = knowledge
        self.gateway = gateway
        self.models = models
        self.sync = sync
        self.scope = scope
        self.instance = instance
        self.stop = stop
        self.support = support or LexicalSupport()
        # The answer path's own citation verifier: an eval scores the answers users get.
        self.answerer = Answerer(settings.answer, verifier)
        self.costs = Costs(settings.eval.cost_per_cpu_hour, settings.eval.cost_per_1k_tokens)

    def run_job(self, job_id: str) -> None:
        lease = self.settings.jobs.lease_seconds
        token = self.job_store.claim(job_id, self.instance, lease)
        if token is None:
            return
        try:
            run = self.store.run_for_job(job_id)
            finished = self._run(job_id, token, run)
        except _Stopped:
            log.info("eval run paused by shutdown; it resumes at the next start", extra={"job_id": job_id})
            return
        except Exception as exc:
            log.exception("eval run failed", extra={"job_id": job_id})
            detail = exc.detail if isinstance(exc, ApplianceError) else f"{type(exc).__name__}: {exc}"
            self.job_store.finish(job_id, "failed", detail, token=token)
            return
        if finished is not None:
            self.job_store.finish(job_id, "succeeded", None, finished, token=token)

    def _run(self, job_id: str, token: str, run: dict) -> dict | None:
        options: EvalRunOptions = run["options"]
        evalset = self.store.get_set(run["set_name"], run["set_version"])
        items = self.store.items(evalset.name, evalset.version, options.limit)
        done = self.store.done_ordinals(run["id"])
        self.job_store.set_progress(job_id, len(items), len(done))
        self._wait_for_ingestion(evalset.ingest_jobs if evalset.collection == options.collection else [])
        runtime = None if options.retrieval_only else self._chat_model(options.model)
        self._record_config(run, runtime)
        judge = self._judge(options.judge, runtime)
        scope = self.scope()
        for ordinal, item in enumerate(items):
            if ordinal in done:
                continue
            if self.stop.is_set():
                raise _Stopped
            if not self.job_store.renew(job_id, token, self.settings.jobs.lease_seconds):
                log.info("eval run no longer holds its job (cancelled)", extra={"job_id": job_id})
                return None
            self.store.add_outcome(run["id"], self._item(scope, ordinal, item, options, runtime, judge))
            done.add(ordinal)
            self.job_store.set_progress(job_id, len(items), len(done))
        card = scorecard(self.store.outcomes(run["id"]), self.costs)
        self.store.finish_run(run["id"], card)
        return {"options": msgspec.to_builtins(options), "run_id": run["id"], "scorecard": card}

    # -- what a run waits for ------------------------------------------------------------------
    def _wait_for_ingestion(self, job_ids: list[str]) -> None:
        """A run right after its set's import waits until the corpus is in the collection."""
        for job_id in job_ids:
            while True:
                try:
                    if self.job_store.state(job_id) in TERMINAL_STATES:
                        break
                except NotFound:
                    break
                if self.stop.wait(_POLL_S):
                    raise _Stopped
        if job_ids:
            self.sync.apply_pending()

    def _judge(self, kind: str | None, runtime: ServedModel | None) -> Judge | None:
        if kind is None or runtime is None:
            return None
        # The run's own chat model judges (its bias towards its own answers is the price of
        # needing no second model); a model that can neither score tokens nor follow a grammar
        # fails the run with why.
        return LexicalJudge() if kind == "lexical" else LLMJudge(runtime, cancel=self.stop)

    def _chat_model(self, name: str | None) -> ServedModel:
        # A model loading (at start-up, or replaced by an admin) is waited for; none at all
        # (unloaded, failed) fails the run with the reason, and a retry resumes it.
        while self.models.health()["state"] == "loading":
            if self.stop.wait(_POLL_S):
                raise _Stopped
        return self.gateway.runtime_for(name or "default")

    def _record_config(self, run: dict, runtime: ServedModel | None) -> None:
        """The configuration the run ran under, stored at its first start. A resumed run under a
        different one keeps the first and lists what changed, so its numbers are not taken as
        one configuration's."""
        config = self.config(run["options"], runtime)
        if not run["config"]:
            self.store.set_config(run["id"], config)
            return
        changed = sorted(k for k in config if k != "resumed_changes" and run["config"].get(k) != config[k])
        if changed:
            log.warning("eval run resumed under another configuration", extra={"changed": changed})
            self.store.set_config(run["id"], {**run["config"], "resumed_changes": changed})

    def config(self, options: EvalRunOptions, runtime: ServedModel | None) -> dict:
        retrieval = self.settings.retrieval
        try:
            collection = self.catalog.get_collection(options.collection)
            counts = {"documents": collection.documents, "chunks": collection.chunks}
        except NotFound:
            counts = {"documents": 0, "chunks": 0}
        outbox = max((s["outbox_seq"] for s in self.sync.status().values()), default=0)
        return {
            "chat_model": _model_info(runtime, self.models) if runtime is not None else None,
            "embedder": {"name": self.models.embedder.name, "dimensions": self.models.embedder.dimensions},
            "retrieval": {
                "mode": options.mode or retrieval.default_mode,
                "top_k": options.top_k,
                "fusion": retrieval.fusion,
                "semantic_weight": retrieval.semantic_weight,
                "rrf_k": retrieval.rrf_k,
                "candidates": retrieval.candidates,
                "reranker": retrieval.reranker,
                "rerank_candidates": retrieval.rerank_candidates,
                # What hybrid search over the set's collection fuses with (its calibration, if any).
                "collection_fusion": msgspec.to_builtins(
                    self.knowledge.searcher.fusion_for([options.collection])
                )
                if options.collection
                else None,
            },
            "answer": None
            if runtime is None
            else {
                "top_k": self.settings.answer.top_k,
                "max_answer_tokens": self.settings.answer.max_answer_tokens,
                "temperature": self.settings.answer.temperature,
                "min_relevance": self.settings.answer.min_relevance,
                "context_tokens": self.settings.answer.context_tokens,
                "verify_citations": self.settings.answer.verify_citations,
                "unsupported_sentences": self.settings.answer.unsupported_sentences,
                "refuse_unsupported": self.settings.answer.refuse_unsupported,
            },
            "prompt_version": ANSWER_PROMPT_VERSION,
            "chunking": {
                "size_tokens": self.settings.chunking.size_tokens,
                "overlap_tokens": self.settings.chunking.overlap_tokens,
            },
            "index": {"collection": options.collection, **counts, "generation": outbox},
            "support_check": type(self.support).__name__,
            "judge": options.judge,
        }

    # -- one item ------------------------------------------------------------------------------
    def _item(
        self,
        scope: Scope,
        ordinal: int,
        item: EvalItem,
        options: EvalRunOptions,
        runtime: ServedModel | None,
        judge: Judge | None = None,
    ) -> EvalOutcome:
        base = {"ordinal": ordinal, "item_id": item.id, "question": item.question, "kind": item.kind}
        cpu, started = time.process_time(), time.perf_counter()
        try:
            # The searcher itself, not Knowledge.search: evaluation traffic stays out of the query
            # metrics of real users (the dashboard, and the traffic drift is measured on).
            result = self.knowledge.searcher.search(
                item.question,
                scope.collections([options.collection]),
                top_k=options.top_k,
                mode=options.mode,
                cache=False,  # the retrievers themselves are measured, not a cache
            )
            ranked = document_ranking(result.hits)
            timings: dict[str, float | None] = {
                "retrieval_ms": result.timings.get("total_ms"),
                "rerank_ms": result.timings.get("rerank_ms"),
            }
            answer = refused = usage = done = None
            citations, passages = [], {}
            if runtime is not None:
                done = self._answer(runtime, item.question, result)
                answer, citations, usage = done.answer, done.citations, done.usage
                refused = is_refusal(answer, len(citations))
                timings["first_token_ms"] = done.timings.get("first_token_ms")
                timings["generation_ms"] = done.timings.get("generation_ms")
                text = {h.chunk_id: h.text for h in result.hits}
                passages = {c.n: text.get(c.chunk_id, c.snippet) for c in citations}
            timings["total_ms"] = round((time.perf_counter() - started) * 1000, 2)
            scores = score_item(
                item, [d.source_id for d in ranked], answer, refused, citations, passages, self.support
            )
            claims = [s for s in done.sentences if s.claim] if done is not None else []
            if claims and not refused and item.kind != "unanswerable":
                scores["unsupported_rate"] = sum(not s.supported for s in claims) / len(claims)
            gold = item.answer or (item.answers[0] if item.answers else None)
            if judge is not None and answer is not None and gold and item.kind != "unanswerable":
                t = time.perf_counter()
                verdict = not refused and judge.correct(item.question, gold, answer).verdict
                scores["judge_correct"] = float(verdict)
                timings["judge_ms"] = round((time.perf_counter() - t) * 1000, 2)
        except _Stopped:
            raise
        except Exception as exc:
            if isinstance(exc, ApplianceError) and exc.status == 503:
                raise  # no model (unloaded meanwhile): the run fails, and a retry resumes it
            log.warning("eval item failed", extra={"item": item.id, "error": str(exc)})
            detail = exc.detail if isinstance(exc, ApplianceError) else f"{type(exc).__name__}: {exc}"
            return EvalOutcome(**base, state="failed", error=detail)
        return EvalOutcome(
            **base,
            state="done",
            retrieved=ranked,
            answer=answer,
            refused=refused,
            citations=citations,
            scores=scores,
            timings=timings,
            usage=usage,
            cpu_seconds=round(time.process_time() - cpu, 4),
        )

    def _answer(self, runtime: ServedModel, question: str, result):
        """The answer path's own planning and generation over this item's retrieval; a full model
        queue is waited out (the run is background work), not failed."""
        plan = self.answerer.plan(runtime, question, result)
        for _ in range(_QUEUE_RETRIES):
            try:
                return self.answerer.answer(runtime, plan)
            except TooManyRequests as exc:
                if self.stop.wait(exc.retry_after):
                    raise _Stopped from None
        return self.answerer.answer(runtime, plan)


def _model_info(runtime: ServedModel, models: ModelService) -> dict:
    info = {"name": runtime.name, "backend": runtime.backend, "context_length": runtime.context_length}
    try:
        from appliance.models.manifest import list_models

        spec = next(
            (m for m in list_models(models.models_dir) if m.name.lower() == runtime.name.lower()), None
        )
    except ApplianceError:
        spec = None
    if spec is not None:
        info |= {"file": spec.file, "sha256": spec.sha256, "source": spec.source}
    return info
