"""The API's requests, one builder per call: method, route, query, body; no I/O (both clients send them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx


@dataclass(frozen=True)
class Call:
    """One request of the API, as data. `route` is the OpenAPI path template and `path_params`
    fill it; `stream` marks server-sent events; `unwrap` picks the result out of the answer's JSON;
    `any_status` takes the body whatever the status (/readyz answers 503 while starting);
    `timeout` is seconds, None (answers that last as long as their work: a model's answer, a
    snapshot) or the client's default."""

    method: str
    route: str
    path_params: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    stream: bool = False
    unwrap: Callable[[Any], Any] | None = None
    any_status: bool = False
    timeout: Any = httpx.USE_CLIENT_DEFAULT

    @property
    def path(self) -> str:
        # Names and ids go in one path segment each, whatever characters they hold.
        return self.route.format(**{k: quote(str(v), safe="") for k, v in self.path_params.items()})

    def options(self) -> dict[str, Any]:
        """The keyword arguments of httpx's `request` and `stream` for this call."""
        return {
            "params": self.params,
            "json": self.json,
            "data": self.data,
            "files": self.files,
            "timeout": self.timeout,
        }

    def result(self, body: Any) -> Any:
        return self.unwrap(body) if self.unwrap else body


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _query(**params: Any) -> dict[str, Any]:
    """Query parameters without the unset ones (the server's defaults apply)."""
    return {k: v for k, v in params.items() if v is not None}


def _field(name: str) -> Callable[[dict], Any]:
    return lambda body: body[name]


# -- health and operations -----------------------------------------------------------------------
def ready() -> Call:
    """/readyz needs no key: an answer here with 401 elsewhere means the key is wrong."""
    return Call("GET", "/readyz", any_status=True)


def ops() -> Call:
    return Call("GET", "/api/v1/admin/ops")


def backup(name: str = "") -> Call:
    """The server writes the snapshot into its data directory (it alone has DuckDB open)."""
    return Call("POST", "/api/v1/admin/backup", json={"name": name} if name else {}, timeout=None)


def verify_chunks(collection: str | None = None, repair: bool = False) -> Call:
    return Call("POST", "/api/v1/admin/verify-chunks", json={"collection": collection, "repair": repair})


def stats() -> Call:
    return Call("GET", "/api/v1/admin/stats")


def logs(level: str | None = None, limit: int = 200, after: int = 0) -> Call:
    return Call("GET", "/api/v1/admin/logs", params=_query(limit=limit, after=after, level=level or None))


def models() -> Call:
    return Call("GET", "/api/v1/admin/models")


def load_model(name: str | None = None) -> Call:
    return Call("POST", "/api/v1/admin/models/load", json={"model": name})


def unload_model() -> Call:
    return Call("POST", "/api/v1/admin/models/unload")


def chat_models() -> Call:
    """The OpenAI model list, only the models that chat."""
    return Call(
        "GET",
        "/v1/models",
        unwrap=lambda body: [m for m in body["data"] if "chat" in m.get("capabilities", [])],
    )


# -- collections and documents -------------------------------------------------------------------
def collections() -> Call:
    return Call("GET", "/api/v1/collections")


def create_collection(name: str, description: str = "") -> Call:
    return Call("POST", "/api/v1/collections", json={"name": name, "description": description})


def documents(collection: str | None = None, limit: int = 100, offset: int = 0) -> Call:
    return Call(
        "GET", "/api/v1/documents", params=_query(limit=limit, offset=offset, collection=collection or None)
    )


def document(document_id: str, chunks: bool = False) -> Call:
    return Call(
        "GET",
        "/api/v1/documents/{document_id}",
        {"document_id": document_id},
        params={"chunks": _flag(chunks)},
    )


def delete_document(document_id: str) -> Call:
    return Call("DELETE", "/api/v1/documents/{document_id}", {"document_id": document_id})


def upload(collection: str, filename: str, content: bytes, source_id: str | None = None) -> Call:
    """A file as multipart, parsed by the server; the same `source_id` again replaces the document."""
    return Call(
        "POST",
        "/api/v1/documents",
        data={"collection": collection, "source_id": source_id or filename},
        files={"file": (filename, content)},
    )


