"""BM25 keyword index over chunk titles and bodies, backed by Tantivy."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import tantivy

from appliance.errors import NotReady
from appliance.index.protocols import COLLECTION_RE, IndexedChunk, IndexHit, check_chunk_id

log = logging.getLogger(__name__)

TITLE_BOOST = 1.5
MAX_QUERY_CHARS = 4096
MAX_QUERY_TERMS = 64
# tantivy-py 0.27 does not expose PreparedCommit.set_payload, so the applied seq lives in a
# sentinel document written in the same commit as the data: atomic by construction. Chunk ids
# are positive, so id 0 can never collide, and it has no collection, so no filter can match it.
META_ID = 0
META_VERSION = "__meta__:v1"  # bump when tokenisation or field semantics change: forces a rebuild


def _schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_integer_field("chunk_id", stored=True, indexed=True, fast=True)
    sb.add_text_field("collection", tokenizer_name="raw", index_option="basic")
    sb.add_text_field("document_id", stored=True, tokenizer_name="raw", index_option="basic")
    sb.add_text_field("title", tokenizer_name="en_stem")
    sb.add_text_field("body", tokenizer_name="en_stem")
    sb.add_integer_field("meta_seq", stored=True)
    return sb.build()


def _query_analyzer() -> tantivy.TextAnalyzer:
    # Same chain as Tantivy's built-in "en_stem" plus stop words, applied before stemming so
    # that the terms we look up are exactly the ones indexing produced.
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


@contextmanager
def _no_panics() -> Iterator[None]:
    # A Rust panic (damaged file found mid-query) arrives as a BaseException that generic
    # `except Exception` handlers miss; make it an ordinary error so one request fails, not the worker.
    try:
        yield
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            raise RuntimeError(f"BM25 index is damaged and needs a rebuild: {exc}") from exc
        raise


class TantivyKeywordIndex:
    """KeywordIndex on a Tantivy directory with one long-lived writer.

    `applied_seq()` is None when the directory was missing, had to be moved aside as corrupt,
    or holds no sentinel of the current META_VERSION (never committed by us, or wiped by
    `reset()` and not committed since): the reconciler must rebuild it. Upserts and deletes
    become searchable at `commit`.
    """

    name = "bm25"
    count_settle_seconds = 0.0  # counts exactly what it committed

    def __init__(self, path: Path, writer_heap_bytes: int = 128_000_000) -> None:
        self.path = Path(path)
        self._schema = _schema()
        self._analyzer = _query_analyzer()
        self._write_lock = threading.Lock()
        self._dirty = False
        self._index, self._seq = self._open_or_move_aside()
        self._index.config_reader(reload_policy="manual")
        self._index.reload()
        self._has_meta = self._seq is not None
        try:
            self._writer: tantivy.IndexWriter | None = self._index.writer(heap_size=writer_heap_bytes)
        except ValueError as exc:
            if "LockBusy" in str(exc):
                raise RuntimeError(
                    f"BM25 index at {self.path} is locked by another writer (is another appliance running?)"
                ) from exc
            raise

    # -- opening -----------------------------------------------------------------------------
    def _open_or_move_aside(self) -> tuple[tantivy.Index, int | None]:
        if self.path.exists():
            try:
                return self._open()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # ValueError for most damage, a Rust panic for some
                aside = self.path.with_name(
                    f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
                )
                log.error(
                    "BM25 index unreadable; moving it aside and starting empty",
                    extra={"path": str(self.path), "aside": str(aside), "error": str(exc)},
                )
                os.replace(self.path, aside)
        self.path.mkdir(parents=True, exist_ok=True)
        return tantivy.Index(self._schema, str(self.path), reuse=True), None

    def _open(self) -> tuple[tantivy.Index, int | None]:
        if not self.path.is_dir():
            raise ValueError(f"{self.path} is not a directory")
        index = tantivy.Index(self._schema, str(self.path), reuse=True)  # raises on schema mismatch
        searcher = index.searcher()  # opens every segment, checking each file's footer
        hits = searcher.search(tantivy.Query.term_query(self._schema, "chunk_id", META_ID), 1).hits
        if not hits:
            return index, None
        meta = searcher.doc(hits[0][1])
        if meta.get_first("document_id") != META_VERSION:
            log.warning("BM25 index written by another format version; it will be rebuilt")
            return index, None
        return index, int(meta.get_first("meta_seq"))

    # -- SearchIndex -------------------------------------------------------------------------
    def applied_seq(self) -> int | None:
        return self._seq

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        docs = []
        for c in chunks:
            chunk_id = check_chunk_id(c.chunk_id)
            if not COLLECTION_RE.match(c.collection):
                raise ValueError(f"invalid collection name {c.collection!r}")
            doc = tantivy.Document()
            doc.add_integer("chunk_id", chunk_id)
            doc.add_text("collection", c.collection)
            doc.add_text("document_id", str(c.document_id))
            doc.add_text("title", c.title or "")
            doc.add_text("body", c.text or "")
            docs.append((chunk_id, doc))
        with self._write_lock, _no_panics():
            writer = self._live_writer()
            for chunk_id, doc in docs:
                # Delete-by-term applies to everything added before it, so repeats within one
                # batch or across replays leave exactly the last version.
                writer.delete_documents_by_term("chunk_id", chunk_id)
                writer.add_document(doc)
            self._dirty = self._dirty or bool(docs)

    def delete(self, chunk_ids: Sequence[int]) -> None:
        ids = [check_chunk_id(i) for i in chunk_ids]
        with self._write_lock, _no_panics():
            writer = self._live_writer()
            for chunk_id in ids:
                writer.delete_documents_by_term("chunk_id", chunk_id)
            self._dirty = self._dirty or bool(ids)

    def commit(self, seq: int) -> None:
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        with self._write_lock, _no_panics():
            writer = self._live_writer()
            if not self._dirty and self._has_meta and seq == self._seq:
                return
            writer.delete_documents_by_term("chunk_id", META_ID)
            meta = tantivy.Document()
            meta.add_integer("chunk_id", META_ID)
            meta.add_text("document_id", META_VERSION)
            meta.add_integer("meta_seq", seq)
            writer.add_document(meta)
            try:
                writer.commit()
            except Exception:
                # Leave the writer usable; the pending batch is lost and the caller replays
                # from applied_seq(), which still names the last durable state.
                writer.rollback()
                self._dirty = False
                raise
            self._index.reload()
            self._seq, self._has_meta, self._dirty = seq, True, False

    def count(self) -> int:
        with _no_panics():
            n = self._live_index().searcher().num_docs
        return max(0, n - 1) if self._has_meta else n

    def reset(self) -> None:
        with self._write_lock, _no_panics():
            writer = self._live_writer()
            writer.rollback()  # pending adds would otherwise survive delete_all_documents
            writer.delete_all_documents()
            # Committed without a sentinel: a crash before the rebuild's commit reopens as None.
            writer.commit()
            self._index.reload()
            self._seq, self._has_meta, self._dirty = 0, False, False

    def close(self) -> None:
        with self._write_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                try:
                    writer.wait_merging_threads()  # consumes the writer, releasing the lock file
                except Exception:
                    log.warning("BM25 writer did not close cleanly", exc_info=True)
            self._index = None

    # -- KeywordIndex ------------------------------------------------------------------------
    def search(self, query: str, collections: Sequence[str], k: int) -> list[IndexHit]:
        index = self._live_index()
        terms = list(dict.fromkeys(self._analyzer.analyze((query or "")[:MAX_QUERY_CHARS])))[:MAX_QUERY_TERMS]
        colls = list(dict.fromkeys(c for c in collections if isinstance(c, str) and c))
        if not terms or not colls or k <= 0:
            return []
        Q, should, must = tantivy.Query, tantivy.Occur.Should, tantivy.Occur.Must
        # Built term by term rather than through the query parser: user text is never syntax.
        text = Q.boolean_query(
            [(should, Q.boost_query(Q.term_query(self._schema, "title", t), TITLE_BOOST)) for t in terms]
            + [(should, Q.term_query(self._schema, "body", t)) for t in terms]
        )
        # Zero-scored so that collection sizes never skew rankings across collections.
        scope = Q.const_score_query(
            Q.boolean_query([(should, Q.term_query(self._schema, "collection", c)) for c in colls]), 0.0
        )
        with _no_panics():
            searcher = index.searcher()
            limit = min(k, max(searcher.num_docs, 1))
            hits = searcher.search(Q.boolean_query([(must, scope), (must, text)]), limit, count=False).hits
            if not hits:
                return []
            ids = searcher.fast_field_values("chunk_id", [addr for _, addr in hits])
        return [IndexHit(int(cid), float(score)) for (score, _), cid in zip(hits, ids, strict=True)]

    # -- helpers -----------------------------------------------------------------------------
    def _live_writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            raise NotReady("BM25 index is closed")
        return self._writer

    def _live_index(self) -> tantivy.Index:
        index = self._index
        if index is None:
            raise NotReady("BM25 index is closed")
        return index
