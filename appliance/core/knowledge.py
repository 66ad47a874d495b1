"""Knowledge: collections, documents and search, each call checked against the caller's scope."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from appliance.config import LimitSettings, RetrievalSettings
from appliance.core.access import Scope
from appliance.db.catalog import Catalog
from appliance.db.jobs import JobStore
from appliance.errors import InvalidInput, PayloadTooLarge
from appliance.index.sync import IndexSync
from appliance.ingest.intake import NewDocument, make_job_item
from appliance.observability.metrics import Metrics
from appliance.records import Collection, Document, DocumentPage
from appliance.retrieve.search import HybridSearcher, SearchResult

log = logging.getLogger(__name__)

# Search timing keys and the stage names the latency histogram uses for them.
_STAGES = {
    "keyword_ms": "keyword",
    "embed_ms": "embed",
    "vector_ms": "semantic",
    "fusion_ms": "fusion",
    "rerank_ms": "rerank",
    "total_ms": "retrieval",
}


class Knowledge:
    """Collections, documents (submitted as ingest jobs) and hybrid search."""

    def __init__(
        self,
        limits: LimitSettings,
        retrieval: RetrievalSettings,
        catalog: Catalog,
        jobs: JobStore,
        signal: Callable[[str], None],
        sync: IndexSync,
        searcher: HybridSearcher,
        metrics: Metrics,
    ) -> None:
        self.limits = limits
        self.retrieval = retrieval
        self.catalog = catalog
        self.jobs = jobs
        self.signal = signal
        self.sync = sync
        self.searcher = searcher
        self.metrics = metrics

    # -- collections ---------------------------------------------------------------------------
    def create_collection(self, scope: Scope, name: str, description: str = "") -> Collection:
        scope.require_admin()
        return self.catalog.create_collection(name, description)

    def list_collections(self, scope: Scope) -> list[Collection]:
        return self.catalog.list_collections(scope.collections(None))

    # -- documents -----------------------------------------------------------------------------
    def submit(
        self, scope: Scope, collection: str, docs: Sequence[NewDocument], strict: bool = False
    ) -> tuple[str, list[str]]:
        """Validate, store durably with a job, and signal a worker. Returns (job id, document ids).

        `strict` (single uploads) refuses empty or unreadable content at once; a batch instead
        records such documents as failed items, so one bad file does not sink a folder."""
        scope.collections([collection])
        if not docs:
            raise InvalidInput("no documents given")
        if len(docs) > self.limits.max_batch_documents:
            raise PayloadTooLarge(
                f"{len(docs)} documents in one batch; the limit is {self.limits.max_batch_documents}"
            )
        items, seen = [], set()
        for ordinal, doc in enumerate(docs):
            items.append(make_job_item(ordinal, collection, doc, strict, self.limits))
            if items[-1].document_id in seen:
                raise InvalidInput(
                    f"document {ordinal}: source_id {items[-1].source_id!r} appears twice in the batch"
                )
            seen.add(items[-1].document_id)
        job_id = self.jobs.create("ingest", collection, items)
        self.signal(job_id)
        return job_id, [it.document_id for it in items]

    def get_document(self, scope: Scope, document_id: str, with_chunks: bool = False) -> Document:
        doc = self.catalog.get_document(document_id)
        scope.check(doc.collection, f"document {document_id!r} does not exist")
        if with_chunks:
            doc = msgspec.structs.replace(doc, chunks=self.catalog.chunks_of(document_id))
        return doc

    def list_documents(
        self, scope: Scope, collection: str | None, limit: int = 100, offset: int = 0
    ) -> DocumentPage:
        names = scope.collections([collection] if collection else None)
        return DocumentPage(
            documents=self.catalog.list_documents(names, limit=limit, offset=offset),
            total=self.catalog.count_documents(names),
            limit=limit,
            offset=offset,
        )

    def delete_document(self, scope: Scope, document_id: str) -> Document:
        self.get_document(scope, document_id)
        doc = self.catalog.delete_document(document_id)
        self.sync.apply_pending()  # gone from search before we answer
        return doc

    def ingest_folder(self, scope: Scope, folder: Path, collection: str) -> str | None:
        """Every file under `folder` as one job into `collection` (created if need be); the sample
        corpus at start-up. Returns the job id, or None when there was nothing to ingest."""
        if not folder.is_dir():
            log.warning("folder to ingest not found", extra={"path": str(folder)})
            return None
        self.catalog.ensure_collection(collection)
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
        if not docs:
            return None
        job_id, _ = self.submit(scope, collection, docs)
        log.info(
            "ingesting folder", extra={"job_id": job_id, "documents": len(docs), "collection": collection}
        )
        return job_id

    # -- search --------------------------------------------------------------------------------
    def search(
        self,
        scope: Scope,
        query: str,
        collections: Sequence[str] | None = None,
        top_k: int = 10,
        mode: str | None = None,
        rerank: bool | None = None,
        filters: dict | None = None,
        cache: bool = True,
    ) -> SearchResult:
        if len(query) > self.limits.max_query_chars:
            raise InvalidInput(
                f"query is {len(query)} characters; the limit is {self.limits.max_query_chars}"
            )
        if not 1 <= top_k <= self.limits.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self.limits.max_top_k}")
        names = scope.collections(collections)
        if not names:
            return SearchResult(hits=[], timings={"total_ms": 0.0}, mode=mode or self.retrieval.default_mode)
        result = self.searcher.search(
            query, names, top_k=top_k, mode=mode, rerank=rerank, filters=filters, cache=cache
        )
        self.metrics.observe_query(
            result.mode, {_STAGES[k]: v / 1000 for k, v in result.timings.items() if k in _STAGES}
        )
        return result
