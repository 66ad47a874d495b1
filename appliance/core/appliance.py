"""The composition root: builds stores, indexes, models, jobs and the capability services, and runs them."""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path

from appliance.config import Settings
from appliance.core.access import Access
from appliance.core.admin import Admin
from appliance.core.answers import Answers
from appliance.core.calibration import Calibration
from appliance.core.drift import Drift
from appliance.core.embedders import Embedders
from appliance.core.eval_runner import EvalRunner
from appliance.core.eval_sources import EvalSources
from appliance.core.evals import Evals
from appliance.core.feedback import Feedback
from appliance.core.gateway import Gateway
from appliance.core.jobs import Jobs
from appliance.core.knowledge import Knowledge
from appliance.core.model_labels import ModelLabels
from appliance.core.planner import Planner
from appliance.core.registry import Registry
from appliance.core.rollout import Rollouts
from appliance.core.sources import Sources
from appliance.core.tuning import Tuning
from appliance.core.workflows import Workflows
from appliance.db.catalog import Catalog
from appliance.db.connection import Database
from appliance.db.conversations import ConversationStore
from appliance.db.embedders import EmbedderStore
from appliance.db.evals import EvalStore
from appliance.db.fusion import FusionStore
from appliance.db.jobs import JobStore
from appliance.db.keys import KeyStore
from appliance.db.migrations import migrate
from appliance.db.plans import PlanStore
from appliance.db.registry import RegistryStore
from appliance.db.rollouts import RolloutStore
from appliance.db.traces import TraceStore
from appliance.generate.support import citation_verifier
from appliance.index.backends import open_vector_index
from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.spaces import CollectionSpaces
from appliance.index.sync import REBUILD_PROGRESS, IndexSync
from appliance.ingest.chunking import Chunker
from appliance.ingest.pipeline import IngestPipeline
from appliance.ingest.sandbox import make_parser
from appliance.ingest.sources.service import SourceService
from appliance.ingest.verify import ChunkVerifier
from appliance.jobs.queue import JobQueue
from appliance.jobs.runner import run_ingest_job
from appliance.jobs.verify import run_verify_job
from appliance.limits import FailedAuthLimiter, RateLimiter
from appliance.models.catalog import MINILM_NAME, MPNET_NAME, assemble_mpnet, default_embedding_dir
from appliance.models.embedder import SentenceTransformerEmbedder
from appliance.models.service import ModelService
from appliance.observability.audit import AuditLog
from appliance.observability.metrics import Metrics, watch_process
from appliance.offline import enforce_offline
from appliance.retrieve.rerank import Reranker, load_reranker
from appliance.retrieve.search import HybridSearcher

log = logging.getLogger(__name__)


STRANDED_AFTER_S = 60.0


