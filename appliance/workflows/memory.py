"""Long-term memory of a workflow, per API key: a deterministic summary of each succeeded run, and
the most relevant ones (BM25 over words, fused with embedding similarity when an embedder is at hand)
put in a later run's state."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import Counter
from typing import Any

from appliance.db.connection import Database
from appliance.workflow_records import WorkflowMemory

SUMMARY_CHARS = 2000  # a memory's summary is cut here: memory is a hint, not a copy of the run
KEEP = 500  # memories kept per key and workflow; the oldest go first
# Below this cosine a memory sharing no word with the inputs is not recalled: an unrelated hint only
# misleads a step. MiniLM puts unrelated short texts near 0 and related ones above 0.4.
MIN_SIMILARITY = 0.3
_RRF_K = 60
# An agent's memories are kept under this prefix and its name: a colon is in no workflow's name.
AGENT_SCOPE = "agent:"
_WORD = re.compile(r"[^\W_]{2,}", re.UNICODE)


def config(document: dict) -> dict | None:
    """A workflow's or agent's memory settings when enabled, else None (off unless declared)."""
    spec = document.get("memory") or {}
    if not spec.get("enabled"):
        return None
    return {
        "top_k": int(spec.get("top_k", 3)),
        "min_similarity": float(spec.get("min_similarity", MIN_SIMILARITY)),
    }


def summarize(inputs: Any, outputs: Any) -> str:
    """Inputs and outputs as compact JSON, bounded; no model: the same run gives the same summary."""
    text = "inputs: " + _compact(inputs) + "\noutputs: " + _compact(outputs)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def text_of(value: Any) -> str:
    """The words of a JSON value (its strings, numbers and keys' values), without its punctuation:
    what an embedder should compare (JSON syntax makes unrelated summaries look alike)."""
    if isinstance(value, dict):
        return " ".join(text_of(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(text_of(v) for v in value)
    return "" if value is None or isinstance(value, bool) else str(value)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def rank(
    query: str,
    summaries: list[str],
    top_k: int,
    query_vector: list[float] | None = None,
    vectors: list[list[float] | None] | None = None,
    min_similarity: float = MIN_SIMILARITY,
) -> list[tuple[int, float]]:
    """(index, score) of the top_k summaries: BM25 over the query's words, and, with vectors, cosine
    similarity at least `min_similarity`, fused by reciprocal rank. One sharing no word with the query
    and not similar enough is not returned (an unrelated memory would only mislead a step)."""
    lists = [_bm25(query, summaries)]
    if query_vector is not None and vectors is not None:
        q = query_vector
        sims = [
            (i, sum(a * b for a, b in zip(q, v, strict=True)))
            for i, v in enumerate(vectors)
            if v is not None and len(v) == len(q)
        ]
        lists.append(sorted(((i, c) for i, c in sims if c >= min_similarity), key=lambda p: (-p[1], p[0])))
    fused: dict[int, float] = {}
    for ranked in lists:
        for position, (i, _) in enumerate(ranked):
            fused[i] = fused.get(i, 0.0) + 1.0 / (_RRF_K + position + 1)
    return sorted(((i, round(s, 6)) for i, s in fused.items()), key=lambda p: (-p[1], p[0]))[:top_k]


def _bm25(query: str, summaries: list[str]) -> list[tuple[int, float]]:
    terms = set(words(query))
    if not terms or not summaries:
        return []
    docs = [Counter(words(s)) for s in summaries]
    avg = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    df = Counter(t for d in docs for t in terms if t in d)
    n = len(docs)
    scored = []
    for i, d in enumerate(docs):
        length = sum(d.values())
        score = 0.0
        for t in terms:
            tf = d.get(t, 0)
            if tf:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / avg))
        if score > 0:
            scored.append((i, score))
    scored.sort(key=lambda p: (-p[1], p[0]))
    return scored


class MemoryRecords:
    """The workflow_memories table: written when a run with memory succeeds, read only by its key."""

    db: Database

    def remember(
        self,
        key_id: str,
        workflow: str,
        run_id: str,
        summary: str,
        vector: tuple[str, list[float]] | None = None,
    ) -> str:
        """Store a memory (with the embedder's name and vector, when there is one); the oldest past
        KEEP of this key and workflow go."""
        memory_id = "wfm_" + uuid.uuid4().hex[:20]
        embedder, embedding = vector if vector is not None else (None, None)

        def work(cur: Any) -> None:
            cur.execute(
                """INSERT INTO workflow_memories (id, key_id, workflow, run_id, summary, embedder, embedding)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [memory_id, key_id, workflow, run_id, summary, embedder, embedding],
            )
            cur.execute(
                """DELETE FROM workflow_memories WHERE id IN (
                     SELECT id FROM workflow_memories WHERE key_id = ? AND workflow = ?
                     ORDER BY created_at DESC, id OFFSET ?)""",
                [key_id, workflow, KEEP],
            )

        self.db.run_in_transaction(work)
        return memory_id

    def memories(
        self, key_id: str | None, workflow: str | None = None, limit: int = 1000
    ) -> list[WorkflowMemory]:
        """A key's memories (every key's when key_id is None: the admin's listing), newest first."""
        where, params = _selection(key_id, workflow)
        sql = "SELECT id, key_id, workflow, run_id, summary, created_at FROM workflow_memories" + where
        rows = self.db.fetchall(sql + " ORDER BY created_at DESC, id LIMIT ?", [*params, limit])
        return [
            WorkflowMemory(
                id=r[0], key_id=r[1], workflow=r[2], run_id=r[3], summary=r[4], created_at=r[5].isoformat()
            )
            for r in rows
        ]

    def recall(
        self,
        key_id: str,
        workflow: str,
        query: str,
        top_k: int,
        query_vector: tuple[str, list[float]] | None = None,
        min_similarity: float = MIN_SIMILARITY,
    ) -> list[WorkflowMemory]:
        """The key's top_k memories of this workflow most relevant to `query`; never another key's.
        Only vectors of the query's embedder are compared (a memory embedded by another counts by
        its words alone)."""
        rows = self.db.fetchall(
            """SELECT id, key_id, workflow, run_id, summary, created_at,
                      CASE WHEN embedder = ? THEN embedding END
               FROM workflow_memories WHERE key_id = ? AND workflow = ?
               ORDER BY created_at DESC, id LIMIT ?""",
            [query_vector[0] if query_vector else None, key_id, workflow, KEEP],
        )
        ranked = rank(
            query,
            [r[4] for r in rows],
            top_k,
            query_vector[1] if query_vector else None,
            [list(r[6]) if r[6] is not None else None for r in rows],
            min_similarity,
        )
        return [
            WorkflowMemory(
                id=r[0],
                key_id=r[1],
                workflow=r[2],
                run_id=r[3],
                summary=r[4],
                created_at=r[5].isoformat(),
                score=score,
            )
            for i, score in ranked
            for r in (rows[i],)
        ]

    def forget(self, key_id: str | None, workflow: str | None = None) -> int:
        """Delete a key's memories (of one workflow, or all); key_id None: every key's."""
        where, params = _selection(key_id, workflow)
        sql = "DELETE FROM workflow_memories" + where
        return len(
            self.db.run_in_transaction(lambda cur: cur.execute(sql + " RETURNING id", params).fetchall())
        )


def _selection(key_id: str | None, workflow: str | None) -> tuple[str, list[str]]:
    """The WHERE clause (with its leading space, or empty) and parameters picking a key's and a
    workflow's memories; None for either leaves it open."""
    clauses = [(c, v) for c, v in (("key_id = ?", key_id), ("workflow = ?", workflow)) if v is not None]
    where = (" WHERE " + " AND ".join(c for c, _ in clauses)) if clauses else ""
    return where, [v for _, v in clauses]
