"""Applies the DuckDB outbox to the search indexes, and reconciles them with DuckDB at start-up."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from appliance.db.connection import Database
from appliance.db.generations import Generations
from appliance.index.protocols import IndexedChunk, SearchIndex

log = logging.getLogger(__name__)

BATCH = 2000
# A rebuild says how far it got this often: in the log, and in the progress file (when given) that
# `install_support wait-ready` reads, so a start that rebuilds for an hour is not taken for a hang.
REBUILD_LOG_EVERY_S = 15.0
REBUILD_PROGRESS = "rebuild-progress.json"  # in the index directory, only while a rebuild runs


# How long a status read waits for an apply in progress to end before reading mid-apply.
STATUS_WAIT_S = 1.0
# Between reads of an eventually consistent index's count while it settles.
SETTLE_POLL_S = 0.5


class IndexSync:
    """Keeps every index in step with the outbox.

    Each index records the last outbox seq it made durable. Replaying from there is safe
    because upserts and deletes are idempotent. Indexes may be durable at different seqs
    (the vector index is saved on an interval, since it is rewritten whole), so replay
    starts from the lowest and the outbox keeps rows until every index has them durable.
    """

    def __init__(
        self,
        db: Database,
        indexes: Sequence[SearchIndex],
        save_intervals: dict[str, float] | None = None,
        generations: Generations | None = None,
        progress_path: Path | None = None,
    ) -> None:
        self.db = db
        self.progress_path = progress_path
        # Moved after each apply: what a search returns changed (caches keyed by it miss).
        self.generations = generations
        self.indexes = list(indexes)
        self._save_intervals = save_intervals or {}
        self._applied: dict[str, int] = {}  # in memory: applied and searchable
        self._durable: dict[str, int] = {}  # committed to disk
        self._last_save: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- start-up ------------------------------------------------------------------------
    def reconcile(self) -> dict[str, str]:
        """Bring every index level with DuckDB: replay the outbox, or rebuild when that cannot work."""
        outcome = {}
        with self._lock:
            low, high = self._outbox_bounds()
            for index in self.indexes:
                seq = index.applied_seq()
                reason = None
                if seq is None:
                    reason = "missing or unreadable"
                elif seq > high:
                    reason = f"ahead of the catalogue (index at seq {seq}, outbox at {high})"
                elif low is not None and seq < low - 1:
                    reason = f"behind the retained outbox (index at seq {seq}, oldest kept {low})"
                if reason and high == 0:
                    self._rebuild(index, high)  # a new installation: nothing to rebuild from
                    outcome[index.name] = "created"
                elif reason:
                    log.warning("rebuilding index from DuckDB", extra={"index": index.name, "reason": reason})
                    self._rebuild(index, high)
                    outcome[index.name] = f"rebuilt: {reason}"
                else:
                    self._applied[index.name] = self._durable[index.name] = seq
                    # After a clean stop every index is durable at the outbox's head: nothing to replay.
                    outcome[index.name] = (
                        f"up to date at seq {seq}" if seq >= high else f"replay from seq {seq}"
                    )
            self._apply_locked(force_commit=True)
            expected = int(self.db.fetchone("SELECT count(*) FROM chunks")[0])
            for index in self.indexes:
                count = self._settled_count(index, expected)
                if count != expected:
                    log.warning(
                        "index count disagrees with DuckDB after replay; rebuilding",
                        extra={"index": index.name, "index_count": count, "duckdb_count": expected},
                    )
                    self._rebuild(index, self._outbox_bounds()[1])
                    outcome[index.name] = "rebuilt: count mismatch"
        return outcome

    @staticmethod
    def _settled_count(index: SearchIndex, expected: int) -> int:
        """The index's count, read again until it equals DuckDB's or the index's settle time is up:
        an eventually consistent engine (a Qdrant cluster's replicas) may count a write it has
        acknowledged only a moment later, and a lag is not damage worth a full rebuild."""
        deadline = time.monotonic() + index.count_settle_seconds
        count = index.count()
        if count != expected and index.count_settle_seconds > 0:
            log.info(
                "index count trails DuckDB; waiting for the engine to settle",
                extra={"index": index.name, "index_count": count, "duckdb_count": expected},
            )
        while count != expected and time.monotonic() < deadline:
            time.sleep(min(SETTLE_POLL_S, max(0.0, deadline - time.monotonic())))
            count = index.count()
        return count

    def _outbox_bounds(self) -> tuple[int | None, int]:
        low, high = self.db.fetchone("SELECT min(seq), max(seq) FROM index_outbox")
        return low, int(high or 0)

    def _rebuild(self, index: SearchIndex, seq: int) -> None:
        if self.generations is not None:
            self.generations.bump_all()
        index.reset()
        last_id = done = 0
        total = int(self.db.fetchone("SELECT count(*) FROM chunks")[0])
        started = reported = time.monotonic()
        while True:
            rows = self.db.fetchall(
                f"""SELECT k.id, d.collection, k.document_id, d.title, k.text, k.embedding
                    FROM chunks k JOIN documents d ON k.document_id = d.id
                    WHERE k.id > ? ORDER BY k.id LIMIT {BATCH}""",
                [last_id],
            )
            if not rows:
                break
            index.upsert([_indexed(r) for r in rows])
            last_id = rows[-1][0]
            done += len(rows)
            if time.monotonic() - reported >= REBUILD_LOG_EVERY_S:  # minutes at a million chunks
                reported = time.monotonic()
                progress = {"index": index.name, "chunks_done": done, "chunks": total,
                            "seconds": round(reported - started, 1)}  # fmt: skip
                log.info("rebuilding index", extra=progress)
                self._write_progress(progress)
        index.commit(seq)
        if self.progress_path is not None:
            self.progress_path.unlink(missing_ok=True)
        self._applied[index.name] = self._durable[index.name] = seq
        self._last_save[index.name] = time.monotonic()

    def _write_progress(self, progress: dict) -> None:
        if self.progress_path is None:
            return
        tmp = self.progress_path.with_name(self.progress_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(progress))
            os.replace(tmp, self.progress_path)
        except OSError as exc:  # a full disk must not stop the rebuild: the log says it too
            log.warning("cannot write the rebuild progress file", extra={"error": str(exc)})

    # -- steady state ----------------------------------------------------------------------
    def apply_pending(self) -> int:
        """Apply outbox rows not yet applied; returns the highest seq now searchable everywhere."""
        with self._lock:
            return self._apply_locked(force_commit=False)

    def flush(self) -> None:
        """Make everything applied durable (shutdown, backups)."""
        with self._lock:
            self._apply_locked(force_commit=True)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold every index still: while inside, nothing is applied, no index commits and the outbox
        is not compacted, so a copy of the index files stays at a seq the outbox still holds
        (backups). Ingestion keeps writing DuckDB meanwhile; its changes wait to be indexed."""
        with self._lock:
            yield

    def _apply_locked(self, force_commit: bool) -> int:
        start = min(self._applied.values(), default=0)
        touched: set[str] = set()
        deleted = False
        while True:
            ops = self.db.fetchall(
                f"SELECT seq, op, chunk_id FROM index_outbox WHERE seq > ? ORDER BY seq LIMIT {BATCH}",
                [start],
            )
            if not ops:
                break
            last_op: dict[int, str] = {}
            for _, op, chunk_id in ops:
                last_op[chunk_id] = op
            upsert_ids = [cid for cid, op in last_op.items() if op == "upsert"]
            rows = (
                self.db.fetchall(
                    """SELECT k.id, d.collection, k.document_id, d.title, k.text, k.embedding
                   FROM chunks k JOIN documents d ON k.document_id = d.id WHERE k.id IN (SELECT unnest(?))""",
                    [upsert_ids],
                )
                if upsert_ids
                else []
            )
            found = {r[0] for r in rows}
            # A chunk upserted then deleted later in the catalogue is gone: treat as a delete.
            delete_ids = [cid for cid, op in last_op.items() if op == "delete" or cid not in found]
            batch_end = ops[-1][0]
            chunks = [_indexed(r) for r in rows]
            for index in self.indexes:
                if self._applied.get(index.name, 0) >= batch_end:
                    continue
                if delete_ids:
                    index.delete(delete_ids)
                if chunks:
                    index.upsert(chunks)
                self._applied[index.name] = batch_end
            touched.update(c.collection for c in chunks)
            deleted = deleted or bool(delete_ids)
            self._moved(touched, deleted)
            start = batch_end
        self._commit_due(force_commit)
        # Again once committed: a keyword index shows what it was given only from its commit on.
        self._moved(touched, deleted)
        return min(self._applied.values(), default=0)

    def _moved(self, collections: set[str], deleted: bool) -> None:
        """What a search over these collections returns may have changed (caches keyed by their
        generation miss from now on); a deleted chunk's collection is no longer in the catalogue,
        so a delete moves every collection."""
        if self.generations is None:
            return
        if collections:
            self.generations.bump(collections)
        if deleted:
            self.generations.bump_all()

    def _commit_due(self, force: bool) -> None:
        now = time.monotonic()
        for index in self.indexes:
            applied = self._applied.get(index.name, 0)
            if applied <= self._durable.get(index.name, -1) and not force:
                continue
            interval = self._save_intervals.get(index.name, 0.0)
            if not force and now - self._last_save.get(index.name, 0.0) < interval:
                continue
            index.commit(applied)
            self._durable[index.name] = applied
            self._last_save[index.name] = now
        self._compact()

    def _compact(self) -> None:
        # Keep the row at the lowest durable seq so max(seq) never falls below what indexes hold.
        durable = min(self._durable.values(), default=0)
        if durable > 0:
            self.db.write("DELETE FROM index_outbox WHERE seq < ?", [durable])

    def status(self) -> dict[str, dict]:
        """Where each index stands. Read between applies when one ends within a second; otherwise
        read as it is, mid-apply (`settled: false`): the readiness probe calls this, and a probe must
        answer while a large batch is applied or a commit waits on a full disk."""
        settled = self._lock.acquire(timeout=STATUS_WAIT_S)
        try:
            _, high = self._outbox_bounds()
            return {
                index.name: {
                    "applied_seq": self._applied.get(index.name, 0),
                    "durable_seq": self._durable.get(index.name, 0),
                    "outbox_seq": high,
                    "count": index.count(),
                    "settled": settled,
                    # An eventually consistent engine (a Qdrant cluster) may count a write late.
                    "count_may_lag": index.count_settle_seconds > 0,
                }
                for index in self.indexes
            }
        finally:
            if settled:
                self._lock.release()


def _indexed(row: tuple) -> IndexedChunk:
    chunk_id, collection, document_id, title, text, embedding = row
    vector = np.asarray(embedding, dtype=np.float32) if embedding is not None else None
    return IndexedChunk(chunk_id, collection, document_id, title or "", text, vector)
