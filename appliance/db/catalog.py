"""Collections, documents and chunks: the catalogue, and the outbox rows that follow its changes."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import duckdb
import numpy as np

from appliance.db.connection import Database
from appliance.db.generations import Generations
from appliance.db.group_write import DocumentRecord, EmbeddedChunk, write_group
from appliance.document import Chunk, Location
from appliance.errors import Conflict, NotFound
from appliance.names import check_collection_name
from appliance.records import Chunk as StoredChunk
from appliance.records import ChunkLocation, Collection, Document, Hit

_DOC_NAMESPACE = uuid.UUID("6f1c8d2e-3b7a-4f59-9a51-2d0c7e4b8a10")


def document_id_for(collection: str, source_id: str) -> str:
    """Stable id: the same source in the same collection is always the same document."""
    return str(uuid.uuid5(_DOC_NAMESPACE, f"{collection}\x00{source_id}"))


_DOC_COLUMNS = (
    "id, collection, source_id, source_kind, uri, title, content_hash, mime_type, size_bytes, metadata"
)


def _document_row(row: tuple) -> Document:
    (
        id_,
        collection,
        source_id,
        source_kind,
        uri,
        title,
        content_hash,
        mime,
        size,
        metadata,
        created,
        updated,
    ) = row
    return Document(
        id=id_,
        collection=collection,
        source_id=source_id,
        source_kind=source_kind,
        uri=uri,
        title=title,
        content_hash=content_hash,
        mime_type=mime,
        size_bytes=size,
        metadata=json.loads(metadata) if metadata else {},
        created_at=created.isoformat() if created else None,
        updated_at=updated.isoformat() if updated else None,
    )


class EmbedderMoved(Conflict):
    """A write's vectors were made by an embedder its collection has since left (a switch or a
    rollback happened between embedding and writing)."""

    def __init__(self, collection: str) -> None:
        super().__init__(f"collection {collection!r} changed its embedder while these chunks were embedded")
        self.collection = collection


class Catalog:
    """Reads and writes the catalogue. Every write that changes chunks also appends outbox rows.

    Writes that touch the outbox are serialised by one lock so outbox sequence numbers are
    committed in order: an indexer that has applied seq N has then seen every seq <= N.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.write_lock = threading.Lock()
        self.generations = Generations()

    # -- collections -------------------------------------------------------------------
    def create_collection(self, name: str, description: str = "") -> Collection:
        check_collection_name(name)
        try:
            self.db.write("INSERT INTO collections (name, description) VALUES (?, ?)", [name, description])
        except duckdb.ConstraintException:
            raise Conflict(f"collection {name!r} already exists") from None
        return self.get_collection(name)

    def ensure_collection(self, name: str) -> None:
        check_collection_name(name)
        self.db.write("INSERT INTO collections (name) VALUES (?) ON CONFLICT DO NOTHING", [name])

    def get_collection(self, name: str) -> Collection:
        rows = self.list_collections(names=[name])
        if not rows:
            raise NotFound(f"collection {name!r} does not exist")
        return rows[0]

    def list_collections(self, names: Sequence[str] | None = None) -> list[Collection]:
        where, params = (
            ("WHERE c.name IN (SELECT unnest(?))", [list(names)]) if names is not None else ("", [])
        )
        rows = self.db.fetchall(
            f"""
            SELECT c.name, c.description, c.created_at,
                   (SELECT count(*) FROM documents d WHERE d.collection = c.name),
                   (SELECT count(*) FROM chunks k JOIN documents d ON k.document_id = d.id
                     WHERE d.collection = c.name)
            FROM collections c {where} ORDER BY c.name
            """,
            params,
        )
        return [
            Collection(
                name=n, description=desc, created_at=created.isoformat(), documents=docs, chunks=chunks
            )
            for n, desc, created, docs, chunks in rows
        ]

    def existing_collections(self, names: Sequence[str]) -> set[str]:
        rows = self.db.fetchall(
            "SELECT name FROM collections WHERE name IN (SELECT unnest(?))", [list(names)]
        )
        return {r[0] for r in rows}

    def all_collection_names(self) -> list[str]:
        return [r[0] for r in self.db.fetchall("SELECT name FROM collections ORDER BY name")]

    # -- documents ---------------------------------------------------------------------
    def get_document(self, document_id: str) -> Document:
        row = self.db.fetchone(
            f"SELECT {_DOC_COLUMNS}, created_at, updated_at FROM documents WHERE id = ?", [document_id]
        )
        if row is None:
            raise NotFound(f"document {document_id!r} does not exist")
        return _document_row(row)

    def list_documents(self, collections: Sequence[str], limit: int = 100, offset: int = 0) -> list[Document]:
        rows = self.db.fetchall(
            f"""SELECT {_DOC_COLUMNS}, created_at, updated_at FROM documents
                WHERE collection IN (SELECT unnest(?)) ORDER BY collection, source_id LIMIT ? OFFSET ?""",
            [list(collections), limit, offset],
        )
        return [_document_row(r) for r in rows]

    def newest_documents(self, collection: str, since: str | None, limit: int) -> list[Document]:
        """A collection's documents created at or after `since` (an ISO timestamp), newest first."""
        rows = self.db.fetchall(
            f"""SELECT {_DOC_COLUMNS}, created_at, updated_at FROM documents
                WHERE collection = ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR created_at >= CAST(? AS TIMESTAMPTZ))
                ORDER BY created_at DESC, id LIMIT ?""",
            [collection, since, since, limit],
        )
        return [_document_row(r) for r in rows]

    def count_documents(self, collections: Sequence[str]) -> int:
        row = self.db.fetchone(
            "SELECT count(*) FROM documents WHERE collection IN (SELECT unnest(?))", [list(collections)]
        )
        return int(row[0])

    def document_hash(self, document_id: str) -> str | None:
        return self.document_hashes([document_id]).get(document_id)

    def document_hashes(self, document_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of these documents that exists."""
        return dict(
            self.db.fetchall(
                "SELECT id, content_hash FROM documents WHERE id IN (SELECT unnest(?))", [list(document_ids)]
            )
        )

    def stored_hashes(self, content_hashes: Sequence[str]) -> set[str]:
        """Which of these content hashes some stored document has (a twin may exist)."""
        rows = self.db.fetchall(
            "SELECT DISTINCT content_hash FROM documents WHERE content_hash IN (SELECT unnest(?))",
            [list(content_hashes)],
        )
        return {r[0] for r in rows}

    def embedded_copy(self, content_hash: str, exclude_id: str) -> tuple[dict, list[EmbeddedChunk]] | None:
        """Another document with the same bytes (in any collection: one embedding model serves
        all), with its chunks and embeddings: a moved or copied file is not embedded again."""
        # One statement, one snapshot: read as two queries, the twin could be replaced with other
        # content in between and its new text stored under this document's hash (another
        # collection's text under this one, never corrected since the hash then matches).
        rows = self.db.fetchall(
            """WITH twin AS (SELECT id, title, mime_type, collection FROM documents
                             WHERE content_hash = ? AND id <> ? ORDER BY id LIMIT 1)
               SELECT t.id, t.title, t.mime_type, t.collection, k.ordinal, k.text, k.token_count, k.page, k.heading_path,
                      k.line_start, k.line_end, k.embedding
               FROM twin t JOIN chunks k ON k.document_id = t.id ORDER BY k.ordinal""",
            [content_hash, exclude_id],
        )
        if not rows:
            return None
        doc_id, title, mime, collection = rows[0][:4]
        chunks = [r[4:] for r in rows]
        if not chunks or any(r[7] is None for r in chunks):
            return None
        embedded = [
            EmbeddedChunk(
                Chunk(r[0], r[1], Location(r[3], tuple(r[4] or ()), r[5], r[6]), r[2]),
                np.asarray(r[7], dtype=np.float32),
            )
            for r in chunks
        ]
        return {"id": doc_id, "title": title, "mime_type": mime, "collection": collection}, embedded

    def chunks_of(self, document_id: str) -> list[StoredChunk]:
        rows = self.db.fetchall(
            """SELECT id, ordinal, text, token_count, page, heading_path, line_start, line_end
               FROM chunks WHERE document_id = ? ORDER BY ordinal""",
            [document_id],
        )
        return [
            StoredChunk(
                chunk_id=r[0],
                ordinal=r[1],
                text=r[2],
                token_count=r[3],
                location=chunk_location(r[4], r[5], r[6], r[7]),
            )
            for r in rows
        ]

    def update_document_fields(
        self, document_id: str, title: str | None, uri: str | None, metadata: dict
    ) -> None:
        """Content unchanged: refresh what may have changed around it, without touching chunks.
        A title is only replaced when the caller gave one (otherwise it came from parsing)."""
        # In a retried transaction: another worker replacing this row at the same moment is a
        # DuckDB write conflict, which must not fail the document.
        row = self.db.run_in_transaction(
            lambda cur: cur.execute(
                """UPDATE documents SET title = coalesce(?, title), uri = ?, metadata = ?, updated_at = now()
                   WHERE id = ? RETURNING collection""",
                [title, uri, json.dumps(metadata), document_id],
            ).fetchone()
        )
        if row is not None:  # search hits carry the title and filter on the metadata
            self.generations.bump([row[0]])

    def replace_document(
        self, record: DocumentRecord, chunks: Sequence[EmbeddedChunk], embedder_generation: int = 0
    ) -> list[int] | None:
        """Write a document and its chunks in one transaction, replacing any previous version.

        Returns the new chunk ids, or None when the stored version was submitted after this one
        (its job finished first): the newer version stays. Raises EmbedderMoved when the
        collection's live embedder generation is no longer `embedder_generation` (its vectors were
        made by an embedder the collection has just left: embed them again)."""
        return self.replace_documents([(record, chunks)], embedder_generation)[0]

    def replace_documents(
        self,
        documents: Sequence[tuple[DocumentRecord, Sequence[EmbeddedChunk]]],
        embedder_generation: int = 0,
    ) -> list[list[int] | None]:
        """replace_document for a group of one collection's documents, in one transaction (a
        commit syncs DuckDB's WAL: one per document cost short documents a third of their time).
        All or nothing: EmbedderMoved leaves every document of the group unwritten."""
        if not documents:
            return []
        collections = {record.collection for record, _ in documents}
        if len(collections) != 1:
            raise ValueError(f"one collection per group, got {sorted(collections)}")
        (collection,) = collections

        def work(cur: duckdb.DuckDBPyConnection) -> list[list[int] | None]:
            live = cur.execute(
                "SELECT CAST(json_extract(body, '$.live.generation') AS INTEGER) FROM collection_embedders "
                "WHERE collection = ?",
                [collection],
            ).fetchone()
            if (live[0] if live else 0) != embedder_generation:
                raise EmbedderMoved(collection)
            return write_group(cur, documents)

        with self.write_lock, self._changing(collection):
            return self.db.run_in_transaction(work)

    def delete_document(self, document_id: str) -> Document:
        doc = self.get_document(document_id)

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            self._delete_chunks(cur, document_id)
            cur.execute("DELETE FROM documents WHERE id = ?", [document_id])

        with self.write_lock, self._changing(doc.collection):
            self.db.run_in_transaction(work)
        return doc

    @contextmanager
    def _changing(self, collection: str) -> Iterator[None]:
        """Move the collection's generation before and after a write: a search overlapping it is
        keyed with a generation no search after it uses (db/generations.py)."""
        self.generations.bump([collection])
        try:
            yield
        finally:
            self.generations.bump([collection])

    @staticmethod
    def _delete_chunks(cur: duckdb.DuckDBPyConnection, document_id: str) -> None:
        cur.execute(
            """INSERT INTO index_outbox (seq, op, chunk_id)
               SELECT nextval('outbox_seq'), 'delete', id FROM (SELECT id FROM chunks WHERE document_id = ? ORDER BY id)""",
            [document_id],
        )
        cur.execute("DELETE FROM chunks WHERE document_id = ?", [document_id])

    # -- chunks for search -------------------------------------------------------------
    def hydrate_chunks(
        self, chunk_ids: Sequence[int], collections: Sequence[str], filters: dict | None = None
    ) -> dict[int, Hit]:
        """Chunk rows for search hits (not yet scored), restricted to `collections` and metadata `filters` (equality)."""
        if not chunk_ids:
            return {}
        where = ["k.id IN (SELECT unnest(?))", "d.collection IN (SELECT unnest(?))"]
        params: list = [list(chunk_ids), list(collections)]
        for key, value in (filters or {}).items():
            if key in ("source_kind", "mime_type", "source_id"):
                where.append(f"d.{key} = ?")
            else:
                # A JSON pointer (RFC 6901), not a JSONPath: every key means itself ("*", "a.b",
                # non-ASCII and control characters included), none is syntax.
                where.append("json_extract_string(d.metadata, ?) = ?")
                params.append("/" + key.replace("~", "~0").replace("/", "~1"))
            params.append(value if isinstance(value, str) else json.dumps(value))
        rows = self.db.fetchall(
            f"""SELECT k.id, k.document_id, d.source_id, d.title, k.text, k.page, k.heading_path, k.line_start,
                       k.line_end, d.metadata, d.collection, d.uri
                FROM chunks k JOIN documents d ON k.document_id = d.id WHERE {" AND ".join(where)}""",
            params,
        )
        return {
            r[0]: Hit(
                chunk_id=r[0],
                document_id=r[1],
                source_id=r[2],
                title=r[3],
                text=r[4],
                location=chunk_location(r[5], r[6], r[7], r[8]),
                metadata=json.loads(r[9]) if r[9] else {},
                collection=r[10],
                uri=r[11],
            )
            for r in rows
        }

    def chunk_count(self) -> int:
        return int(self.db.fetchone("SELECT count(*) FROM chunks")[0])


def chunk_location(
    page: int | None, heading_path: list | None, line_start: int | None, line_end: int | None
) -> ChunkLocation:
    return ChunkLocation(
        page=page,
        heading_path=list(heading_path) if heading_path else None,
        line_start=line_start,
        line_end=line_end if line_start is not None else None,
    )
