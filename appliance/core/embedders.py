"""Embedders: each collection's embedding model, a registry reference, changed blue-green by the
`reembed` job kind: a new vector generation built beside the live one, gated on retrieval, switched
atomically, the old one kept until the switch is confirmed or rolled back."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from appliance.config import Settings
from appliance.core.access import Scope
from appliance.core.jobs import Jobs
from appliance.core.registry import Registry
from appliance.db.catalog import Catalog
from appliance.db.embedders import EmbedderStore
from appliance.db.evals import EvalStore
from appliance.db.jobs import JobStore
from appliance.errors import ApplianceError, Conflict, InvalidInput, NotReady
from appliance.evaluate.gates import (
    EMBEDDER_GATE_RULE,
    embedder_gate_verdict,
    mean_retrieval,
    paired_difference,
)
from appliance.evaluate.generate import collection_chunks
from appliance.evaluate.retrieval_metrics import document_ranking, retrieval_scores
from appliance.index.protocols import IndexedChunk, VectorIndex
from appliance.index.spaces import CollectionSpaces, remove_generation
from appliance.index.sync import IndexSync
from appliance.ingest.pipeline import embedding_text
from appliance.models.embedder import Embedder, SentenceTransformerEmbedder
from appliance.observability.audit import AuditLog
from appliance.records import Job
from appliance.registry_records import CollectionEmbedder, EmbedderGate, EmbedderGeneration

log = logging.getLogger(__name__)

JOB_KIND = "reembed"
GATE_DEPTH = 100  # vector candidates per gate query (nDCG@10, recall@10 and MRR read the top of them)
SERVER_EMBEDDER = "embedding"  # the reference of generation 0: the global embedding alias


class _Stopped(Exception):
    """The appliance is stopping, or the job was cancelled: it stops between batches."""


class Embedders:
    """Which embedder each collection's vectors come from. Ingestion asks `embedder_for` (the
    pipeline's CollectionEmbedding), search asks `route`; both read one map that a switch changes
    under one lock together with the vector index's, so a query is never embedded by one model and
    searched in another's space. Embedders other than the server's load lazily, from the local
    paths the registry verified, and stay resident."""

    def __init__(
        self,
        settings: Settings,
        store: EmbedderStore,
        registry: Registry,
        catalog: Catalog,
        sync: IndexSync,
        spaces: CollectionSpaces,
        server_embedder: Embedder,
        eval_store: EvalStore,
        jobs: Jobs,
        job_store: JobStore,
        audit: AuditLog,
        data_dir: Path,
        instance: str,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.catalog = catalog
        self.sync = sync
        self.spaces = spaces
        self.server_embedder = server_embedder
        self.eval_store = eval_store
        self.jobs = jobs
        self.job_store = job_store
        self.audit = audit
        self.tuning_root = Path(data_dir) / "tuning"
        self.instance = instance
        self.stop = stop
        self._lock = threading.Lock()
        self._routes = threading.Condition()  # searches holding a route, against a flip
        self._readers = 0
        self._flipping = False
        self._live: dict[str, EmbedderGeneration] = {r.collection: r.live for r in store.all()}
        self._models: dict[str, Embedder] = {}
        self._models_lock = threading.Lock()

    # -- what ingestion and search ask -----------------------------------------------------------
    def embedder_for(self, collection: str) -> tuple[int, Embedder]:
        with self._lock:
            live = self._live.get(collection)
        if live is None or live.generation == 0:
            return 0, self.server_embedder
        return live.generation, self.model(live)

    def space_of(self, collection: str) -> str:
        with self._lock:
            live = self._live.get(collection)
        return "" if live is None or live.generation == 0 else f"{live.resolved}#{live.path}"

    @contextmanager
    def route(self, collections: Sequence[str]) -> Iterator[list[tuple[Embedder, VectorIndex, list[str]]]]:
        """Collections grouped by (embedder, index), read at one instant of the map and held while
        the search uses them: a flip waits for these searches to end (and holds new ones back
        meanwhile), so none embeds by one model and searches an index the switch has emptied."""
        groups: dict[tuple[int, int], tuple[Embedder, VectorIndex, list[str]]] = {}
        with self._routes:
            self._routes.wait_for(lambda: not self._flipping)
            self._readers += 1
            placed = [(c, self._live.get(c)) for c in dict.fromkeys(collections)]
            indexes = {c: self.spaces.index_for(c) for c, _ in placed}
        try:
            for coll, live in placed:
                embedder = self.server_embedder if live is None or live.generation == 0 else self.model(live)
                index = indexes[coll]
                groups.setdefault((id(embedder), id(index)), (embedder, index, []))[2].append(coll)
            yield list(groups.values())
        finally:
            with self._routes:
                self._readers -= 1
                self._routes.notify_all()

    @contextmanager
    def _draining(self) -> Iterator[None]:
        """No search holds a route inside (those in flight end first; new ones wait)."""
        with self._routes:
            self._flipping = True
            self._routes.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._routes:
                self._flipping = False
                self._routes.notify_all()

    def model(self, generation: EmbedderGeneration) -> Embedder:
        """The embedder of a generation, loaded once (lazily) from its local folder."""
        if generation.generation == 0:
            return self.server_embedder
        with self._models_lock:
            embedder = self._models.get(generation.path)
            if embedder is None:
                # Through the registry once per process: weights whose hash changed refuse to load.
                path = Path(self.registry.resolve(generation.resolved, "embedding").path)
                emb = self.settings.embedding
                try:
                    embedder = SentenceTransformerEmbedder(
                        path,
                        device=emb.device,
                        batch_size=emb.batch_size,
                        threads=emb.threads or None,
                        name=generation.resolved,
                    )
                except InvalidInput as exc:
                    raise NotReady(f"the embedder {generation.resolved} cannot load: {exc.detail}") from None
                self._models[generation.path] = embedder
            return embedder

    # -- reading ---------------------------------------------------------------------------------
    def get(self, scope: Scope, collection: str) -> CollectionEmbedder:
        scope.require_admin()
        scope.collections([collection])  # NotFound when it does not exist
        return self.store.get(collection) or CollectionEmbedder(collection=collection, live=self._server())

    def _server(self) -> EmbedderGeneration:
        try:
            resolved = self.registry.resolve(SERVER_EMBEDDER, "embedding")
            name = f"{resolved.name}@{resolved.version}"
        except ApplianceError:  # no registry entry for it (a configured folder): its name
            name = self.server_embedder.name
        return EmbedderGeneration(
            generation=0,
            model=SERVER_EMBEDDER,
            resolved=name,
            path=str(getattr(self.server_embedder, "model_dir", "")),
            dimensions=self.server_embedder.dimensions,
        )

    def _current(self, collection: str) -> CollectionEmbedder:
        return self.store.get(collection) or CollectionEmbedder(collection=collection, live=self._server())

    # -- a switch ----------------------------------------------------------------------------------
    def switch(
        self, scope: Scope, collection: str, model: str, min_gain: float = 0.0, ungated: bool = False
    ) -> Job:
        """Queue the re-embedding of `collection` by `model` (a registry reference to an embedding
        model), switched to only when the gate passes (admin only)."""
        scope.require_admin()
        scope.collections([collection])
        if not isinstance(model, str) or not model.strip():
            raise InvalidInput("model is empty: give a registry reference (name, name@version or an alias)")
        if not -1.0 <= min_gain <= 1.0:
            raise InvalidInput("min_gain must be between -1 and 1", param="min_gain")
        resolved = self.registry.resolve(model.strip(), "embedding")  # NotFound, Conflict, NotReady
        if resolved.kind != "embedding":
            raise InvalidInput(
                f"{resolved.name}@{resolved.version} is a {resolved.kind} model, not an embedding model",
                param="model",
            )
        current = self._current(collection)
        if current.previous is not None:
            raise Conflict(
                f"collection {collection!r} has an unconfirmed switch: confirm it or roll it back first"
            )
        if current.live.resolved == f"{resolved.name}@{resolved.version}":
            raise Conflict(f"collection {collection!r} already embeds with {current.live.resolved}")
        for job_id in self.job_store.active_ids():
            job = self.job_store.get(job_id)
            if job.kind == JOB_KIND and job.collection == collection:
                raise Conflict(f"collection {collection!r} is already switching embedders (job {job_id})")
        options = {
            "collection": collection,
            "model": model.strip(),
            "resolved": f"{resolved.name}@{resolved.version}",
            "path": resolved.path,
            "min_gain": float(min_gain),
            "ungated": bool(ungated),
            "actor": f"{scope.principal.name} ({scope.principal.key_id})",
        }
        return self.jobs.submit(JOB_KIND, collection, options)

    def run_job(self, job_id: str) -> None:
        """Worker entry point of a `reembed` job; interrupted, it resumes with the vectors it staged."""
        token = self.job_store.claim(job_id, self.instance, self.settings.jobs.lease_seconds)
        if token is None:
            return
        summary = dict(self.job_store.get(job_id).summary or {})
        try:
            error = self._run(job_id, token, summary)
        except _Stopped:
            if self.stop.is_set():
                log.info("re-embedding paused; it resumes at the next start", extra={"job_id": job_id})
            elif "generation" in summary and self.job_store.get(job_id).state == "cancelled":
                # What it built goes (a lease lost to another worker is left to that one).
                coll = summary["options"]["collection"]
                self.store.unstage(coll, summary["generation"])
                remove_generation(self.spaces.root, coll, summary["generation"])
            return
        except Exception as exc:
            log.exception("re-embedding failed", extra={"job_id": job_id})
            detail = exc.detail if isinstance(exc, ApplianceError) else f"{type(exc).__name__}: {exc}"
            self.job_store.finish(job_id, "failed", detail, summary, token=token)
            return
        self.job_store.finish(job_id, "failed" if error else "succeeded", error, summary, token=token)

    def _run(self, job_id: str, token: str, summary: dict) -> str | None:
        options = summary["options"]
        coll = options["collection"]
        live = self._current(coll).live
        if summary.get("generation") == live.generation:  # switched just before a stop: done
            summary["phase"] = "switched"
            return None
        resolved = self.registry.resolve(options["resolved"], "embedding")  # weights checked again
        if "generation" not in summary:  # kept across a resume: the staged vectors are its
            used = self.store.generations(coll) | {live.generation}
            summary["generation"] = max(used) + 1
        new = EmbedderGeneration(
            generation=summary["generation"],
            model=options["model"],
            resolved=options["resolved"],
            path=resolved.path,
            dimensions=0,
        )
        embedder = self.model(new)
        new = EmbedderGeneration(**{**_fields(new), "dimensions": embedder.dimensions})
        summary.update(phase="embedding", live=live.resolved)
        self.job_store.set_summary(job_id, summary)
        ids = self.store.chunk_ids(coll)
        done = self.store.staged_ids(coll, new.generation) & ids
        self.job_store.set_progress(job_id, len(ids), len(done))
        for batch in self.store.chunks(coll):
            todo = [(cid, title, chunk) for cid, title, chunk in batch if cid not in done]
            if todo:
                self._stage(coll, new.generation, embedder, todo)
                done.update(cid for cid, _, _ in todo)
                self.job_store.set_progress(job_id, len(ids), len(done))
            self._check(job_id, token)
        summary["phase"] = "indexing"
        self.job_store.set_summary(job_id, summary)
        index = self.spaces.open_generation(coll, new.generation, new.dimensions)
        index.reset()
        for rows in self.store.staged(coll, new.generation):
            index.upsert([_indexed(coll, cid, v) for cid, v in rows])
        self._check(job_id, token)
        summary["phase"] = "gate"
        self.job_store.set_summary(job_id, summary)
        gate = self._gate(coll, live, (embedder, index), new, options)
        summary["gate"] = _fields(gate)
        if not gate.passed:
            index.close()
            self.store.unstage(coll, new.generation)
            remove_generation(self.spaces.root, coll, new.generation)
            summary["phase"] = "kept"
            self._audit("collection.embedder.gate_failed", options, coll, gate.reason)
            return f"gate failed: {gate.reason}; {coll!r} stays on {live.resolved}"
        self._switch(coll, live, new, index, embedder, gate, job_id)
        summary.update(phase="switched", switched_to=new.resolved)
        self._audit("collection.embedder.switched", options, coll, gate.reason)
        return None

    def _check(self, job_id: str, token: str) -> None:
        if self.stop.is_set() or not self.job_store.renew(job_id, token, self.settings.jobs.lease_seconds):
            raise _Stopped

    def _stage(self, coll: str, generation: int, embedder: Embedder, rows: list[tuple]) -> list:
        texts = [embedding_text(title, chunk) for _, title, chunk in rows]
        vectors = embedder.embed_documents(texts)
        staged = [(cid, vectors[i]) for i, (cid, _, _) in enumerate(rows)]
        self.store.stage(coll, generation, staged)
        return staged

    def _catch_up(self, coll: str, generation: int, embedder: Embedder, index: VectorIndex) -> None:
        """Chunks written or deleted since the generation was built: embedded and added, or dropped."""
        now, staged = self.store.chunk_ids(coll), self.store.staged_ids(coll, generation)
        gone = sorted(staged - now)
        self.store.unstage(coll, generation, gone)
        index.delete(gone)
        missing = sorted(now - staged)
        for batch in self.store.chunks(coll, missing) if missing else ():
            rows = self._stage(coll, generation, embedder, batch)
            index.upsert([_indexed(coll, cid, v) for cid, v in rows])

    def _switch(
        self,
        coll: str,
        live: EmbedderGeneration,
        new: EmbedderGeneration,
        index: VectorIndex,
        embedder: Embedder,
        gate: EmbedderGate,
        job_id: str,
    ) -> None:
        self._catch_up(coll, new.generation, embedder, index)  # most of it, while ingestion goes on
        record = CollectionEmbedder(
            collection=coll,
            live=new,
            previous=live,
            gate=gate,
            job_id=job_id,
            switched_at=_now(),
            confirmed=False,
        )
        # Nothing is indexed (the sync is paused) nor written to the catalogue (its write lock)
        # from here to the flip: the last chunks are embedded, the vectors swapped in DuckDB, the
        # index and the map changed together. Searches go on, on the old side until the flip.
        with self.sync.paused(), self.catalog.write_lock:
            self._catch_up(coll, new.generation, embedder, index)
            self.store.swap(record, into=new.generation, keep=live.generation)
            index.commit(self.spaces.shared.applied_seq() or 0)
            with self._draining():
                self._flip(coll, new, index)
                if live.generation == 0:
                    # Its vectors stay in DuckDB (generation 0, until confirmed); the graph leaves
                    # the shared index, whose count must stay DuckDB's.
                    self.spaces.shared.delete(sorted(self.store.chunk_ids(coll)))
        self.catalog.generations.bump([coll])
        log.info("collection switched embedder", extra={"collection": coll, "to": new.resolved})

    def _flip(self, coll: str, live: EmbedderGeneration, index: VectorIndex | None) -> None:
        """Called while draining: no search holds the collection's old index, which closes."""
        with self._lock:
            self._live[coll] = live
            old = self.spaces.attach(coll, index)
        if old is not None:
            old.close()

    # -- the gate ----------------------------------------------------------------------------------
    def _gate(
        self,
        coll: str,
        live: EmbedderGeneration,
        candidate: tuple[Embedder, VectorIndex],
        new: EmbedderGeneration,
        options: dict,
    ) -> EmbedderGate:
        queries, sources = self._gate_queries(coll, new)
        live_side = (self.model(live), self.spaces.index_for(coll))
        scores = {"live": [], "candidate": []}
        for question, relevance in queries:
            for side, (embedder, index) in (("live", live_side), ("candidate", candidate)):
                hits = index.search(embedder.embed_query(question), [coll], GATE_DEPTH)
                rows = self.catalog.hydrate_chunks([h.chunk_id for h in hits], [coll])
                ranked = document_ranking(rows[h.chunk_id] for h in hits if h.chunk_id in rows)
                scores[side].append(retrieval_scores([d.source_id for d in ranked], relevance))
        live_mean, new_mean = mean_retrieval(scores["live"]), mean_retrieval(scores["candidate"])
        passed, reason = embedder_gate_verdict(
            live_mean, new_mean, len(queries), options["min_gain"], options["ungated"]
        )
        difference, interval = paired_difference(
            [s.get("ndcg@10", 0.0) for s in scores["live"]],
            [s.get("ndcg@10", 0.0) for s in scores["candidate"]],
            self.settings.eval.bootstrap_resamples,
        )
        if interval is not None:
            reason += (
                f" (difference {difference:+.4f}, 95% interval [{interval[0]:+.4f}, {interval[1]:+.4f}])"
            )
        return EmbedderGate(
            passed=passed,
            rule=EMBEDDER_GATE_RULE,
            reason=reason,
            queries=len(queries),
            sources=sources,
            live=live_mean,
            candidate=new_mean,
            min_gain=options["min_gain"],
            ungated=options["ungated"],
            ndcg_difference=difference,
            interval=interval,
        )

    def _gate_queries(self, coll: str, new: EmbedderGeneration) -> tuple[list[tuple[str, dict]], list[str]]:
        """The collection's eval questions with gold sources, and the held-out queries of the tuning
        job that made `new` when it was tuned on this collection (training never saw them)."""
        queries: list[tuple[str, dict]] = []
        sources: list[str] = []
        for evalset in self.eval_store.list_sets(False):
            if evalset.collection != coll:
                continue
            items = [
                (i.question, i.relevance or {g: 1 for g in i.gold})
                for i in self.eval_store.items(evalset.name, evalset.version)
                if i.kind != "unanswerable" and (i.relevance or i.gold)
            ]
            if items:
                queries.extend(items)
                sources.append(f"{evalset.name}@{evalset.version}")
        held_out = self._held_out(coll, new)
        if held_out:
            queries.extend(held_out[0])
            sources.append(held_out[1])
        return queries, sources

    def _held_out(self, coll: str, new: EmbedderGeneration) -> tuple[list[tuple[str, dict]], str] | None:
        name, _, version = new.resolved.rpartition("@")
        try:
            lineage = (self.registry.registry.store.version(name, int(version)).probe or {}).get("lineage")
        except (ApplianceError, ValueError):
            return None
        if not lineage or lineage.get("collection") != coll:
            return None
        try:
            data = json.loads((self.tuning_root / lineage["job"] / "data.json").read_text())
        except (OSError, ValueError, KeyError):
            return None
        # Positives are indexes into the texts the job saw; today's chunks map a text to its source.
        source_of = {c.text: c.source_id for c in collection_chunks(self.catalog, coll)}
        texts = data["texts"]
        pairs = [
            (p["q"], {source_of[texts[p["p"]]]: 1})
            for p in data["held_out"]
            if 0 <= p["p"] < len(texts) and texts[p["p"]] in source_of
        ]
        return (pairs, f"tuning held-out of job {lineage['job']}") if pairs else None

    # -- confirm and roll back -----------------------------------------------------------------------
    def confirm(self, scope: Scope, collection: str) -> CollectionEmbedder:
        """Keep the live generation: the previous one's vectors and files go."""
        current = self.get(scope, collection)
        if current.previous is None:
            raise Conflict(f"collection {collection!r} has no switch waiting for confirmation")
        old = current.previous
        record = CollectionEmbedder(**{**_fields(current), "previous": None, "confirmed": True})
        self.store.save(record)
        self.store.unstage(collection, old.generation)
        if old.generation:
            remove_generation(self.spaces.root, collection, old.generation)
        self.audit.append(
            "collection.embedder.confirmed",
            principal=scope.principal,
            target=collection,
            detail={"live": current.live.resolved, "dropped": old.resolved},
        )
        return record

    def rollback(self, scope: Scope, collection: str) -> CollectionEmbedder:
        """Back to the previous generation: its kept vectors return (chunks added since the switch
        are embedded by it now), its index is rebuilt from them, the map flips back."""
        current = self.get(scope, collection)
        old = current.previous
        if old is None:
            raise Conflict(f"collection {collection!r} has no earlier embedder to roll back to")
        embedder = self.model(old)
        record = CollectionEmbedder(collection=collection, live=old, switched_at=_now(), confirmed=True)
        with self.sync.paused(), self.catalog.write_lock:
            now, kept = self.store.chunk_ids(collection), self.store.staged_ids(collection, old.generation)
            missing = sorted(now - kept)
            for batch in self.store.chunks(collection, missing) if missing else ():
                self._stage(collection, old.generation, embedder, batch)
            self.store.swap(record, into=old.generation, keep=None)
            index = self.spaces.shared if old.generation == 0 else None
            if index is None:
                index = self.spaces.open_generation(collection, old.generation, old.dimensions)
                index.reset()
            for rows in self.store.live_vectors(collection):
                index.upsert([_indexed(collection, cid, v) for cid, v in rows])
            if old.generation:
                index.commit(self.spaces.shared.applied_seq() or 0)
            with self._draining():
                self._flip(collection, old, None if old.generation == 0 else index)
        remove_generation(self.spaces.root, collection, current.live.generation)
        self.catalog.generations.bump([collection])
        self.audit.append(
            "collection.embedder.rolled_back",
            principal=scope.principal,
            target=collection,
            detail={"from": current.live.resolved, "to": old.resolved},
        )
        return record

    def _audit(self, action: str, options: dict, coll: str, reason: str) -> None:
        self.audit.append(
            action,
            target=coll,
            detail={"model": options["resolved"], "actor": options.get("actor"), "reason": reason},
        )


def _indexed(collection: str, chunk_id: int, vector: np.ndarray) -> IndexedChunk:
    return IndexedChunk(chunk_id, collection, "", "", "", vector)


def _fields(record) -> dict:
    return {f: getattr(record, f) for f in record.__struct_fields__}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