def submit_batch(collection: str, documents: list[dict], wait: bool = False) -> Call:
    return Call(
        "POST",
        "/api/v1/documents/batch",
        params={"wait": _flag(wait)},
        json={"collection": collection, "documents": documents},
    )


# -- jobs ----------------------------------------------------------------------------------------
def jobs(state: str | None = None, limit: int = 50) -> Call:
    return Call("GET", "/api/v1/jobs", params=_query(limit=limit, job_state=state or None))


def job(job_id: str, items: bool = False) -> Call:
    return Call("GET", "/api/v1/jobs/{job_id}", {"job_id": job_id}, params={"items": _flag(items)})


def cancel_job(job_id: str) -> Call:
    return Call("POST", "/api/v1/jobs/{job_id}/cancel", {"job_id": job_id})


def retry_job(job_id: str) -> Call:
    return Call("POST", "/api/v1/jobs/{job_id}/retry", {"job_id": job_id})


# -- sources -------------------------------------------------------------------------------------
def sources() -> Call:
    return Call("GET", "/api/v1/sources", unwrap=_field("sources"))


def add_source(body: dict) -> Call:
    """`body`: name, kind, location, collection and the optional fields of `POST /api/v1/sources`."""
    return Call("POST", "/api/v1/sources", json=body)


def sync_source(name: str) -> Call:
    return Call("POST", "/api/v1/sources/{name}/sync", {"name": name})


def remove_source(name: str, delete_documents: bool = False) -> Call:
    return Call(
        "DELETE",
        "/api/v1/sources/{name}",
        {"name": name},
        params={"delete_documents": _flag(delete_documents)},
    )


def quarantine(collection: str | None = None, source: str | None = None, limit: int = 200) -> Call:
    return Call(
        "GET",
        "/api/v1/quarantine",
        params=_query(limit=limit, collection=collection or None, source=source or None),
        unwrap=_field("files"),
    )


# -- knowledge -----------------------------------------------------------------------------------
def search(
    query: str,
    collections: list[str] | None = None,
    top_k: int = 10,
    mode: str | None = None,
    cache: bool = True,
) -> Call:
    body: dict[str, Any] = {"query": query, "top_k": top_k}
    if not cache:
        body["cache"] = False
    if collections:
        body["collections"] = collections
    if mode:
        body["mode"] = mode
    return Call("POST", "/api/v1/knowledge/search", json=body)


def ask(
    question: str,
    collections: list[str] | None = None,
    top_k: int | None = None,
    model: str | None = None,
    cache: bool = True,
) -> Call:
    """A streamed cited answer: events `queue`?, `sources`, `token`..., then `answer` (or `error`)."""
    body: dict[str, Any] = {"query": question, "stream": True}
    if not cache:
        body["cache"] = False
    if collections:
        body["collections"] = collections
    if top_k:
        body["top_k"] = top_k
    if model:
        body["model"] = model
    return Call("POST", "/api/v1/knowledge/query", json=body, stream=True, timeout=None)


# -- conversations -------------------------------------------------------------------------------
def create_conversation(collections: list[str] | None = None, title: str = "") -> Call:
    return Call("POST", "/api/v1/conversations", json={"collections": collections, "title": title})


def conversations() -> Call:
    return Call("GET", "/api/v1/conversations")


def conversation(conversation_id: str) -> Call:
    return Call("GET", "/api/v1/conversations/{conversation_id}", {"conversation_id": conversation_id})


def send_message(conversation_id: str, content: str, model: str | None = None) -> Call:
    """The next turn, streamed like `ask`."""
    body: dict[str, Any] = {"content": content, "stream": True}
    if model:
        body["model"] = model
    return Call(
        "POST",
        "/api/v1/conversations/{conversation_id}/messages",
        {"conversation_id": conversation_id},
        json=body,
        stream=True,
        timeout=None,
    )


