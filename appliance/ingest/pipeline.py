"""The ingestion pipeline: parse, chunk, embed, then write a document and its chunks in one transaction."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np

from appliance.db.catalog import Catalog, DocumentRecord, EmbeddedChunk, EmbedderMoved
from appliance.db.jobs import WorkItem
from appliance.document import Chunk
from appliance.errors import ApplianceError, InvalidInput
from appliance.ingest.chunking import Chunker
from appliance.ingest.sandbox import DocumentParser, InProcessParser
from appliance.models.embedder import Embedder

log = logging.getLogger(__name__)

# A write whose collection switched embedders meanwhile is embedded again; a switch takes minutes,
# so more than this many in a row means something is wrong.
EMBED_ATTEMPTS = 3


class CollectionEmbedding(Protocol):
    """Which embedder writes a collection's vectors (core/embedders.py: the collection's live one)."""

    def embedder_for(self, collection: str) -> tuple[int, Embedder]:
        """The collection's live generation and its embedder."""

    def space_of(self, collection: str) -> str:
        """A label equal for collections whose vectors are interchangeable (reuse across them is safe)."""


class OneEmbedder:
    """Every collection on one embedder, generation 0 (what a pipeline without a router has)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embedder_for(self, collection: str) -> tuple[int, Embedder]:
        return 0, self.embedder

    def space_of(self, collection: str) -> str:
        return ""


@dataclass(slots=True)
class ItemOutcome:
    ordinal: int
    state: str  # "done" | "unchanged" | "failed"
    error: str | None = None
    chunks: int = 0
    redactions: dict[str, int] = field(default_factory=dict)
    reused: bool = False  # stored from an identical document's chunks, without embedding


@dataclass(slots=True)
class _Prepared:
    item: WorkItem
    record: DocumentRecord
    chunks: list[Chunk]
    redactions: dict[str, int]


@dataclass
class PreparedGroup:
    """A group of job items after prepare(): settled outcomes, and documents to embed."""

    collection: str
    items: list[WorkItem]
    outcomes: list[ItemOutcome] = field(default_factory=list)
    prepared: list[_Prepared] = field(default_factory=list)


def content_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def embedding_text(title: str, chunk: Chunk) -> str:
    """What the embedder sees: the chunk with its title and section, so a passage that says
    "it" is still found by what "it" refers to. Citations show the bare chunk text."""
    context = [p for p in (title, " > ".join(chunk.location.heading_path)) if p]
    return ("\n".join(context) + "\n" + chunk.text) if context else chunk.text


class IngestPipeline:
    """Turns job items into stored documents: skip unchanged content, reuse an identical twin's
    embeddings, else parse (sandboxed), redact, chunk and embed, then one transaction per group."""

    def __init__(
        self,
        catalog: Catalog,
        embedder: Embedder,
        chunker: Chunker,
        parser: DocumentParser | None = None,
        redact_secrets: bool = True,
        chunk_seconds: float | None = 120.0,
        embedding: CollectionEmbedding | None = None,
    ) -> None:
        self.catalog = catalog
        self.embedder = embedder
        self.embedding = embedding or OneEmbedder(embedder)
        self.chunker = chunker
        self.parser = parser if parser is not None else InProcessParser()
        self.chunk_seconds = chunk_seconds
        self.redact_secrets = redact_secrets

    def ingest(
        self, collection: str, items: Sequence[WorkItem], submitted_at: datetime | None = None
    ) -> list[ItemOutcome]:
        """Ingest a group of items. Chunks of the whole group are embedded together so short
        documents still fill the model's batches. `submitted_at` (the job's creation) keeps an
        older version from overwriting a newer one whose job happened to finish first."""
        return self.embed_and_write(self.prepare(collection, items, submitted_at))

    def prepare(
        self, collection: str, items: Sequence[WorkItem], submitted_at: datetime | None = None
    ) -> PreparedGroup:
        """The first half of ingest(): parse, redact and chunk (or settle as unchanged, copied
        from a twin, or failed). A job prepares its next group while this one is embedded."""
        group = PreparedGroup(collection, list(items))
        # What the catalogue holds, asked once for the group: a stored version's hash, and which
        # contents some document (a twin) already has.
        digests = [content_hash(item.content) for item in items]
        stored = self.catalog.document_hashes([item.document_id for item in items])
        twins = self.catalog.stored_hashes(digests)
        for item, digest in zip(items, digests, strict=True):
            try:
                outcome_or_prepared = self._prepare(
                    collection, item, submitted_at, digest, stored.get(item.document_id), digest in twins
                )
            except ApplianceError as exc:
                group.outcomes.append(ItemOutcome(item.ordinal, "failed", exc.detail))
                continue
            except Exception as exc:  # a parser bug must cost one document, not the job
                log.exception("unexpected error preparing document", extra={"source_id": item.source_id})
                group.outcomes.append(
                    ItemOutcome(item.ordinal, "failed", f"internal error: {type(exc).__name__}: {exc}")
                )
                continue
            if isinstance(outcome_or_prepared, ItemOutcome):
                group.outcomes.append(outcome_or_prepared)
            else:
                group.prepared.append(outcome_or_prepared)
        return group

    def embed_and_write(self, group: PreparedGroup) -> list[ItemOutcome]:
        """The second half of ingest(): embed the prepared documents together and write them."""
        collection, outcomes, prepared = group.collection, list(group.outcomes), group.prepared
        for _ in range(EMBED_ATTEMPTS):
            if not prepared:
                break
            # The collection's live embedder; should it switch before a document is written, the
            # write refuses (EmbedderMoved) and the rest is embedded again by the new one.
            generation, embedder = self.embedding.embedder_for(collection)
            texts = [embedding_text(p.record.title, c) for p in prepared for c in p.chunks]
            vectors = embedder.embed_documents(texts) if texts else np.zeros((0, embedder.dimensions))
            documents, offset = [], 0
            for p in prepared:
                documents.append(
                    (p.record, [EmbeddedChunk(c, vectors[offset + i]) for i, c in enumerate(p.chunks)])
                )
                offset += len(p.chunks)
            try:
                written = self.catalog.replace_documents(documents, generation)
            except EmbedderMoved:
                continue  # nothing was written: embed the group again with the new embedder
            for p, ids in zip(prepared, written, strict=True):
                if ids is None:
                    outcomes.append(ItemOutcome(p.item.ordinal, "unchanged"))  # superseded by a newer version
                else:
                    outcomes.append(
                        ItemOutcome(p.item.ordinal, "done", chunks=len(ids), redactions=p.redactions)
                    )
            prepared = []
        for p in prepared:
            outcomes.append(
                ItemOutcome(p.item.ordinal, "failed", f"collection {collection!r} kept changing its embedder")
            )
        return sorted(outcomes, key=lambda o: o.ordinal)

    def _prepare(
        self,
        collection: str,
        item: WorkItem,
        submitted_at: datetime | None,
        digest: str,
        stored_hash: str | None,
        twin_possible: bool,
    ) -> _Prepared | ItemOutcome:
        # A repair ("reingest") distrusts the stored chunks: neither its own nor an identical twin's.
        trust_stored = item.action != "reingest"
        if trust_stored and stored_hash == digest:
            self.catalog.update_document_fields(item.document_id, item.title, item.uri, item.metadata)
            return ItemOutcome(item.ordinal, "unchanged")
        copy = (
            self.catalog.embedded_copy(digest, item.document_id) if trust_stored and twin_possible else None
        )
        # A twin's vectors serve only where they were made by the same embedder.
        if copy is not None and self.embedding.space_of(copy[0]["collection"]) == self.embedding.space_of(
            collection
        ):
            twin, embedded = copy
            generation, _ = self.embedding.embedder_for(collection)
            record = self._record(
                collection, item, digest, submitted_at, title=twin["title"], mime_type=twin["mime_type"]
            )
            try:
                written = self.catalog.replace_document(record, embedded, generation)
            except EmbedderMoved:
                written = False  # the collection switched meanwhile: embed it as new below
            if written is None:
                return ItemOutcome(item.ordinal, "unchanged")  # superseded by a newer version
            if written is not False:
                return ItemOutcome(item.ordinal, "done", chunks=len(embedded), reused=True)
        # Parsing and secret scanning run together in the parser sandbox (its CPU and wall-clock
        # limits bound them); chunking runs here under its own time budget.
        redactions: dict[str, int] = {}
        if self.redact_secrets:
            parsed, redactions = self.parser.parse_redacted(item.content, item.filename)
        else:
            parsed = self.parser(item.content, item.filename)
        deadline = time.monotonic() + self.chunk_seconds if self.chunk_seconds else None
        chunks = self.chunker.chunk(parsed, deadline)
        if not chunks:
            raise InvalidInput(f"{item.filename or item.source_id}: no text could be extracted")
        record = self._record(
            collection,
            item,
            digest,
            submitted_at,
            title=parsed.title,
            mime_type=parsed.mime_type,
            redactions=redactions,
        )
        return _Prepared(item, record, chunks, redactions)

    @staticmethod
    def _record(
        collection: str,
        item: WorkItem,
        digest: str,
        submitted_at: datetime | None,
        title: str,
        mime_type: str,
        redactions: dict[str, int] | None = None,
    ) -> DocumentRecord:
        return DocumentRecord(
            id=item.document_id,
            collection=collection,
            source_id=item.source_id,
            source_kind=item.source_kind,
            uri=item.uri,
            title=item.title or title or item.filename or item.source_id,
            content_hash=digest,
            mime_type=mime_type,
            size_bytes=len(item.content),
            # The count (never the values) tells the admin credentials were found and removed.
            metadata={**item.metadata, "redacted_secrets": sum(redactions.values())}
            if redactions
            else item.metadata,
            submitted_at=submitted_at,
        )
