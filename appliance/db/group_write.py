"""Writes a group of documents and their embedded chunks with a few set-wise statements."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np

from appliance.document import Chunk


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document's catalogue row, as a job writes it."""

    id: str
    collection: str
    source_id: str
    source_kind: str
    uri: str | None
    title: str
    content_hash: str
    mime_type: str
    size_bytes: int
    metadata: dict
    submitted_at: datetime | None = None  # when the job carrying this version was created


@dataclass(frozen=True, slots=True)
class EmbeddedChunk:
    """A chunk with its vector."""

    chunk: Chunk
    embedding: np.ndarray


def write_group(
    cur: duckdb.DuckDBPyConnection, documents: Sequence[tuple[DocumentRecord, Sequence[EmbeddedChunk]]]
) -> list[list[int] | None]:
    """Replace each document and its chunks, inside the caller's transaction. A document whose
    stored version was submitted later is left alone (None in its place); otherwise its new chunk
    ids, in chunk order. The same document twice in a group: the later one wins, as it would
    written one after the other."""
    results: list[list[int] | None] = []
    start = 0
    while start < len(documents):
        # Runs of distinct ids: one statement cannot upsert the same row twice.
        seen: set[str] = set()
        end = start
        while end < len(documents) and documents[end][0].id not in seen:
            seen.add(documents[end][0].id)
            end += 1
        results += _write_run(cur, documents[start:end])
        start = end
    return results


def _write_run(
    cur: duckdb.DuckDBPyConnection, documents: Sequence[tuple[DocumentRecord, Sequence[EmbeddedChunk]]]
) -> list[list[int] | None]:
    stored = dict(
        cur.execute(
            "SELECT id, submitted_at FROM documents WHERE id IN (SELECT unnest(?))",
            [[record.id for record, _ in documents]],
        ).fetchall()
    )
    kept = [(r, c) for r, c in documents if not _superseded(r, stored)]
    if not kept:
        return [None] * len(documents)
    replaced = [r.id for r, _ in kept if r.id in stored]
    if replaced:
        cur.execute(
            """INSERT INTO index_outbox (seq, op, chunk_id)
               SELECT nextval('outbox_seq'), 'delete', id FROM
               (SELECT id FROM chunks WHERE document_id IN (SELECT unnest(?)) ORDER BY id)""",
            [replaced],
        )
        cur.execute("DELETE FROM chunks WHERE document_id IN (SELECT unnest(?))", [replaced])
    columns = list(zip(*(_document_row(r) for r, _ in kept), strict=True))
    cur.execute(
        """INSERT INTO documents (id, collection, source_id, source_kind, uri, title, content_hash, mime_type,
                                  size_bytes, metadata, submitted_at)
           SELECT unnest(?), unnest(?), unnest(?), unnest(?), unnest(?), unnest(?), unnest(?), unnest(?),
                  unnest(?), unnest(?)::JSON, unnest(?)
           ON CONFLICT (id) DO UPDATE SET source_kind = excluded.source_kind, uri = excluded.uri,
           title = excluded.title, content_hash = excluded.content_hash, mime_type = excluded.mime_type,
           size_bytes = excluded.size_bytes, metadata = excluded.metadata, updated_at = now(),
           submitted_at = excluded.submitted_at""",
        [list(c) for c in columns],
    )
    ids = _insert_chunks(cur, kept)
    written = {record.id: chunk_ids for (record, _), chunk_ids in zip(kept, ids, strict=True)}
    return [written.get(record.id) for record, _ in documents]


def _superseded(record: DocumentRecord, stored: dict) -> bool:
    at = stored.get(record.id)
    return record.submitted_at is not None and at is not None and at > record.submitted_at


def _document_row(record: DocumentRecord) -> tuple:
    return (
        record.id,
        record.collection,
        record.source_id,
        record.source_kind,
        record.uri,
        record.title,
        record.content_hash,
        record.mime_type,
        record.size_bytes,
        json.dumps(record.metadata),
        record.submitted_at,
    )


def _insert_chunks(
    cur: duckdb.DuckDBPyConnection, documents: Sequence[tuple[DocumentRecord, Sequence[EmbeddedChunk]]]
) -> list[list[int]]:
    chunks = [(record.id, ec) for record, embedded in documents for ec in embedded]
    if not chunks:
        return [[] for _ in documents]
    # Ids drawn first, ascending, so a document's ids follow its chunk order.
    ids = sorted(
        r[0] for r in cur.execute("SELECT nextval('chunk_ids') FROM range(?)", [len(chunks)]).fetchall()
    )
    vectors = np.stack([ec.embedding.astype(np.float32, copy=False) for _, ec in chunks])
    columns = {
        "id": np.asarray(ids, dtype=np.int64),
        "document_id": _objects([doc_id for doc_id, _ in chunks]),
        "ordinal": np.array([ec.chunk.ordinal for _, ec in chunks], dtype=np.int32),
        "text": _objects([ec.chunk.text for _, ec in chunks]),
        "token_count": np.array([ec.chunk.token_count for _, ec in chunks], dtype=np.int32),
        "page": _objects([ec.chunk.location.page for _, ec in chunks]),
        "heading_path": _objects([list(ec.chunk.location.heading_path) or None for _, ec in chunks]),
        "line_start": _objects([ec.chunk.location.line_start for _, ec in chunks]),
        "line_end": _objects([ec.chunk.location.line_end for _, ec in chunks]),
    }
    with rows_with_vectors(cur, columns, vectors) as source:
        cur.execute(
            f"""INSERT INTO chunks (id, document_id, ordinal, text, token_count, page, heading_path, line_start,
                                    line_end, embedding)
                SELECT id, document_id, ordinal, text, token_count, page, heading_path, line_start, line_end,
                       embedding FROM {source}"""
        )
    cur.execute(
        """INSERT INTO index_outbox (seq, op, chunk_id)
           SELECT nextval('outbox_seq'), 'upsert', id FROM (SELECT unnest(?) AS id ORDER BY id)""",
        [ids],
    )
    by_document: dict[str, list[int]] = {}
    for (doc_id, _), chunk_id in zip(chunks, ids, strict=True):
        by_document.setdefault(doc_id, []).append(chunk_id)
    return [by_document.get(record.id, []) for record, _ in documents]


@contextmanager
def rows_with_vectors(
    cur: duckdb.DuckDBPyConnection, columns: dict[str, np.ndarray], vectors: np.ndarray
) -> Iterator[str]:
    """A FROM clause over rows given as numpy columns, each with its `embedding` (a row of
    `vectors`), in order. DuckDB scans the arrays where they are: a vector passed as a list
    parameter became 384 Python floats, slower than embedding it."""
    rows, dims = vectors.shape
    cur.register("_rows", {"row": np.arange(rows), **columns})
    cur.register(
        "_vectors",
        {
            "row": np.repeat(np.arange(rows), dims),
            "pos": np.tile(np.arange(dims), rows),
            "v": np.ascontiguousarray(vectors, dtype=np.float32).ravel(),
        },
    )
    try:
        yield """(SELECT r.*, v.embedding FROM _rows r JOIN (SELECT row, list(v ORDER BY pos) AS embedding
                   FROM _vectors GROUP BY row) v USING (row) ORDER BY r.row)"""
    finally:
        cur.unregister("_rows")
        cur.unregister("_vectors")


def _objects(values: list) -> np.ndarray:
    """A column of Python values (None where absent; lists stay lists), as DuckDB's scan takes it."""
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):  # one by one: a slice assignment would unpack equal-length lists
        column[i] = value
    return column
