"""An engine over a real DuckDB in a temp dir, for tests of the engine itself (no appliance, no models)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.offline import allow_listed
from appliance.workflows.breaker import Breakers
from appliance.workflows.calls import Caller
from appliance.workflows.documents import parse
from appliance.workflows.engine import Engine, Outcome
from appliance.workflows.library import Library
from appliance.workflows.sql import QueryRefused, execute
from appliance.workflows.store import WorkflowStore


@dataclass
class MemoryServices:
    """RunServices over an in-memory corpus: {collection: [texts]}; what the key may read is `readable`."""

    store: WorkflowStore
    corpus: dict[str, list[str]] = field(default_factory=dict)
    readable: list[str] | None = None
    searched: list[list[str]] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)  # sandbox escapes, as the appliance audits them
    allow: list[str] = field(default_factory=list)  # settings network.allow, for http tools
    views: dict[str, str] = field(default_factory=dict)  # settings workflows.sql_views, for sql tools

    def _names(self, collections):
        names = list(self.corpus) if collections is None else list(collections)
        return [n for n in names if self.readable is None or n in self.readable]

    def search(self, query, collections, top_k):
        names = self._names(collections)
        self.searched.append(names)
        hits = []
        for name in names:
            for i, text in enumerate(self.corpus.get(name, [])):
                hits.append(
                    {
                        "chunk_id": i,
                        "document_id": f"{name}-{i}",
                        "title": name,
                        "text": text,
                        "collection": name,
                        "score": 1.0,
                    }
                )
        return hits[:top_k]

    def answer(self, question, collections, top_k):
        hits = self.search(question, collections, top_k or 5)
        return {
            "answer": " ".join(h["text"] for h in hits[:1]),
            "citations": [
                {"n": 1, "chunk_id": h["chunk_id"], "document_id": h["document_id"]} for h in hits[:1]
            ],
            "refused": not hits,
            "tokens": 7,
        }

    def record_effect(self, invocation_id, run_id, step, value):
        return self.store.record_effect(invocation_id, run_id, step, value)

    def chunks(self, chunk_ids, collections):
        found = {}
        for name in self._names(collections):
            for i, text in enumerate(self.corpus.get(name, [])):
                if i in chunk_ids:
                    found[i] = {"text": text, "document_id": f"{name}-{i}", "collection": name}
        return found

    def reachable(self, host):
        return allow_listed(self.allow, host)

    def query(self, sql, args, max_rows, stop=None):
        if not self.views:
            raise QueryRefused("no views are exposed to sql tools (settings workflows.sql_views)")
        with self.store.db.own_cursor() as cursor:
            return execute(cursor, self.views, sql, args, max_rows, stop)

    def sandbox_refused(self, run_id, step, tool, kind, message, blocked):
        self.refused.append({"run_id": run_id, "step": step, "tool": tool, "kind": kind, "blocked": blocked})

    def embed(self, text, document=False):
        return None  # no embedder here: memory ranks by words (tests/api covers the embedder)

    def documents(self, collection, since, limit):
        texts = self.corpus.get(collection, []) if self._names([collection]) else []
        return [
            {"document_id": f"{collection}-{i}", "title": f"{collection} {i}", "source_id": f"{i}.md",
             "created_at": "", "text": t}
            for i, t in enumerate(texts[:limit])
        ]  # fmt: skip


class Harness:
    def __init__(self, path: Path, llm: Any = None, key_id: str = "key_owner", role: str = "user") -> None:
        self.db = Database(path / "wf.duckdb")
        migrate(self.db)
        self.store = WorkflowStore(self.db)
        self.library = Library(self.store)
        self.breakers = Breakers()
        self.engine = Engine(Caller(llm, self.breakers))
        self.services = MemoryServices(self.store)
        self.key_id = key_id
        self.role = role
        self.steps_seen: list[tuple[str, str]] = []

    def apply(self, *texts: str) -> list[dict]:
        docs = [d for i, t in enumerate(texts) for d in parse(t, f"doc{i}.yaml")]
        return self.library.apply(docs, self.key_id)

    def start(self, name: str, inputs: dict | None = None) -> str:
        bundle = self.library.pin(name, self.key_id, self.role)
        return self.store.create_run(
            name, bundle["pins"][f"Workflow/{name}"], self.key_id, inputs or {}, bundle, {}
        )

    def resume(self, run_id: str, stop: threading.Event | None = None, keep_going=lambda: True) -> Outcome:
        return self.engine.resume(
            self.store,
            run_id,
            stop or threading.Event(),
            self.services,
            None,
            keep_going,
            on_step=lambda kind, outcome, s: self.steps_seen.append((kind, outcome)),
        )

    def run(self, name: str, inputs: dict | None = None) -> tuple[str, Outcome]:
        run_id = self.start(name, inputs)
        return run_id, self.resume(run_id)

    def steps(self, run_id: str) -> dict[str, dict]:
        return self.store.steps(run_id)

    def close(self) -> None:
        self.db.close()
