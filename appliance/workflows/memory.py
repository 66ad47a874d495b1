"""Long-term memory of a workflow, per API key: a deterministic summary of each succeeded run, and
the most relevant ones (keyword overlap with the new run's inputs) put in a later run's state."""

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
_WORD = re.compile(r"[^\W_]{2,}", re.UNICODE)


def config(workflow: dict) -> dict | None:
    """The workflow's memory settings when enabled, else None (memory is off unless declared)."""
    spec = workflow.get("memory") or {}
    if not spec.get("enabled"):
        return None
    return {"top_k": int(spec.get("top_k", 3))}


def summarize(inputs: Any, outputs: Any) -> str:
    """Inputs and outputs as compact JSON, bounded; no model: the same run gives the same summary."""
    text = "inputs: " + _compact(inputs) + "\noutputs: " + _compact(outputs)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def rank(query: str, summaries: list[str], top_k: int) -> list[tuple[int, float]]:
    """(index, score) of the top_k summaries by BM25 over the query's words; those sharing no word
    with the query are not returned (an unrelated memory would only mislead a step)."""
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
            scored.append((i, round(score, 4)))
    scored.sort(key=lambda p: (-p[1], p[0]))
    return scored[:top_k]


class MemoryRecords:
    """The workflow_memories table: written when a run with memory succeeds, read only by its key."""

    db: Database

    def remember(self, key_id: str, workflow: str, run_id: str, summary: str) -> str:
        memory_id = "wfm_" + uuid.uuid4().hex[:20]

        def work(cur: Any) -> None:
            cur.execute(
                "INSERT INTO workflow_memories (id, key_id, workflow, run_id, summary) VALUES (?, ?, ?, ?, ?)",
                [memory_id, key_id, workflow, run_id, summary],
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
        where, params = [], []
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        sql = "SELECT id, key_id, workflow, run_id, summary, created_at FROM workflow_memories"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.db.fetchall(sql + " ORDER BY created_at DESC, id LIMIT ?", [*params, limit])
        return [
            WorkflowMemory(
                id=r[0], key_id=r[1], workflow=r[2], run_id=r[3], summary=r[4], created_at=r[5].isoformat()
            )
            for r in rows
        ]

    def recall(self, key_id: str, workflow: str, query: str, top_k: int) -> list[WorkflowMemory]:
        """The key's top_k memories of this workflow most relevant to `query`; never another key's."""
        found = self.memories(key_id, workflow, KEEP)
        return [
            WorkflowMemory(
                id=m.id,
                key_id=m.key_id,
                workflow=m.workflow,
                run_id=m.run_id,
                summary=m.summary,
                created_at=m.created_at,
                score=score,
            )
            for i, score in rank(query, [m.summary for m in found], top_k)
            for m in (found[i],)
        ]

    def forget(self, key_id: str | None, workflow: str | None = None) -> int:
        """Delete a key's memories (of one workflow, or all); key_id None: every key's."""
        where, params = [], []
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        sql = "DELETE FROM workflow_memories" + ((" WHERE " + " AND ".join(where)) if where else "")
        return len(
            self.db.run_in_transaction(lambda cur: cur.execute(sql + " RETURNING id", params).fetchall())
        )
