"""The Appliance: opens stores, indexes, models and jobs; the one façade the API, jobs and CLI call."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from appliance.config import Settings
from appliance.db.catalog import Catalog, check_collection_name
from appliance.db.connection import Database
from appliance.db.conversations import ConversationStore
from appliance.db.jobs import TERMINAL_STATES, JobStore
from appliance.db.keys import KeyStore, Principal
from appliance.db.migrations import migrate
from appliance.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge
from appliance.generate.answer import Answerer, AnswerEvents
from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.sync import IndexSync
from appliance.index.vectors import USearchVectorIndex
from appliance.ingest.chunking import Chunker
from appliance.ingest.intake import NewDocument, make_job_item
from appliance.ingest.pipeline import IngestPipeline
from appliance.ingest.sandbox import make_parser
from appliance.ingest.sources.service import SourceService
from appliance.ingest.verify import ChunkVerifier
from appliance.jobs.queue import JobQueue
from appliance.jobs.runner import run_ingest_job
from appliance.jobs.verify import run_verify_job
from appliance.limits import RateLimiter
from appliance.models.catalog import MINILM_NAME, MPNET_NAME, assemble_mpnet, default_embedding_dir
from appliance.models.embedder import SentenceTransformerEmbedder
from appliance.models.runtime import ChatMessage, GenerationParams, LLMRuntime
from appliance.models.service import ModelService
from appliance.observability.audit import AuditLog
from appliance.observability.metrics import Metrics
from appliance.offline import enforce_offline
from appliance.retrieve.rerank import Reranker, load_reranker
from appliance.retrieve.search import HybridSearcher, SearchResult

log = logging.getLogger(__name__)



class Appliance:
    def __init__(self, settings: Settings) -> None:
        enforce_offline(settings.network)  # env for model libraries, and the outbound guard
        self.settings = settings
        self.data_dir = settings.data_path
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.instance_id = uuid.uuid4().hex
        self.db = Database(self.data_dir / "appliance.duckdb")
        migrate(self.db)
        self.catalog = Catalog(self.db)
        self.jobs = JobStore(self.db)
        self.keys = KeyStore(self.db)
        self.conversations = ConversationStore(self.db)
        self.metrics = Metrics()
        self.audit = AuditLog(self.db, record_text=settings.observability.audit_record_text)
        self.limiter = RateLimiter()

        emb = settings.embedding
        model_dir = Path(emb.model_dir) if emb.model_dir else default_embedding_dir()
        self.embedder = SentenceTransformerEmbedder(
            model_dir, device=emb.device, batch_size=emb.batch_size, threads=emb.threads or None,
            name=None if emb.model_dir else MINILM_NAME,
        )
        self.chunker = Chunker(
            self.embedder.count_tokens, size=settings.chunking.size_tokens, overlap=settings.chunking.overlap_tokens
        )
        index_dir = self.data_dir / "index"
        self.keyword_index = TantivyKeywordIndex(index_dir / "bm25")
        self.vector_index = USearchVectorIndex(
            index_dir / "vectors", self.embedder.dimensions, dtype=settings.index.vector_dtype
        )
        self.sync = IndexSync(
            self.db,
            [self.keyword_index, self.vector_index],
            save_intervals={self.vector_index.name: settings.index.vector_save_interval_seconds},
        )
        self.reconcile_report = self.sync.reconcile()
        log.info("indexes reconciled", extra={"report": self.reconcile_report})

        ret = settings.retrieval
        self.reranker: Reranker | None = None
        if ret.reranker != "none":
            rerank_dir = Path(ret.reranker_model_dir) if ret.reranker_model_dir else None
            if rerank_dir is None and ret.reranker == "bi-encoder":
                # The stronger packaged bi-encoder, assembled once from its part packages.
                rerank_dir = assemble_mpnet(self.data_dir / "models" / MPNET_NAME)
            self.reranker = load_reranker(ret.reranker, rerank_dir, emb.device)
        self.searcher = HybridSearcher(
            self.catalog, self.keyword_index, self.vector_index, self.embedder, ret, self.reranker
        )
        self.parser = make_parser(settings.parsing, settings.parsing.processes or settings.jobs.workers)
        self.pipeline = IngestPipeline(self.catalog, self.embedder, self.chunker, self.parser,
                                       redact_secrets=settings.hygiene.redact_secrets)
        self.verifier = ChunkVerifier(self.db, self.catalog, self.chunker, self.parser,
                                      redact_secrets=settings.hygiene.redact_secrets,
                                      git_binary=settings.sources.git_binary,
                                      git_timeout=settings.sources.git_timeout_seconds,
                                      max_file_bytes=settings.limits.max_file_bytes)
        self.models = ModelService(settings, self.embedder, self.data_dir, self.metrics)
        self.answerer = Answerer(settings.answer)
        self.queue = JobQueue(self.data_dir / "queue" / "huey.db", self.run_job, settings.jobs.workers,
                              on_tick=self._schedule_tick, shutdown_timeout=settings.jobs.shutdown_timeout_seconds)
        self.sources = SourceService(settings, self.db, self.catalog, self.jobs, self.queue.signal, self.metrics)
        self.admin_key_path = self.data_dir / "admin.key"
        self.admin_key_created = self.keys.ensure_admin_key(self.admin_key_path)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.queue.start()
        resumed = self.jobs.active_ids()
        for job_id in resumed:
            self.queue.signal(job_id)
        if resumed:
            log.info("resuming interrupted jobs", extra={"jobs": resumed})
        self._spawn(self._index_ticker, "index-ticker")
        self._spawn(self._warm, "embedder-warmup")
        self._start_console_stats()
        if self.settings.llm.load_at_start:
            self._spawn(self.models.load, "chat-model-load")
        if self.settings.sample_dir:
            self._ingest_sample(Path(self.settings.sample_dir))
        self.sources.start()

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _warm(self) -> None:
        try:
            self.embedder.warm()
        except Exception:
            log.exception("embedding model failed to load")
            return
        self._ready.set()

    def _index_ticker(self) -> None:
        # Saves the vector index when its interval is due even if no new job arrives.
        while not self._stop.wait(1.0):
            try:
                self.sync.apply_pending()
            except Exception:
                log.exception("index sync failed; will retry")

    def close(self) -> None:
        # Order matters: nothing may use a component after it is closed. Sources stop submitting,
        # workers finish their group (they see _stop between groups), then the rest closes.
        self._stop.set()
        self._stop_console_stats()
        self.sources.stop()
        self.queue.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self.models.close()
        self.parser.close()
        try:
            self.sync.flush()
        finally:
            self.keyword_index.close()
            self.vector_index.close()
            self.db.close()

    def health(self) -> dict:
        status = self.sync.status()
        return {
            "ready": self._ready.is_set(),
            "embedder": "loaded" if self._ready.is_set() else "loading",
            "chat_model": self.models.health(),
            "indexes": status,
            "chunks": self.catalog.chunk_count(),
        }

    # -- access control -----------------------------------------------------------------
    def authenticate(self, secret: str) -> Principal | None:
        return self.keys.authenticate(secret)

    def _scope(self, principal: Principal, requested: Sequence[str] | None) -> list[str]:
        """Collections the caller asked for and may see. Unknown and forbidden look alike (404),
        so a key cannot probe for collections it was not given."""
        allowed = None if principal.is_admin else set(principal.collections or ())
        if requested is None:
            names = self.catalog.all_collection_names()
            return [n for n in names if allowed is None or n in allowed]
        requested = list(dict.fromkeys(requested))
        for name in requested:
            check_collection_name(name)
        existing = self.catalog.existing_collections(requested)
        for name in requested:
            if name not in existing or (allowed is not None and name not in allowed):
                raise NotFound(f"collection {name!r} does not exist")
        return requested

    # -- collections ----------------------------------------------------------------------
    def create_collection(self, principal: Principal, name: str, description: str = "") -> dict:
        if not principal.is_admin:
            raise Forbidden("collections can only be created with an admin key")
        return self.catalog.create_collection(name, description)

    def list_collections(self, principal: Principal) -> list[dict]:
        return self.catalog.list_collections(self._scope(principal, None))

    # -- documents ------------------------------------------------------------------------
    def submit_documents(
        self, principal: Principal, collection: str, docs: Sequence[NewDocument], strict: bool = False
    ) -> tuple[str, list[str]]:
        """Validate, store durably with a job, and signal a worker. Returns (job id, document ids).

        `strict` (single uploads) refuses empty or unreadable content at once; a batch instead
        records such documents as failed items, so one bad file does not sink a folder."""
        self._scope(principal, [collection])
        limits = self.settings.limits
        if not docs:
            raise InvalidInput("no documents given")
        if len(docs) > limits.max_batch_documents:
            raise PayloadTooLarge(f"{len(docs)} documents in one batch; the limit is {limits.max_batch_documents}")
        items, seen = [], set()
        for ordinal, doc in enumerate(docs):
            items.append(make_job_item(ordinal, collection, doc, strict, self.settings.limits))
            if items[-1].document_id in seen:
                raise InvalidInput(f"document {ordinal}: source_id {items[-1].source_id!r} appears twice in the batch")
            seen.add(items[-1].document_id)
        job_id = self.jobs.create("ingest", collection, items)
        self.queue.signal(job_id)
        return job_id, [it.document_id for it in items]

    def get_document(self, principal: Principal, document_id: str, with_chunks: bool = False) -> dict:
        doc = self.catalog.get_document(document_id)
        if not principal.is_admin and doc["collection"] not in (principal.collections or ()):
            raise NotFound(f"document {document_id!r} does not exist")
        if with_chunks:
            doc["chunks"] = self.catalog.chunks_of(document_id)
        return doc

    def list_documents(self, principal: Principal, collection: str | None, limit: int = 100, offset: int = 0) -> dict:
        scope = self._scope(principal, [collection] if collection else None)
        return {
            "documents": self.catalog.list_documents(scope, limit=limit, offset=offset),
            "total": self.catalog.count_documents(scope),
            "limit": limit,
            "offset": offset,
        }

    def delete_document(self, principal: Principal, document_id: str) -> dict:
        self.get_document(principal, document_id)
        doc = self.catalog.delete_document(document_id)
        self.sync.apply_pending()  # gone from search before we answer
        return doc

    # -- jobs -----------------------------------------------------------------------------
    def get_job(self, principal: Principal, job_id: str, with_items: bool = False) -> dict:
        job = self.jobs.get(job_id)
        if not principal.is_admin and job["collection"] not in (principal.collections or ()):
            raise NotFound(f"job {job_id!r} does not exist")
        if with_items:
            job["items"] = self.jobs.items(job_id)
        return job

    def list_jobs(self, principal: Principal, state: str | None = None, limit: int = 50) -> list[dict]:
        scope = None if principal.is_admin else list(principal.collections or ())
        return self.jobs.list(scope, state, limit)

    def job_finished(self, job_id: str) -> bool:
        return self.jobs.get(job_id)["state"] in TERMINAL_STATES

    def wait_for_job(self, job_id: str, timeout: float | None = None) -> dict:
        """Block until a job ends (for in-process callers; the API polls asynchronously)."""
        deadline = time.monotonic() + (timeout or self.settings.limits.wait_timeout_seconds)
        while time.monotonic() < deadline:
            job = self.jobs.get(job_id)
            if job["state"] in TERMINAL_STATES:
                return job
            time.sleep(0.25)  # each poll is a DuckDB query competing with the embedder for the cores
        return self.jobs.get(job_id)

    def run_job(self, job_id: str) -> None:
        """Worker entry point. Safe to call twice: the lease decides who runs it."""
        job = self.jobs.get(job_id)
        if job["kind"] == "sync":
            if self.jobs.claim(job_id, self.instance_id, self.settings.jobs.lease_seconds):
                self.sources.run_sync(self.jobs.get(job_id))
            return
        if job["kind"] == "verify":
            run_verify_job(job_id, self.jobs, self.catalog, self.verifier, self.instance_id,
                           self.settings.jobs.lease_seconds, self.queue.signal)
            return
        run_ingest_job(job_id, self.jobs, self.pipeline, self.sync, self.instance_id,
                       self.settings.jobs.lease_seconds, self._stop, self.metrics,
                       on_outcome=self.sources.on_outcome, on_finished=self.sources.on_job_finished)

    def verify_chunks(self, principal: Principal, collection: str | None = None, repair: bool = False) -> dict:
        """Queue a check of every stored document's chunks against its source (ingest/verify.py);
        with `repair`, damaged documents whose source is at hand are re-ingested from it."""
        self._require_admin(principal)
        if collection is not None:
            self._scope(principal, [collection])
        job_id = self.jobs.create("verify", collection, [])
        self.jobs.set_summary(job_id, {"options": {"repair": repair}})
        self.queue.signal(job_id)
        return self.jobs.get(job_id)

    def cancel_job(self, principal: Principal, job_id: str) -> dict:
        self.get_job(principal, job_id)
        return self.jobs.cancel(job_id)

    def retry_job(self, principal: Principal, job_id: str) -> dict:
        self.get_job(principal, job_id)
        job = self.jobs.retry(job_id)
        self.queue.signal(job_id)
        return job

    # -- sources (drop folder, git repositories, GitHub deliveries) ---------------------------------
    def _schedule_tick(self) -> None:
        self.sources.schedule_tick()

    def list_sources(self, principal: Principal) -> list[dict]:
        scope = None if principal.is_admin else list(principal.collections or ())
        return self.sources.list(scope)

    def get_source(self, principal: Principal, name: str) -> dict:
        for source in self.list_sources(principal):
            if source["name"] == name:
                return source
        raise NotFound(f"source {name!r} does not exist")

    def add_source(self, principal: Principal, kind: str, name: str, collection: str, location: str,
                   schedule: str = "manual", options: dict | None = None) -> dict:
        self._require_admin(principal)
        return self.sources.add(kind, name, collection, location, schedule, options)

    def remove_source(self, principal: Principal, name: str, delete_documents: bool = False) -> dict:
        self._require_admin(principal)
        return self.sources.remove(name, delete_documents)

    def sync_source(self, principal: Principal, name: str) -> dict:
        self._require_admin(principal)
        job_id = self.sources.request_sync(name)
        return {"source": name, "job_id": job_id or None}

    def quarantined(self, principal: Principal, collection: str | None = None, source: str | None = None,
                    limit: int = 200) -> list[dict]:
        if collection is not None:
            scope = self._scope(principal, [collection])
        else:
            scope = None if principal.is_admin else list(principal.collections or ())
        return self.sources.quarantined(scope, source, limit)

    def github_delivery(self, headers, body: bytes) -> dict:
        """Authenticated by its HMAC signature, not by an API key."""
        return self.sources.github_delivery(headers, body)

    # -- search ---------------------------------------------------------------------------
    def search(
        self,
        principal: Principal,
        query: str,
        collections: Sequence[str] | None = None,
        top_k: int = 10,
        mode: str | None = None,
        rerank: bool | None = None,
        filters: dict | None = None,
    ) -> SearchResult:
        limits = self.settings.limits
        if len(query) > limits.max_query_chars:
            raise InvalidInput(f"query is {len(query)} characters; the limit is {limits.max_query_chars}")
        if not 1 <= top_k <= limits.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {limits.max_top_k}")
        scope = self._scope(principal, collections)
        if not scope:
            return SearchResult(hits=[], timings={"total_ms": 0.0}, mode=mode or self.settings.retrieval.default_mode)
        result = self.searcher.search(query, scope, top_k=top_k, mode=mode, rerank=rerank, filters=filters)
        stages = {"keyword_ms": "keyword", "embed_ms": "embed", "vector_ms": "semantic", "fusion_ms": "fusion",
                  "rerank_ms": "rerank", "total_ms": "retrieval"}
        self.metrics.observe_query(result.mode, {stages[k]: v / 1000 for k, v in result.timings.items() if k in stages})
        return result

    # -- models (OpenAI-compatible API) ------------------------------------------------------
    def list_models(self) -> list[dict]:
        return self.models.list_models()

    def runtime_for(self, principal: Principal, model: str) -> LLMRuntime:
        return self.models.runtime_for(model)

    def prepare_chat(self, principal: Principal, model: str, messages: list[ChatMessage]) -> tuple[LLMRuntime, str]:
        return self.models.prepare_chat(model, messages)

    def generate(self, principal: Principal, runtime: LLMRuntime, prompt: str, params: GenerationParams,
                 endpoint: str, cancel=None):
        try:
            done = self.models.generate(runtime, prompt, params, cancel)
        except Exception:
            self.metrics.observe_llm(runtime.name, endpoint, 0, 0, None, 0.0, outcome="error")
            raise
        self._account(principal, runtime, endpoint, done.prompt_tokens, done.completion_tokens,
                      done.time_to_first_token_s, done.total_s)
        return done

    def open_stream(self, principal: Principal, runtime: LLMRuntime, prompt: str, params: GenerationParams,
                    endpoint: str, cancel=None, on_position=None):
        return self.models.open_stream(runtime, prompt, params, cancel, on_position)

    def record_stream(self, principal: Principal, runtime: LLMRuntime, stream, endpoint: str, completed: bool) -> None:
        """Called when a stream ends or its client leaves: metrics and the key's token budget
        (tokens generated before a disconnect were spent all the same)."""
        stats = stream.stats
        outcome = "ok" if completed else "cancelled"
        if stats is None:
            self.metrics.observe_llm(runtime.name, endpoint, 0, 0, None, 0.0, outcome=outcome)
            return
        self._account(principal, runtime, endpoint, stats.prompt_tokens, stats.completion_tokens,
                      stats.time_to_first_token_s, stats.total_s, outcome)

    def _account(self, principal: Principal, runtime: LLMRuntime, endpoint: str, prompt_tokens: int,
                 completion_tokens: int, ttft_s: float | None, total_s: float, outcome: str = "ok") -> None:
        self.metrics.observe_llm(runtime.name, endpoint, prompt_tokens, completion_tokens, ttft_s, total_s, outcome)
        self.limiter.charge_tokens(principal.key_id, principal.tpm, prompt_tokens + completion_tokens)

    def embed(self, principal: Principal, model: str, inputs: list[str], dimensions: int | None):
        return self.models.embed(model, inputs, dimensions)

    # -- cited answers ----------------------------------------------------------------------
    def _plan_answer(self, principal: Principal, question: str, collections, top_k: int | None, model: str | None,
                     history: list[tuple[str, str]] | None = None):
        if not question.strip():
            raise InvalidInput("question is empty")
        runtime = self.models.runtime_for(model or "default")
        timings: dict = {}
        query = question
        if history:
            t = time.perf_counter()
            query = self.answerer.rewrite(runtime, history, question)
            timings["rewrite_ms"] = round((time.perf_counter() - t) * 1000, 2)
        retrieval = self.search(principal, query, collections, top_k=top_k or self.settings.answer.top_k)
        timings.update({"retrieval_ms": retrieval.timings.get("total_ms", 0.0)})
        if "rerank_ms" in retrieval.timings:
            timings["rerank_ms"] = retrieval.timings["rerank_ms"]
        plan = self.answerer.plan(runtime, question, retrieval)
        return runtime, plan, query, timings

    def answer(self, principal: Principal, question: str, collections=None, top_k: int | None = None,
               model: str | None = None, history=None, cancel=None) -> dict:
        started = time.perf_counter()
        runtime, plan, query, timings = self._plan_answer(principal, question, collections, top_k, model, history)
        result = self.answerer.answer(runtime, plan, cancel)
        timings.update(result.timings)
        timings["total_ms"] = round((time.perf_counter() - started) * 1000, 2)
        self._observe_answer(principal, runtime, result.usage, timings)
        return {"answer": result.answer, "citations": result.citations, "invalid_citations": result.invalid_citations,
                "model": result.model, "usage": result.usage, "query": query, "timings": timings}

    def open_answer_stream(self, principal: Principal, question: str, collections=None, top_k: int | None = None,
                           model: str | None = None, history=None, cancel=None, on_position=None):
        """Retrieve, plan and take a model slot (waiting in the queue if need be; `on_position`
        hears the place), then return the events for SSE: "sources", "token"..., "answer"."""
        started = time.perf_counter()
        runtime, plan, query, timings = self._plan_answer(principal, question, collections, top_k, model, history)
        stream = self.answerer.open_stream(runtime, plan, cancel, on_position)
        return AnswerEvents(self._answer_events(principal, runtime, plan, stream, query, timings, started),
                            stream.close if stream is not None else None)

    def _answer_events(self, principal, runtime, plan, stream, query, timings, started):
        yield {"type": "sources", "query": query, "sources": len(plan.sources), "timings": dict(timings)}
        for event in self.answerer.stream_events(runtime, plan, stream):
            if event["type"] == "answer":
                event["timings"] = {**timings, **event["timings"],
                                    "total_ms": round((time.perf_counter() - started) * 1000, 2)}
                event["query"] = query
                self._observe_answer(principal, runtime, event["usage"], event["timings"])
            yield event

    def _observe_answer(self, principal: Principal, runtime: LLMRuntime, usage: dict, timings: dict) -> None:
        stages = {"generation_ms": "generation", "first_token_ms": "first_token", "total_ms": "total"}
        self.metrics.observe_query("answer", {stages[k]: v / 1000 for k, v in timings.items()
                                              if k in stages and v is not None})
        if usage["completion_tokens"]:
            ttft = timings.get("first_token_ms")
            self._account(principal, runtime, "answer", usage["prompt_tokens"], usage["completion_tokens"],
                          ttft / 1000 if ttft is not None else None, timings.get("generation_ms", 0) / 1000)

    def audit_entries(self, principal: Principal, limit: int, offset: int, action: str | None,
                      key_id: str | None) -> list[dict]:
        self._require_admin(principal)
        return self.audit.recent(limit=limit, offset=offset, action=action, key_id=key_id)

    # -- conversations ------------------------------------------------------------------------
    def create_conversation(self, principal: Principal, collections: list[str] | None, title: str = "") -> dict:
        if collections is not None:
            self._scope(principal, collections)
        return self.conversations.create(principal, collections, title)

    def get_conversation(self, principal: Principal, conv_id: str) -> dict:
        return self.conversations.get(principal, conv_id, with_messages=True)

    def list_conversations(self, principal: Principal) -> list[dict]:
        return self.conversations.list(principal)

    def delete_conversation(self, principal: Principal, conv_id: str) -> None:
        self.conversations.delete(principal, conv_id)

    def converse(self, principal: Principal, conv_id: str, question: str, top_k: int | None = None,
                 model: str | None = None, stream: bool = False, cancel=None, on_position=None):
        """The next turn of a conversation: a result dict, or (stream=True) the events of
        `open_answer_stream`. The turn is stored once its answer is complete."""
        conv = self.conversations.get(principal, conv_id)
        history = self.conversations.history(conv_id)
        if not stream:
            result = self.answer(principal, question, conv["collections"], top_k, model, history, cancel)
            self.conversations.append(conv_id, ("user", question, None),
                                      ("assistant", result["answer"], result["citations"]))
            return result
        events = self.open_answer_stream(principal, question, conv["collections"], top_k, model, history, cancel,
                                         on_position)
        return AnswerEvents(self._stored_turn(conv_id, question, events), events.close)

    def _stored_turn(self, conv_id: str, question: str, events):
        for event in events:
            if event["type"] == "answer":
                self.conversations.append(conv_id, ("user", question, None),
                                          ("assistant", event["answer"], event["citations"]))
            yield event

    # -- keys -----------------------------------------------------------------------------------
    def _require_admin(self, principal: Principal) -> None:
        if not principal.is_admin:
            raise Forbidden("this needs an admin key")

    def create_key(self, principal: Principal, name: str, role: str, collections: list[str] | None,
                   rpm: int | None, tpm: int | None) -> dict:
        self._require_admin(principal)
        if collections:
            self._scope(principal, collections)
        key_id, secret = self.keys.create(name, role, collections, rpm, tpm)
        return {"id": key_id, "key": secret, **{k: v for k, v in next(
            k for k in self.keys.list() if k["id"] == key_id).items() if k != "id"}}

    def list_keys(self, principal: Principal) -> list[dict]:
        self._require_admin(principal)
        return self.keys.list()

    def revoke_key(self, principal: Principal, key_id: str) -> dict:
        self._require_admin(principal)
        return self.keys.revoke(key_id)

    # -- local files (sample corpus at start-up) ---------------------------------------------
    def _ingest_sample(self, folder: Path) -> None:
        if not folder.is_dir():
            log.warning("sample corpus folder not found", extra={"path": str(folder)})
            return
        self.catalog.ensure_collection("sample")
        docs = [
            NewDocument(
                source_id=str(path.relative_to(folder)),
                content=path.read_bytes(),
                filename=path.name,
                uri=path.resolve().as_uri(),
                source_kind="file",
            )
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
        ]
        if docs:
            admin = Principal("system", "system", "admin", None)
            job_id, _ = self.submit_documents(admin, "sample", docs)
            log.info("ingesting sample corpus", extra={"job_id": job_id, "documents": len(docs)})

    # -- console / admin ------------------------------------------------------------------
    # What the admin console (appliance/tui) needs beyond the other routes: live statistics,
    # recent log lines and run-time model load/unload. Admin keys only.
    def _start_console_stats(self) -> None:
        from appliance.observability.logs import log_ring
        from appliance.observability.stats import StatsSampler

        log_ring()  # in-process servers (tests) never ran configure_logging
        self._stats = StatsSampler(self.metrics, self._stats_gauges)
        self._stats.start()

    def _stop_console_stats(self) -> None:
        stats = getattr(self, "_stats", None)
        if stats is not None:
            stats.stop()

    def _stats_gauges(self) -> dict[str, float]:
        queue = self.models.health().get("queue") or {}
        return {"llm_queue": float(queue.get("waiting", 0)), "llm_in_use": float(queue.get("in_use", 0)),
                "llm_slots": float(queue.get("slots", 0)), "jobs_active": float(len(self.jobs.active_ids()))}

    def _components(self, disk) -> list[dict]:
        """Each part of the process with a status (ok, warn, starting, off, down) and one line of detail."""
        from appliance import __version__

        out = [{"name": "api", "status": "ok", "detail": f"version {__version__}"}]
        try:
            out.append({"name": "duckdb", "status": "ok", "detail": f"{self.catalog.chunk_count()} chunks"})
        except Exception as exc:  # the dashboard must show a broken store, not fail with it
            out.append({"name": "duckdb", "status": "down", "detail": f"{type(exc).__name__}: {exc}"})
        for name, st in self.sync.status().items():
            behind = max(0, st["outbox_seq"] - st["applied_seq"])
            out.append({"name": name, "status": "ok" if behind == 0 else "warn",
                        "detail": f"{st['count']} entries" + (f", {behind} changes behind" if behind else "")})
        active = len(self.jobs.active_ids())
        failed = len(self.jobs.list(None, "failed", 20))
        out.append({"name": "jobs", "status": "warn" if failed else "ok",
                    "detail": f"{active} active" + (f", {failed} failed recently" if failed else "")})
        out.append({"name": "embedder", "status": "ok" if self._ready.is_set() else "starting",
                    "detail": f"{self.embedder.name} ({self.embedder.dimensions}-d)"})
        chat = self.models.health()
        status = {"loaded": "ok", "loading": "starting", "unloaded": "off"}.get(chat["state"], "down")
        detail = f"{chat.get('name')} on {chat.get('backend')}" if chat["state"] == "loaded" else (
            chat.get("error") or chat["state"])
        out.append({"name": "model", "status": status if chat.get("ok", True) else "down", "detail": detail})
        low = disk["free_bytes"] < max(1 << 30, disk["total_bytes"] * 0.05)
        out.append({"name": "disk", "status": "warn" if low else "ok",
                    "detail": f"{disk['free_bytes'] / (1 << 30):.1f} GiB free of {disk['total_bytes'] / (1 << 30):.1f}"})
        return out

    def admin_stats(self, principal: Principal) -> dict:
        import shutil

        from appliance import __version__
        from appliance.observability.stats import StatsSampler, ingestion_lags

        self._require_admin(principal)
        stats = getattr(self, "_stats", None) or StatsSampler(self.metrics, self._stats_gauges)
        snap = stats.snapshot()
        usage = shutil.disk_usage(self.data_dir)
        disk = {"path": str(self.data_dir), "free_bytes": usage.free, "total_bytes": usage.total}
        gauges = snap["gauges"]
        return {
            "version": __version__,
            "uptime_seconds": snap["current"].pop("uptime_seconds"),
            "components": self._components(disk),
            "collections": self.catalog.list_collections(),
            "ingestion_lag_seconds": ingestion_lags(self.metrics),
            "traffic": snap["current"],
            "queue": {"llm_waiting": int(gauges.get("llm_queue", 0)), "llm_in_use": int(gauges.get("llm_in_use", 0)),
                      "llm_slots": int(gauges.get("llm_slots", 0)), "jobs_active": int(gauges.get("jobs_active", 0))},
            "memory": {k: (int(gauges[k]) if k in gauges else None)
                       for k in ("rss_bytes", "gpu_used_bytes", "gpu_total_bytes")},
            "disk": disk,
            "history": snap["history"],
        }

    def admin_logs(self, principal: Principal, level: str | None, limit: int, after: int = 0) -> dict:
        from appliance.observability.logs import LEVELS, log_ring

        self._require_admin(principal)
        if level is not None and level.lower() not in LEVELS:
            raise InvalidInput(f"level must be one of {', '.join(LEVELS)}")
        if not 1 <= limit <= 2000:
            raise InvalidInput("limit must be between 1 and 2000")
        lines = log_ring().recent(level.lower() if level else None, limit, after)
        return {"lines": lines, "last_seq": lines[-1]["seq"] if lines else after}

    def admin_models(self, principal: Principal) -> dict:
        self._require_admin(principal)
        return {"chat": self.models.health(), "available": self.models.available(),
                "embedding": {"name": self.embedder.name, "dimensions": self.embedder.dimensions,
                              "state": "loaded" if self._ready.is_set() else "loading"}}

    def admin_load_model(self, principal: Principal, name: str | None) -> dict:
        self._require_admin(principal)
        return self.models.start_load(name)

    def admin_unload_model(self, principal: Principal) -> dict:
        self._require_admin(principal)
        return self.models.unload()

    # -- operations (backup, doctor) ------
    def ops_status(self, principal: Principal) -> dict:
        """What `appliance doctor` asks a running server: version, the network guard, index counts."""
        from appliance import __version__
        from appliance.offline import GUARD

        self._require_admin(principal)
        return {"version": __version__, "data_dir": str(self.data_dir), "ready": self._ready.is_set(),
                "network": GUARD.status(), "indexes": self.sync.status(), "chunks": self.catalog.chunk_count()}

    def backup(self, principal: Principal, name: str | None = None) -> dict:
        """A consistent snapshot into <data dir>/backups/<name> while serving (see ops/backup.py)."""
        import os

        from appliance.ops.backup import backup_name, snapshot_running

        self._require_admin(principal)
        config = os.environ.get("APPLIANCE_CONFIG")
        return snapshot_running(self, self.data_dir / "backups" / backup_name(name), Path(config) if config else None)