class Appliance:
    """The whole appliance in one process: opens everything in dependency order, owns start,
    close and health, and exposes one service per capability. Callers (routes, the CLI's
    in-process commands, tests) go through the services, each taking the caller's `Scope`:

    - `access`: keys, scopes (the only place authorization is decided), rate admission;
    - `knowledge`: collections, documents (as ingest jobs) and hybrid search;
    - `answers`: cited answers and conversations;
    - `gateway`: the OpenAI-compatible model calls and their token accounting;
    - `jobs`: job state, cancel, retry, and the runner of each job kind;
    - `sources`: the drop folder, git sources, GitHub deliveries, quarantine;
    - `admin`: statistics, logs, model load/unload, installation status, backups, the audit log;
    - `feedback`: every answer's trace (written after the answer), ratings of answers;
    - `drift`: checks of each collection's recent answers against a reference window;
    - `evals`: eval sets, runs (the `eval` job kind), comparisons and gates;
    - `eval_sources`: eval sets it writes itself (the `evalgen` job kind; from feedback);
    - `calibration`: each collection's fusion, tuned on its generated eval set (`calibrate` jobs);
    - `registry`: model families, versions, aliases and their history; intake; promotion and rollback;
    - `rollouts`: canaries (sticky weight schedule, per-step analysis, automatic rollback) and shadows;
    - `tuning`: fine-tuning the embedder on a collection (the `tune` job kind), registered as a new version;
    - `embedders`: each collection's embedder; blue-green re-embedding behind a retrieval gate (`reembed`);
    - `workflows`: workflow, agent, tool and policy documents, runs (the `workflow` job kind), approvals.
    """

    def __init__(self, settings: Settings, config_file: Path | None = None) -> None:
        enforce_offline(settings.network)  # env for model libraries, and the outbound guard
        self.settings = settings
        self.config_file = config_file
        self.data_dir = settings.data_path
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.instance_id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()

        # Stores.
        self.db = Database(self.data_dir / "appliance.duckdb")
        migrate(self.db)
        self.catalog = Catalog(self.db)
        self.job_store = JobStore(self.db)
        self.keys = KeyStore(self.db)
        self.conversations = ConversationStore(self.db)
        self.metrics = Metrics()
        self.metrics.duckdb_wal_set_aside.set(1 if self.db.wal_set_aside else 0)
        self.audit = AuditLog(self.db, record_text=settings.observability.audit_record_text)

        # Models and indexes.
        emb = settings.embedding
        model_dir = Path(emb.model_dir) if emb.model_dir else default_embedding_dir()
        self.embedder = SentenceTransformerEmbedder(
            model_dir,
            device=emb.device,
            batch_size=emb.batch_size,
            threads=emb.threads or None,
            name=None if emb.model_dir else MINILM_NAME,
        )
        self.chunker = Chunker(
            self.embedder.count_tokens,
            size=settings.chunking.size_tokens,
            overlap=settings.chunking.overlap_tokens,
        )
        index_dir = self.data_dir / "index"
        self.keyword_index = TantivyKeywordIndex(index_dir / "bm25")
        self.vector_index, vector_save_interval = open_vector_index(
            settings, index_dir, self.embedder.dimensions
        )
        # A collection on another embedder than the server's has a vector index of its own.
        self.embedder_store = EmbedderStore(self.db)
        self.vector_spaces = CollectionSpaces(
            self.vector_index,
            index_dir / "collections",
            settings.index.vector_dtype,
            {
                r.collection: (r.live.generation, r.live.dimensions)
                for r in self.embedder_store.all()
                if r.live.generation
            },
            exact_search_max=settings.index.exact_search_max,
        )
        self.sync = IndexSync(
            self.db,
            [self.keyword_index, self.vector_spaces],
            save_intervals={self.vector_spaces.name: vector_save_interval},
            generations=self.catalog.generations,
            progress_path=index_dir / REBUILD_PROGRESS,
        )
        self.reconcile_report = self.sync.reconcile()
        log.info("indexes reconciled", extra={"report": self.reconcile_report})
        self.searcher = HybridSearcher(
            self.catalog,
            self.keyword_index,
            self.vector_spaces,
            self.embedder,
            settings.retrieval,
            self._reranker(),
            cache=settings.cache,
            on_cache_lookup=self.metrics.count_cache_lookup,
            fusion_store=FusionStore(self.db),
        )
        for cache in (self.searcher.embedding_cache, self.searcher.result_cache):
            if cache is not None:
                self.metrics.cache_bytes.labels(cache=cache.name).set_function(lambda c=cache: c.size_bytes)
        self.models = ModelService(settings, self.embedder, self.data_dir, self.metrics)
        watch_process(
            self.metrics,
            self.data_dir,
            lambda: self.models.health()["state"],
            lambda: [(c.name, c.documents, c.chunks) for c in self.catalog.list_collections()],
        )

        # Ingestion and background work.
        self.parser = make_parser(settings.parsing, settings.parsing.processes or settings.jobs.workers)
        self.pipeline = IngestPipeline(
            self.catalog,
            self.embedder,
            self.chunker,
            self.parser,
            redact_secrets=settings.hygiene.redact_secrets,
            chunk_seconds=settings.chunking.max_seconds,
        )
        self.verifier = ChunkVerifier(
            self.db,
            self.catalog,
            self.chunker,
            self.parser,
            redact_secrets=settings.hygiene.redact_secrets,
            git_binary=settings.sources.git_binary,
            git_timeout=settings.sources.git_timeout_seconds,
            max_file_bytes=settings.limits.max_file_bytes,
        )
        self.queue = JobQueue(
            self.data_dir / "queue" / "huey.db",
            self._run_job,
            settings.jobs.workers,
            on_tick=self._schedule_tick,
            shutdown_timeout=settings.jobs.shutdown_timeout_seconds,
        )
        self.source_service = SourceService(
            settings, self.db, self.catalog, self.job_store, self.queue.signal, self.metrics
        )

        # Capability services.
        self.access = Access(
            self.keys,
            self.catalog,
            RateLimiter(),
            FailedAuthLimiter(settings.limits.failed_auth_per_minute),
        )
        self.jobs = Jobs(self.job_store, self.queue.signal, settings.limits.wait_timeout_seconds)
        self.knowledge = Knowledge(
            settings.limits,
            settings.retrieval,
            self.catalog,
            self.job_store,
            self.queue.signal,
            self.sync,
            self.searcher,
            self.metrics,
        )
        self.gateway = Gateway(self.models, self.access, self.metrics)
        self.traces = TraceStore(self.db)
        self.feedback = Feedback(settings.feedback, self.traces, self.embedder.embed_query, self.metrics)
        self.drift = Drift(settings.drift, self.traces, self.metrics)
        self.answers = Answers(
            settings.answer,
            self.knowledge,
            self.gateway,
            self.conversations,
            self.metrics,
            citation_verifier(settings.answer.verify_citations, self.embedder),
            record=self.feedback.record,
            cache=settings.cache,
        )
        self.sources = Sources(self.source_service)
        self.admin = Admin(
            self.data_dir,
            self.catalog,
            self.job_store,
            self.sync,
            self.models,
            self.embedder,
            self._ready,
            self.metrics,
            self.audit,
            self._snapshot,
        )
        eval_store = EvalStore(self.db)
        self.evals = Evals(
            settings,
            eval_store,
            self.job_store,
            self.jobs,
            self.knowledge,
            EvalRunner(
                settings,
                eval_store,
                self.job_store,
                self.catalog,
                self.knowledge,
                self.gateway,
                self.models,
                self.sync,
                self.access.system_scope,
                self.instance_id,
                self._stop,
                self.answers.answerer.verifier,
            ),
            self.queue.signal,
        )
        self.eval_sources = EvalSources(
            settings,
            self.access,
            self.jobs,
            self.job_store,
            self.knowledge,
            self.gateway,
            self.evals,
            self.feedback,
            self.instance_id,
            self._stop,
        )
        self.calibration = Calibration(
            settings,
            self.searcher.fusion_store,
            self.jobs,
            self.job_store,
            self.knowledge,
            self.evals,
            self.access.system_scope,
            self.instance_id,
            self._stop,
        )
        self.registry = Registry(
            settings, RegistryStore(self.db), self.models, self.evals, self.audit, self.data_dir
        )
        self.rollouts = Rollouts(
            settings,
            RolloutStore(self.db),
            self.registry,
            self.models,
            self.audit,
            self.traces.model_ratings,
        )
        self.gateway.rollouts = self.rollouts
        # The per-model series carry the registry's version and alias ("canary" for a candidate).
        self.metrics.model_labels = ModelLabels(self.registry, self.rollouts)
        # After the registry: `plan apply` moves the default alias through it and reloads the model.
        self.planner = Planner(
            settings,
            PlanStore(self.db),
            self.models.models_dir,
            self.knowledge,
            self.embedder,
            registry=self.registry,
            models=self.models,
            audit=self.audit,
            gateway=self.gateway,
        )
        self.workflows = Workflows(
            settings,
            self.db,
            self.jobs,
            self.job_store,
            self.access,
            self.knowledge,
            self.answers,
            self.gateway,
            self.metrics,
            self.instance_id,
            self._stop,
            audit=self.audit,
            embedder=self.embedder,
        )
        self.tuning = Tuning(
            settings,
            self.access,
            self.jobs,
            self.job_store,
            self.knowledge,
            self.gateway,
            self.registry,
            self.data_dir,
            self.instance_id,
            self._stop,
        )
        self.embedders = Embedders(
            settings,
            self.embedder_store,
            self.registry,
            self.catalog,
            self.sync,
            self.vector_spaces,
            self.embedder,
            eval_store,
            self.jobs,
            self.job_store,
            self.audit,
            self.data_dir,
            self.instance_id,
            self._stop,
        )
        # Ingestion and search ask it which embedder (and index) serves each collection.
        self.pipeline.embedding = self.embedders
        self.searcher.route = self.embedders.route
        self.tuning.embedders = self.embedders  # a tuned version's rollout
        self._register_job_kinds()

        self.admin_key_path = self.data_dir / "admin.key"
        self.admin_key_created = self.keys.ensure_admin_key(self.admin_key_path)

    def _reranker(self) -> Reranker | None:
        ret = self.settings.retrieval
        if ret.reranker == "none":
            return None
        rerank_dir = Path(ret.reranker_model_dir) if ret.reranker_model_dir else None
        if rerank_dir is None and ret.reranker == "bi-encoder":
            # The stronger packaged bi-encoder, assembled once from its part packages.
            rerank_dir = assemble_mpnet(self.data_dir / "models" / MPNET_NAME)
        return load_reranker(ret.reranker, rerank_dir, self.settings.embedding.device)

    def _register_job_kinds(self) -> None:
        lease = self.settings.jobs.lease_seconds

        def ingest(job_id: str) -> None:
            run_ingest_job(
                job_id,
                self.job_store,
                self.pipeline,
                self.sync,
                self.instance_id,
                lease,
                self._stop,
                self.metrics,
                on_outcome=self.source_service.on_outcome,
                on_finished=self.source_service.on_job_finished,
            )

        def sync(job_id: str) -> None:
            if self.job_store.claim(job_id, self.instance_id, lease):
                self.source_service.run_sync(self.job_store.get(job_id))

        def verify(job_id: str) -> None:
            run_verify_job(
                job_id,
                self.job_store,
                self.catalog,
                self.verifier,
                self.instance_id,
                lease,
                self.queue.signal,
            )

        self.jobs.register("ingest", ingest)
        self.jobs.register("sync", sync)
        self.jobs.register("verify", verify)
        self.jobs.register("eval", self.evals.run_job)
        self.jobs.register("evalgen", self.eval_sources.run_job)
        self.jobs.register("workflow", self.workflows.run_job)
        self.jobs.register("calibrate", self.calibration.run_job)
        self.jobs.register("tune", self.tuning.run_job)
        self.jobs.register("reembed", self.embedders.run_job)

    def _run_job(self, job_id: str) -> None:
        self.jobs.run(job_id)

    def _schedule_tick(self) -> None:
        try:
            self.source_service.schedule_tick()
        finally:
            self._resignal_stranded()
            self._evaluation_tick()

    def _resignal_stranded(self) -> None:
        """A job stored whose signal never reached the queue (its SQLite full or failing just
        then: the caller got 507) would wait for the next start; each minute, a job queued for
        over a minute with no signal waiting is signalled again (a lease makes a second one harmless)."""
        try:
            waiting = self.queue.signalled()
            stranded = [j for j in self.job_store.queued_before(STRANDED_AFTER_S) if j not in waiting]
            for job_id in stranded:
                self.queue.signal(job_id)
            if stranded:
                log.warning("queued jobs without a signal were signalled again", extra={"jobs": stranded})
        except Exception:
            log.exception("re-signalling stranded jobs failed; will try again next minute")

    def _evaluation_tick(self) -> None:
        # Traces past their retention go, and the drift check runs when it is due; each failure is
        # logged on its own, so neither stops the other (nor the source syncs).
        for name, work in (
            ("trace pruning", self.feedback.tick),
            ("drift check", self.drift.tick),
            ("workflow approvals", self.workflows.tick),
        ):
            try:
                work()
            except Exception:
                log.exception(f"scheduled {name} failed; will try again next minute")

    def _snapshot(self, dest: Path) -> dict:
        from appliance.ops.backup import snapshot_online

        return snapshot_online(self.db, self.sync, self.data_dir, dest, self.config_file)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.feedback.start()
        self.drift.start()
        self.queue.start()
        resumed = self.job_store.active_ids()
        for job_id in resumed:
            self.queue.signal(job_id)
        if resumed:
            log.info("resuming interrupted jobs", extra={"jobs": resumed})
        self.workflows.tick()  # runs whose approvals were answered just before a stop go on
        self._spawn(self._index_ticker, "index-ticker")
        self._spawn(self._warm, "embedder-warmup")
        self.admin.start_sampling()
        self.registry.start()
        # Serving resolves names through the registry from now on (`name@version`, aliases; the
        # gate of a promotion runs its eval on `NAME@VERSION`).
        self.models.use_resolver(
            self.registry.serving_resolver(self.models.resolve_in_manifest, self.models.known_models),
            knows=self.registry.registry.knows,
        )
        self.rollouts.start()
        self.planner.restore_applied()  # an applied plan's llm settings, before the chat model loads
        if self.settings.llm.load_at_start:
            self._spawn(lambda: self.models.load(self.registry.default_chat()), "chat-model-load")
        if self.settings.sample_dir:
            self.knowledge.ingest_folder(self.access.system_scope(), Path(self.settings.sample_dir), "sample")
        self.source_service.start()

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
        self.admin.stop_sampling()
        self.source_service.stop()
        self.registry.close()
        self.rollouts.close()
        self.workflows.close()  # wakes runs in a sleep or a backoff: they resume at the next start
        self.queue.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self.models.close()
        self.feedback.close()  # writes the traces still queued
        self.planner.close()  # a calibration in the background stops at its next measurement
        self.parser.close()
        try:
            self.audit.summarise_refusals(self.access.failed_auth.summaries(final=True))
        except Exception:
            log.exception("the summary of refused requests could not be audited")
        try:
            self.sync.flush()
        finally:
            self.keyword_index.close()
            self.vector_spaces.close()
            self.db.close()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def health(self) -> dict:
        return {
            "ready": self._ready.is_set(),
            "embedder": "loaded" if self._ready.is_set() else "loading",
            "chat_model": self.models.health(),
            "indexes": self.sync.status(),
            "chunks": self.catalog.chunk_count(),
            # Files set aside at start because they could not be used (an unreplayable WAL).
            "set_aside": {"duckdb_wal": str(self.db.wal_set_aside) if self.db.wal_set_aside else None},
        }
