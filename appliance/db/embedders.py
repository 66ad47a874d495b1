"""Each collection's embedder and the vectors of its other generations (one being built, or the one a
switch left behind until it is confirmed), in DuckDB; a switch or a rollback is one transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import duckdb
import msgspec
import numpy as np

from appliance.db.connection import Database
from appliance.db.group_write import rows_with_vectors
from appliance.document import Chunk, Location
from appliance.registry_records import CollectionEmbedder

BATCH = 256

# Migration 0018: each collection's embedder (a registry reference; no row: the server's embedder),
# and the vectors of a generation being built or of the one a switch left (kept until confirmed).
COLLECTION_EMBEDDERS_SQL = """
CREATE TABLE collection_embedders (
    collection VARCHAR PRIMARY KEY,
    body JSON NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE embedder_vectors (
    collection VARCHAR NOT NULL,
    generation INTEGER NOT NULL,
    chunk_id BIGINT NOT NULL,
    embedding FLOAT[] NOT NULL,
    PRIMARY KEY (collection, generation, chunk_id)
);
"""


class EmbedderStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- records ----------------------------------------------------------------------------------
    def get(self, collection: str) -> CollectionEmbedder | None:
        row = self.db.fetchone("SELECT body FROM collection_embedders WHERE collection = ?", [collection])
        return msgspec.json.decode(row[0], type=CollectionEmbedder) if row else None

    def all(self) -> list[CollectionEmbedder]:
        rows = self.db.fetchall("SELECT body FROM collection_embedders ORDER BY collection")
        return [msgspec.json.decode(r[0], type=CollectionEmbedder) for r in rows]

    def save(self, record: CollectionEmbedder) -> None:
        self.db.run_in_transaction(lambda cur: self._save(cur, record))

    @staticmethod
    def _save(cur: duckdb.DuckDBPyConnection, record: CollectionEmbedder) -> None:
        cur.execute(
            """INSERT INTO collection_embedders (collection, body) VALUES (?, ?)
               ON CONFLICT (collection) DO UPDATE SET body = excluded.body, updated_at = now()""",
            [record.collection, msgspec.json.encode(record).decode()],
        )

    def delete(self, collection: str) -> None:
        self.db.write("DELETE FROM collection_embedders WHERE collection = ?", [collection])

    # -- the collection's chunks ------------------------------------------------------------------
    def chunk_ids(self, collection: str) -> set[int]:
        rows = self.db.fetchall(
            "SELECT k.id FROM chunks k JOIN documents d ON k.document_id = d.id WHERE d.collection = ?",
            [collection],
        )
        return {r[0] for r in rows}

    def chunks(self, collection: str, ids: Sequence[int] | None = None) -> Iterator[list[tuple]]:
        """(chunk id, document title, Chunk) in batches, by id: all of the collection's, or `ids`."""
        last = 0
        only = "AND k.id IN (SELECT unnest(?))" if ids is not None else ""
        while True:
            params: list = [collection, last] + ([list(ids)] if ids is not None else [])
            rows = self.db.fetchall(
                f"""SELECT k.id, d.title, k.ordinal, k.text, k.token_count, k.page, k.heading_path,
                           k.line_start, k.line_end
                    FROM chunks k JOIN documents d ON k.document_id = d.id
                    WHERE d.collection = ? AND k.id > ? {only} ORDER BY k.id LIMIT {BATCH}""",
                params,
            )
            if not rows:
                return
            yield [
                (r[0], r[1] or "", Chunk(r[2], r[3], Location(r[5], tuple(r[6] or ()), r[7], r[8]), r[4]))
                for r in rows
            ]
            last = rows[-1][0]

    def live_vectors(self, collection: str) -> Iterator[list[tuple[int, np.ndarray]]]:
        """The collection's chunks with their live vectors (chunks.embedding), in batches by id."""
        last = 0
        while True:
            rows = self.db.fetchall(
                f"""SELECT k.id, k.embedding FROM chunks k JOIN documents d ON k.document_id = d.id
                    WHERE d.collection = ? AND k.id > ? ORDER BY k.id LIMIT {BATCH}""",
                [collection, last],
            )
            if not rows:
                return
            yield [(r[0], np.asarray(r[1], dtype=np.float32)) for r in rows]
            last = rows[-1][0]

    # -- other generations' vectors ---------------------------------------------------------------
    def staged_ids(self, collection: str, generation: int) -> set[int]:
        rows = self.db.fetchall(
            "SELECT chunk_id FROM embedder_vectors WHERE collection = ? AND generation = ?",
            [collection, generation],
        )
        return {r[0] for r in rows}

    def stage(self, collection: str, generation: int, rows: Sequence[tuple[int, np.ndarray]]) -> None:
        if not rows:
            return

        latest = dict(rows)  # one row per chunk (a statement cannot upsert the same row twice)
        chunk_ids = np.fromiter(latest, dtype=np.int64, count=len(latest))
        vectors = np.stack([np.asarray(v, dtype=np.float32) for v in latest.values()])

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            with rows_with_vectors(cur, {"chunk_id": chunk_ids}, vectors) as source:
                cur.execute(
                    f"""INSERT INTO embedder_vectors (collection, generation, chunk_id, embedding)
                        SELECT ?, ?, chunk_id, embedding FROM {source}
                        ON CONFLICT DO UPDATE SET embedding = excluded.embedding""",
                    [collection, generation],
                )

        self.db.run_in_transaction(work)

    def unstage(self, collection: str, generation: int, chunk_ids: Sequence[int] | None = None) -> None:
        """Drop a generation's kept vectors (all of them, or those of `chunk_ids`)."""
        if chunk_ids is None:
            self.db.write(
                "DELETE FROM embedder_vectors WHERE collection = ? AND generation = ?",
                [collection, generation],
            )
        elif chunk_ids:
            self.db.write(
                "DELETE FROM embedder_vectors WHERE collection = ? AND generation = ? "
                "AND chunk_id IN (SELECT unnest(?))",
                [collection, generation, list(chunk_ids)],
            )

    def staged(self, collection: str, generation: int) -> Iterator[list[tuple[int, np.ndarray]]]:
        last = 0
        while True:
            rows = self.db.fetchall(
                f"""SELECT chunk_id, embedding FROM embedder_vectors
                    WHERE collection = ? AND generation = ? AND chunk_id > ? ORDER BY chunk_id LIMIT {BATCH}""",
                [collection, generation, last],
            )
            if not rows:
                return
            yield [(r[0], np.asarray(r[1], dtype=np.float32)) for r in rows]
            last = rows[-1][0]

    def generations(self, collection: str) -> set[int]:
        rows = self.db.fetchall(
            "SELECT DISTINCT generation FROM embedder_vectors WHERE collection = ?", [collection]
        )
        return {r[0] for r in rows}

    # -- the switch -------------------------------------------------------------------------------
    def swap(self, record: CollectionEmbedder, into: int, keep: int | None) -> None:
        """In one transaction: the live vectors of the collection's chunks are kept as generation
        `keep` (unless None), generation `into`'s staged vectors become the live ones (and leave the
        staging table), and the record is saved. Every chunk of the collection must have a staged
        vector of `into` (the caller made sure, holding the catalogue's write lock)."""
        collection = record.collection

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            if keep is not None:
                cur.execute(
                    "DELETE FROM embedder_vectors WHERE collection = ? AND generation = ?", [collection, keep]
                )
                cur.execute(
                    """INSERT INTO embedder_vectors (collection, generation, chunk_id, embedding)
                       SELECT ?, ?, k.id, k.embedding FROM chunks k JOIN documents d ON k.document_id = d.id
                       WHERE d.collection = ?""",
                    [collection, keep, collection],
                )
            cur.execute(
                """UPDATE chunks SET embedding = s.embedding FROM embedder_vectors s
                   WHERE s.collection = ? AND s.generation = ? AND s.chunk_id = chunks.id""",
                [collection, into],
            )
            cur.execute(
                "DELETE FROM embedder_vectors WHERE collection = ? AND generation = ?", [collection, into]
            )
            self._save(cur, record)

        self.db.run_in_transaction(work)