# -- keys and audit ------------------------------------------------------------------------------
def keys() -> Call:
    return Call("GET", "/api/v1/keys")


def create_key(
    name: str,
    role: str = "user",
    collections: list[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
) -> Call:
    return Call(
        "POST",
        "/api/v1/keys",
        json={"name": name, "role": role, "collections": collections, "rpm": rpm, "tpm": tpm},
    )


def revoke_key(key_id: str) -> Call:
    return Call("DELETE", "/api/v1/keys/{key_id}", {"key_id": key_id})


def audit(limit: int = 100) -> Call:
    return Call("GET", "/api/v1/audit", params={"limit": limit})


# -- answer traces, feedback and drift -----------------------------------------------------------
def answer_trace(answer_id: str) -> Call:
    return Call("GET", "/api/v1/answers/{answer_id}", {"answer_id": answer_id})


def rate_answer(
    answer_id: str,
    rating: str,
    comment: str | None = None,
    correct_answer: str | None = None,
    confirmed_sources: list[str] | None = None,
) -> Call:
    body: dict[str, Any] = {"rating": rating}
    for name, value in (
        ("comment", comment),
        ("correct_answer", correct_answer),
        ("confirmed_sources", confirmed_sources),
    ):
        if value:
            body[name] = value
    return Call("POST", "/api/v1/answers/{answer_id}/feedback", {"answer_id": answer_id}, json=body)


def feedback(
    collection: str | None = None, rating: str | None = None, limit: int = 50, offset: int = 0
) -> Call:
    return Call(
        "GET",
        "/api/v1/feedback",
        params=_query(limit=limit, offset=offset, collection=collection or None, rating=rating or None),
    )


def feedback_summary(days: int = 7) -> Call:
    """Ratings up and down and answers given per collection over the last `days` days."""
    return Call("GET", "/api/v1/feedback/summary", params=_query(days=days))


def drift(collection: str | None = None) -> Call:
    """The latest drift check of each collection (of `collection`)."""
    return Call("GET", "/api/v1/drift", params=_query(collection=collection or None))


def check_drift(
    collection: str, reference: dict[str, Any] | None = None, current: dict[str, Any] | None = None
) -> Call:
    """A drift check now; windows are {start, end} or (reference) {first_n, after}; None: the settings'."""
    body: dict[str, Any] = {"collection": collection}
    if reference:
        body["reference"] = reference
    if current:
        body["current"] = current
    return Call("POST", "/api/v1/drift/check", json=body, timeout=None)


# -- evaluation ----------------------------------------------------------------------------------
def eval_sets(all_versions: bool = False) -> Call:
    return Call("GET", "/api/v1/evals/sets", params={"all_versions": _flag(all_versions)})


def eval_set(name: str, version: int | None = None, items: bool = False) -> Call:
    return Call(
        "GET",
        "/api/v1/evals/sets/{name}",
        {"name": name},
        params=_query(version=version, items=_flag(items)),
    )


def import_eval_set(
    name: str,
    files: dict[str, str] | None = None,
    path: str | None = None,
    collection: str | None = None,
    description: str = "",
) -> Call:
    """`files`: the set's files' text by name (questions.jsonl, corpus.jsonl, queries.jsonl,
    qrels/test.tsv), read by the client; or `path`, a directory on the server."""
    body = {"name": name, "files": files, "path": path, "collection": collection, "description": description}
    return Call("POST", "/api/v1/evals/sets", json=body, timeout=None)


def generate_eval_set(
    collection: str,
    n: int = 50,
    name: str | None = None,
    seed: int = 0,
    model: str | None = None,
    unanswerable_fraction: float = 0.2,
) -> Call:
    body = {
        "collection": collection,
        "n": n,
        "name": name,
        "seed": seed,
        "model": model,
        "unanswerable_fraction": unanswerable_fraction,
    }
    return Call("POST", "/api/v1/evals/sets/generate", json=body)


def feedback_eval_set(collection: str, name: str | None = None) -> Call:
    return Call("POST", "/api/v1/evals/sets/from-feedback", json={"collection": collection, "name": name})


def start_eval_run(
    set_name: str,
    collection: str | None = None,
    mode: str | None = None,
    top_k: int = 100,
    limit: int | None = None,
    retrieval_only: bool = False,
    model: str | None = None,
    judge: str | None = None,
) -> Call:
    body = {
        "set": set_name,
        "collection": collection,
        "mode": mode,
        "top_k": top_k,
        "limit": limit,
        "retrieval_only": retrieval_only,
        "model": model,
        "judge": judge,
    }
    return Call("POST", "/api/v1/evals/runs", json=body)


def eval_runs(set_name: str | None = None, limit: int = 50) -> Call:
    return Call("GET", "/api/v1/evals/runs", params=_query(set=set_name, limit=limit))


def eval_run(run_id: str) -> Call:
    return Call("GET", "/api/v1/evals/runs/{run_id}", {"run_id": run_id})


def eval_run_items(
    run_id: str, order: str = "worst", metric: str | None = None, limit: int = 50, offset: int = 0
) -> Call:
    return Call(
        "GET",
        "/api/v1/evals/runs/{run_id}/items",
        {"run_id": run_id},
        params=_query(order=order, metric=metric, limit=limit, offset=offset),
    )


def compare_eval_runs(run_a: str, run_b: str) -> Call:
    return Call("GET", "/api/v1/evals/compare", params={"run_a": run_a, "run_b": run_b})


def eval_gates() -> Call:
    return Call("GET", "/api/v1/evals/gates")


def create_eval_gate(body: dict) -> Call:
    """`body`: name, set, thresholds [{metric, min?, max?, min_delta?, max_regression?}], and
    optionally baseline_run, run_options, description."""
    return Call("POST", "/api/v1/evals/gates", json=body)


def check_eval_gate(name: str, run_id: str | None = None) -> Call:
    return Call(
        "POST", "/api/v1/evals/gates/{name}/check", {"name": name}, json={"run_id": run_id}, timeout=None
    )


# -- model registry --------------------------------------------------------------------------------
def registry_models() -> Call:
    """Model families with their versions and aliases."""
    return Call("GET", "/api/v1/models")


def registry_model(name: str) -> Call:
    return Call("GET", "/api/v1/models/{name}", {"name": name})


def registry_history(name: str) -> Call:
    return Call("GET", "/api/v1/models/{name}/history", {"name": name})


def import_model(path: str, name: str | None = None) -> Call:
    """Register a GGUF file on the server (verified and probed: it lasts as long as the probe)."""
    body: dict[str, Any] = {"path": path}
    if name:
        body["name"] = name
    return Call("POST", "/api/v1/models/import", json=body, timeout=None)


def promote_model(name: str, version: int, alias: str, reason: str = "", run: str | None = None) -> Call:
    """Point `alias` at `version`; to staging/production through the family's eval gate (which may run)."""
    body: dict[str, Any] = {"version": version, "reason": reason}
    if run:
        body["run"] = run
    return Call(
        "POST",
        "/api/v1/models/{name}/aliases/{alias}",
        {"name": name, "alias": alias},
        json=body,
        timeout=None,
    )


def rollback_model(name: str, alias: str = "production", reason: str = "") -> Call:
    return Call(
        "POST", "/api/v1/models/{name}/rollback", {"name": name}, json={"alias": alias, "reason": reason}
    )


def set_model_gate(name: str, gate: str | None) -> Call:
    return Call("POST", "/api/v1/models/{name}/gate", {"name": name}, json={"gate": gate})


def tune_embedder(
    collection: str,
    budget_seconds: float = 1800,
    max_steps: int = 2000,
    batch_size: int = 32,
    questions: int = 0,
    threads: int = 1,
    seed: int = 0,
    name: str | None = None,
) -> Call:
    body = {
        "collection": collection,
        "budget_seconds": budget_seconds,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "questions": questions,
        "threads": threads,
        "seed": seed,
        "name": name,
    }
    return Call("POST", "/api/v1/tuning/embedder", json=body)
