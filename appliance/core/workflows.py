"""Workflows: documents applied as immutable versions, runs as `workflow` jobs (leased, resumed after a
crash), approvals answered once; each run reaches knowledge, answers and models only as its key may."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.config import Settings
from appliance.core.access import Access, Scope
from appliance.core.answers import Answers
from appliance.core.gateway import Gateway
from appliance.core.jobs import Jobs
from appliance.core.knowledge import Knowledge
from appliance.db.connection import Database
from appliance.db.jobs import JobStore
from appliance.db.keys import Principal
from appliance.db.migrations import appliance_tables
from appliance.errors import Conflict, Forbidden, InvalidInput, NotFound
from appliance.models.embedder import Embedder
from appliance.observability.audit import AuditLog
from appliance.observability.metrics import Metrics
from appliance.observability.workflow_metrics import WorkflowMetrics
from appliance.offline import allow_listed
from appliance.workflow_records import Approval, MemoryDeleted, WorkflowDocument, WorkflowMemory, WorkflowRun
from appliance.workflows.breaker import Breakers
from appliance.workflows.calls import Caller
from appliance.workflows.documents import Doc, DocumentError, check_schema, parse
from appliance.workflows.engine import Engine
from appliance.workflows.http import check_template
from appliance.workflows.library import Library
from appliance.workflows.llm import RuntimeLLM
from appliance.workflows.sql import CollectionScope, QueryRefused
from appliance.workflows.sql import execute as execute_query
from appliance.workflows.sql import inspect as inspect_query
from appliance.workflows.store import ACTIVE_RUN_STATES, WorkflowStore

log = logging.getLogger(__name__)


class _RunServices:
    """What one run may reach, as its key: search and answers limited to the key's collections
    (a collection the key cannot read is left out, as if it did not exist)."""

    def __init__(
        self,
        scope: Scope,
        knowledge: Knowledge,
        answers: Answers,
        store: WorkflowStore,
        audit: AuditLog | None = None,
        settings: Settings | None = None,
        db: Database | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.embedder = embedder
        self.scope = scope
        self.knowledge = knowledge
        self.answers = answers
        self.store = store
        self.audit = audit
        self.settings = settings
        self.db = db

    def _names(self, collections: list[str] | None) -> list[str] | None:
        visible = self.scope.visible()
        if collections is None or visible is None:
            return collections
        return [c for c in collections if c in visible]

    def search(self, query: str, collections: list[str] | None, top_k: int) -> list[dict]:
        names = self._names(collections)
        if names == []:
            return []
        result = self.knowledge.search(self.scope, query, names, top_k=top_k)
        return [
            {
                "chunk_id": h.chunk_id,
                "document_id": h.document_id,
                "title": h.title,
                "text": h.text,
                "collection": h.collection,
                "score": h.score,
            }
            for h in result.hits
        ]

    def answer(self, question: str, collections: list[str] | None, top_k: int | None) -> dict:
        names = self._names(collections)
        if names == []:
            return {"answer": "", "citations": [], "refused": True}
        done = self.answers.answer(self.scope, question, names, top_k)
        return {
            "answer": done.answer,
            "citations": [
                {
                    "n": c.n,
                    "chunk_id": c.chunk_id,
                    "document_id": c.document_id,
                    "title": c.title,
                    "snippet": c.snippet,
                }
                for c in done.citations
            ],
            "refused": not done.citations,
            "tokens": done.usage.prompt_tokens + done.usage.completion_tokens,
        }

    def record_effect(self, invocation_id: str, run_id: str, step: str, value: Any) -> bool:
        return self.store.record_effect(invocation_id, run_id, step, value)

    def chunks(self, chunk_ids: list[int], collections: list[str] | None) -> dict[int, dict]:
        visible = self.scope.visible()
        names = self.knowledge.catalog.all_collection_names() if collections is None else collections
        names = [n for n in names if visible is None or n in visible]
        hits = self.knowledge.catalog.hydrate_chunks(chunk_ids, names) if names else {}
        return {
            i: {"text": h.text, "document_id": h.document_id, "collection": h.collection}
            for i, h in hits.items()
        }

    def reachable(self, host: str) -> bool:
        allow = self.settings.network.allow if self.settings is not None else []
        return allow_listed(allow, host)

    def query(self, sql: str, args: dict, max_rows: int, stop: threading.Event | None = None) -> dict:
        views = self.settings.workflows.sql_views if self.settings is not None else {}
        if not views or self.db is None:
            raise QueryRefused("no views are exposed to sql tools (settings workflows.sql_views)")
        # The views are the admin's; a run of a key limited to collections sees through them only
        # those collections' documents and chunks, and none of the appliance's other tables.
        visible = self.scope.visible()
        scope = None if visible is None else CollectionScope(tuple(visible), appliance_tables())
        with self.db.own_cursor() as cursor:
            return execute_query(cursor, views, sql, args, max_rows, stop, scope=scope)

    def sandbox_refused(
        self, run_id: str, step: str, tool: str, kind: str, message: str, blocked: list[str]
    ) -> None:
        log.warning("a sandboxed tool was stopped", extra={"run_id": run_id, "tool": tool, "kind": kind})
        if self.audit is not None:
            self.audit.append(
                "workflow.sandbox",
                outcome="denied",
                principal=self.scope.principal,
                target=tool,
                detail={"run_id": run_id, "step": step, "kind": kind, "reason": message, "blocked": blocked},
            )

    def embed(self, text: str, document: bool = False) -> tuple[str, list[float]] | None:
        if self.embedder is None or not text.strip():
            return None
        # An asymmetric embedder (a query prefix, a passage prefix) needs to know which side it embeds.
        vector = self.embedder.embed_documents([text])[0] if document else self.embedder.embed_query(text)
        return self.embedder.name, [float(x) for x in vector]

    def documents(self, collection: str, since: str | None, limit: int) -> list[dict]:
        if self._names([collection]) == []:
            return []
        try:
            self.scope.collections([collection])  # exists, and the key may read it
        except NotFound:
            return []
        catalog = self.knowledge.catalog
        return [
            {
                "document_id": d.id,
                "title": d.title,
                "source_id": d.source_id,
                "created_at": d.created_at or "",
                "text": "\n\n".join(c.text for c in catalog.chunks_of(d.id)),
            }
            for d in catalog.newest_documents(collection, since, limit)
        ]


class Workflows:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        jobs: Jobs,
        job_store: JobStore,
        access: Access,
        knowledge: Knowledge,
        answers: Answers,
        gateway: Gateway,
        metrics: Metrics,
        instance: str,
        stop: threading.Event,
        audit: AuditLog | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.embedder = embedder  # for long-term memory's recall; None: by words alone
        self.settings = settings
        self.audit = audit
        self.db = db
        self.store = WorkflowStore(db)
        self.library = Library(self.store)
        self.jobs = jobs
        self.job_store = job_store
        self.access = access
        self.knowledge = knowledge
        self.answers = answers
        self.gateway = gateway
        self.metrics = WorkflowMetrics(metrics.registry)
        self.instance = instance
        self.stop = stop
        self.breakers = Breakers()
        self.metrics.watch_breakers(self.breakers.all_states)
        self.engine = Engine(
            Caller(None, self.breakers, on_retry=lambda t: self.metrics.tool_retries.labels(t).inc())
        )
        self._running: dict[str, threading.Event] = {}
        self._pruned_at = 0.0
        self._lock = threading.Lock()

    # -- documents -----------------------------------------------------------------------------
    def apply(self, scope: Scope, docs: list[Doc]) -> list[dict]:
        scope.require_admin()
        if not docs:
            raise InvalidInput("no documents to apply")
        return self.library.apply(docs, scope.key_id, self._within_settings)

    def _within_settings(self, docs: list[Doc]) -> None:
        """An http tool's host and an sql tool's views, against the settings of now: a tool that could
        only fail is refused when applied (each call checks again, as the settings may change)."""
        for doc in docs:
            kind = doc.body.get("type") if doc.kind == "Tool" else None
            if kind == "http":
                host = check_template(doc.body["http"]["url"])
                if not allow_listed(self.settings.network.allow, host):
                    raise DocumentError(
                        "http.url", f"host {host!r} is not loopback nor in settings network.allow", doc.source
                    )
            elif kind == "sql":
                views = self.settings.workflows.sql_views
                missing = [t for t in inspect_query(doc.body["sql"]["query"])[1] if t not in views]
                if missing:
                    raise DocumentError(
                        "sql.query",
                        f"{', '.join(missing)}: not among the views the admin exposes (settings "
                        f"workflows.sql_views: {', '.join(sorted(views)) or 'none'})",
                        doc.source,
                    )

    def apply_text(self, scope: Scope, text: bytes | str, source: str = "body") -> list[dict]:
        scope.require_admin()
        return self.apply(scope, parse(text, source))

    def apply_json(self, scope: Scope, body: Any) -> list[dict]:
        """A JSON body: one document, a list of them, or {"files": {name: YAML text}}."""
        scope.require_admin()
        if isinstance(body, dict) and set(body) == {"files"} and isinstance(body["files"], dict):
            docs = []
            for name, text in body["files"].items():
                if not isinstance(text, str):
                    raise InvalidInput(f"files.{name}: give the file's text")
                docs.extend(parse(text, name))
            return self.apply(scope, docs)
        items = body if isinstance(body, list) else [body]
        return self.apply(
            scope,
            [
                check_schema(b, f"body[{i}]" if isinstance(body, list) else "body")
                for i, b in enumerate(items)
            ],
        )

    def list_documents(self, scope: Scope, kind: str | None = "Workflow") -> list[WorkflowDocument]:
        return self.store.documents(kind)

    def get_workflow(self, scope: Scope, name: str) -> list[WorkflowDocument]:
        """Every stored version of a workflow, newest first, with its body."""
        found = self.store.documents("Workflow", name)
        if not found:
            raise NotFound(f"workflow {name!r} does not exist")
        return found

    # -- runs ----------------------------------------------------------------------------------
    def start(self, scope: Scope, name: str, inputs: dict) -> WorkflowRun:
        if not isinstance(inputs, dict):
            raise InvalidInput("input must be a JSON object", param="input")
        bundle = self.library.pin(name, scope.key_id, scope.principal.role)
        schema = bundle["workflow"].get("inputs")
        if schema:
            from jsonschema import Draft202012Validator

            err = next(iter(Draft202012Validator(schema).iter_errors(inputs)), None)
            if err is not None:
                where = ".".join(str(p) for p in err.absolute_path)
                raise InvalidInput(f"input{'.' + where if where else ''}: {err.message}", param="input")
        version = bundle["pins"][f"Workflow/{name}"]
        run_id = self.store.create_run(name, version, scope.key_id, inputs, bundle, {})
        self._submit(run_id)
        return self.get_run(scope, run_id)

    def _submit(self, run_id: str) -> None:
        job = self.jobs.submit("workflow", None, {"run_id": run_id})
        self.store.set_job(run_id, job.id)

    def _row(self, scope: Scope, run_id: str) -> dict:
        try:
            row = self.store.run_row(run_id)
        except NotFound:
            raise NotFound(f"run {run_id!r} does not exist") from None
        if not scope.is_admin and row["key_id"] != scope.key_id:
            raise NotFound(f"run {run_id!r} does not exist")
        return row

    def get_run(self, scope: Scope, run_id: str) -> WorkflowRun:
        row = self._row(scope, run_id)
        return self.store.present(row, self.store.step_records(run_id))

    def list_runs(self, scope: Scope, state: str | None = None, limit: int = 50) -> list[WorkflowRun]:
        return self.store.runs(None if scope.is_admin else scope.key_id, limit, state)

    def cancel(self, scope: Scope, run_id: str) -> WorkflowRun:
        row = self._row(scope, run_id)
        if not self.store.finish_run(run_id, "cancelled", None, "cancelled", bool(row["degraded"]), {}):
            raise Conflict(f"run {run_id!r} has ended ({row['state']})")
        self.store.close_approvals(run_id)
        with self._lock:
            event = self._running.get(run_id)
        if event is not None:
            event.set()
        if row["job_id"] and self.job_store.state(row["job_id"]) in ("queued", "running"):
            self.job_store.cancel(row["job_id"])
        self.metrics.runs.labels(row["workflow"], row["version"], "cancelled").inc()
        return self.get_run(scope, run_id)

    def wait(self, scope: Scope, run_id: str, timeout: float) -> WorkflowRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._row(scope, run_id)["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        return self.get_run(scope, run_id)

    # -- the `workflow` job kind -------------------------------------------------------------------
    def run_job(self, job_id: str) -> None:
        lease = self.settings.jobs.lease_seconds
        token = self.job_store.claim(job_id, self.instance, lease)
        if token is None:
            return
        job = self.job_store.get(job_id)
        run_id = ((job.summary or {}).get("options") or {}).get("run_id")
        try:
            row = self.store.run_row(run_id)
        except NotFound:
            self.job_store.finish(job_id, "failed", f"run {run_id!r} does not exist", token=token)
            return
        stop = threading.Event()
        with self._lock:
            self._running[run_id] = stop
        if self.stop.is_set():
            stop.set()
        renewed = [time.monotonic()]

        def keep_going() -> bool:
            # The lease is renewed at most every third of its length: a write per step would cost more.
            if self.stop.is_set():
                stop.set()  # the appliance is closing: a sleeping tool wakes too
            if time.monotonic() - renewed[0] < lease / 3:
                return not stop.is_set()
            renewed[0] = time.monotonic()
            return self.job_store.renew(job_id, token, lease) and not stop.is_set()

        started = time.monotonic()
        tokens_before = (self.store.latest_usage(run_id) or {}).get("tokens", 0)
        try:
            scope = self._scope_of(row["key_id"])
            services = _RunServices(
                scope,
                self.knowledge,
                self.answers,
                self.store,
                self.audit,
                self.settings,
                self.db,
                self.embedder,
            )
            llm = RuntimeLLM(
                lambda model: self.gateway.runtime_for("default" if model == "auto" else model),
                generate=lambda runtime, prompt, params: self.gateway.generate(
                    scope, runtime, prompt, params, "workflow"
                ),
            )
            outcome = self.engine.resume(
                self.store,
                run_id,
                stop,
                services,
                llm,
                keep_going,
                on_step=lambda kind, result, s: self.metrics.step_duration.labels(kind, result).observe(s),
            )
        except Exception as exc:
            log.exception("workflow run failed", extra={"run_id": run_id, "job_id": job_id})
            self.store.finish_run(run_id, "failed", None, f"{type(exc).__name__}: {exc}", False, {})
            self.job_store.finish(job_id, "failed", str(exc), token=token)
            return
        finally:
            with self._lock:
                self._running.pop(run_id, None)
        spent = (self.store.latest_usage(run_id) or {}).get("tokens", 0) - tokens_before
        if spent > 0:
            self.metrics.tokens.labels(row["workflow"]).inc(spent)
        if outcome.state == "interrupted":
            return  # stays running: resumed at the next start (or it was cancelled)
        summary = {
            "options": {"run_id": run_id},
            "state": outcome.state,
            "approvals": list(outcome.approvals),
        }
        self.metrics.runs.labels(row["workflow"], row["version"], outcome.state).inc()
        if outcome.state != "waiting":
            self.metrics.run_duration.labels(row["workflow"], outcome.state).observe(
                time.monotonic() - started
            )
        state = "failed" if outcome.state == "failed" else "succeeded"
        self.job_store.finish(
            job_id, state, outcome.error if state == "failed" else None, summary, token=token
        )

    def _scope_of(self, key_id: str) -> Scope:
        """The run's key as it is now: a revoked key's runs stop; narrowed collections apply at once."""
        info = self.access.keys.info(key_id) if key_id != "system" else None
        if info is None:
            return self.access.system_scope()
        if info.revoked_at is not None:
            raise Forbidden(f"the run's key {key_id} was revoked")
        principal = Principal(
            info.id, info.name, info.role, tuple(info.collections) if info.collections else None
        )
        return self.access.scope(principal)

    # -- long-term memory ------------------------------------------------------------------------
    def _memory_key(self, scope: Scope, key_id: str | None) -> str:
        """Whose memories: the calling key's; an admin may name another key."""
        if key_id is None or key_id == scope.key_id:
            return scope.key_id
        if not scope.is_admin:
            raise Forbidden("only an admin key may see or delete another key's memories")
        return key_id

    def list_memories(
        self, scope: Scope, workflow: str | None = None, key_id: str | None = None, limit: int = 100
    ) -> list[WorkflowMemory]:
        return self.store.memories(self._memory_key(scope, key_id), workflow, limit)

    def delete_memories(
        self, scope: Scope, workflow: str | None = None, key_id: str | None = None, everything: bool = False
    ) -> MemoryDeleted:
        """Delete one workflow's memories of a key, or (`everything`) all of that key's: one of the two
        must be said, so a bare delete never wipes a key's memory by accident."""
        if workflow is None and not everything:
            raise InvalidInput(
                "name a workflow, or say all to delete every memory of the key", param="workflow"
            )
        key = self._memory_key(scope, key_id)
        deleted = self.store.forget(key, workflow)
        if self.audit is not None:
            self.audit.append(
                "workflow.memory.delete",
                principal=scope.principal,
                target=key,
                detail={"workflow": workflow, "deleted": deleted},
            )
        return MemoryDeleted(deleted=deleted, key_id=key, workflow=workflow)

    # -- approvals -----------------------------------------------------------------------------
    def _approval_row(self, scope: Scope, approval_id: str) -> dict:
        try:
            row = self.store.approval_row(approval_id)
        except NotFound:
            raise NotFound(f"approval {approval_id!r} does not exist") from None
        approvers = json.loads(row["approvers"])
        if not (scope.is_admin or row["key_id"] == scope.key_id or scope.key_id in approvers):
            raise NotFound(f"approval {approval_id!r} does not exist")
        return row

    def list_approvals(self, scope: Scope, state: str | None = "pending", limit: int = 100) -> list[Approval]:
        self.tick()
        return self.store.approvals(None if scope.is_admin else scope.key_id, state, limit)

    def get_approval(self, scope: Scope, approval_id: str) -> Approval:
        return self.store.present_approval(self._approval_row(scope, approval_id))

    def answer(self, scope: Scope, approval_id: str, answer: Any) -> Approval:
        row = self._approval_row(scope, approval_id)
        approvers = json.loads(row["approvers"])
        allowed = (
            ("owner" in approvers and row["key_id"] == scope.key_id)
            or ("admin" in approvers and scope.is_admin)
            or scope.key_id in approvers
        )
        if not allowed:
            raise Forbidden(f"approval {approval_id} is for {', '.join(approvers)}")
        schema = json.loads(row["schema"]) if row["schema"] else None
        if schema:
            from jsonschema import Draft202012Validator

            err = next(iter(Draft202012Validator(schema).iter_errors(answer)), None)
            if err is not None:
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
                raise InvalidInput(f"answer{where}: {err.message}", param="answer")
        self.store.answer_approval(approval_id, answer, scope.key_id)
        self.metrics.approval_wait.observe((datetime.now(UTC) - row["created_at"]).total_seconds())
        self._wake(row["run_id"])
        return self.store.present_approval(self.store.approval_row(approval_id))

    def _wake(self, run_id: str) -> None:
        """A waiting run whose approvals are all decided goes on, as a new job."""
        row = self.store.run_row(run_id)
        if row["state"] != "waiting":
            return
        pending = [a for a in self.store.approvals(None, "pending", 1000) if a.run_id == run_id]
        if pending:
            return
        if self.store.set_state(run_id, "queued", ("waiting",)):
            self._submit(run_id)

    def tick(self) -> None:
        """Expire approvals past their time and wake their runs; resubmit waiting runs whose
        answers arrived just before a crash. Runs on the scheduler's tick and on listings."""
        for row in self.store.due_approvals():
            if self.store.expire_approval(row["id"]):
                self._wake(row["run_id"])
        for row in self.store.active_runs():
            if row["state"] == "waiting":
                self._wake(row["id"])
        days = self.settings.workflows.retention_days
        if days > 0 and time.monotonic() - self._pruned_at > 3600:
            self._pruned_at = time.monotonic()
            pruned = self.store.prune(datetime.now(UTC) - timedelta(days=days))
            if pruned:
                log.info("pruned workflow runs past their retention", extra={"runs": pruned})

    def close(self) -> None:
        with self._lock:
            for event in self._running.values():
                event.set()


__all__ = ["Workflows", "ACTIVE_RUN_STATES"]
