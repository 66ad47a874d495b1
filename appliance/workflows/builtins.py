"""The built-in tools: their schemas, side effects and implementations (echo, sleep, record, fail, and
the RAG tools search, find_similar, answer_with_citations, summarize_context, extract_insights,
extract_fields, check_citations and list_documents, which keep their citations and chunk ids)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class ToolFailure(Exception):
    """A tool call that failed (retried by the tool's policy when `retryable`)."""

    def __init__(self, message: str, retryable: bool = True, kind: str = "error") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.kind = kind  # error | timeout


class Interrupted(Exception):
    """The run is stopping (the appliance closes, or the run was cancelled): try again on resume."""


class RunServices(Protocol):
    """What a run may reach outside itself, already limited to the run's key and agent scopes."""

    def search(self, query: str, collections: list[str] | None, top_k: int) -> list[dict]: ...

    def answer(self, question: str, collections: list[str] | None, top_k: int | None) -> dict: ...

    def record_effect(self, invocation_id: str, run_id: str, step: str, value: Any) -> bool: ...

    def chunks(self, chunk_ids: list[int], collections: list[str] | None) -> dict[int, dict]:
        """The chunks among `chunk_ids` the run may read ({chunk_id: {text, document_id, collection}});
        one it may not read is left out, as if it did not exist."""
        ...

    def documents(self, collection: str, since: str | None, limit: int) -> list[dict]:
        """The newest documents of a collection (created at or after `since`), each with its text."""
        ...

    def reachable(self, host: str) -> bool:
        """Whether an http tool may call `host`: loopback, or an entry of settings network.allow."""
        ...

    def query(self, sql: str, args: dict, max_rows: int, stop: threading.Event | None = None) -> dict:
        """A sql tool's query over the views the admin exposes ({rows, columns, truncated}), read-only,
        interrupted once `stop` is set; QueryRefused (appliance.workflows.sql) when it reads anything
        else or is not one SELECT."""
        ...

    def sandbox_refused(
        self, run_id: str, step: str, tool: str, kind: str, message: str, blocked: list[str]
    ) -> None:
        """Audit a sandboxed call that tried to leave the sandbox or reached one of its limits."""
        ...

    def embed(self, text: str, document: bool = False) -> tuple[str, list[float]] | None:
        """The appliance's embedder's name and its L2-normalised vector of `text` (as a document to
        store, or as a query), for long-term memory; None when no embedder is at hand (memory then
        ranks by words alone)."""
        ...


@dataclass
class Invocation:
    """One call of a tool: who calls, under which idempotency key, and how to stop it."""

    run_id: str
    step: str
    invocation_id: str
    stop: threading.Event
    services: RunServices
    collections: list[str] | None = None  # what the calling agent may read (None: the key's)
    # The run's model, through the gate (budget checked before, tokens charged after):
    # complete([(role, text), ...], json_schema or None) -> text.
    complete: Callable[[list[tuple[str, str]], dict | None], str] | None = None
    # For a service that calls the model itself (answers): the gate's check before, the charge after.
    before_llm: Callable[[], object] = lambda: None
    charge: Callable[[int], None] = lambda tokens: None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Builtin:
    name: str
    side_effects: str
    input_schema: dict
    output_schema: dict
    run: Callable[[Invocation, dict], dict]
    # Calls again under the same invocation id have no second effect (the ledger may repeat them).
    honours_invocation_id: bool = False


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required or [], "additionalProperties": True}


def _sleep(inv: Invocation, args: dict) -> dict:
    if inv.stop.wait(float(args["seconds"])):
        raise Interrupted("stopped while sleeping")
    return {"slept": args["seconds"]}


def _echo(inv: Invocation, args: dict) -> dict:
    return {"text": args["text"]}


def _record(inv: Invocation, args: dict) -> dict:
    first = inv.services.record_effect(inv.invocation_id, inv.run_id, inv.step, args["value"])
    return {"recorded": args["key"], "invocation_id": inv.invocation_id, "first": first}


def _fail(inv: Invocation, args: dict) -> dict:
    raise ToolFailure(args.get("message") or "builtin.fail always fails")


def _collections(inv: Invocation, args: dict) -> list[str] | None:
    asked = args.get("collections")
    if inv.collections is None:
        return asked
    if asked is None:
        return list(inv.collections)
    # Outside the agent's collections: as if it did not exist (the key's scope checks the rest).
    return [c for c in asked if c in inv.collections]


def _search(inv: Invocation, args: dict) -> dict:
    names = _collections(inv, args)
    hits = [] if names == [] else inv.services.search(args["query"], names, int(args.get("top_k", 5)))
    return {"hits": hits}


def _answer(inv: Invocation, args: dict) -> dict:
    names = _collections(inv, args)
    if names == []:
        return {"answer": "", "citations": [], "refused": True}
    inv.before_llm()
    out = dict(inv.services.answer(args["question"], names, args.get("top_k")))
    inv.charge(int(out.pop("tokens", 0)))
    return out


def _model(inv: Invocation) -> Callable[[list[tuple[str, str]], dict | None], str]:
    if inv.complete is None:
        raise ToolFailure("this tool needs a language model, and none is available", retryable=False)
    return inv.complete


def _parse_json(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        try:
            return json.loads(text[start : end + 1]) if 0 <= start < end else None
        except ValueError:
            return None


def _summarize(inv: Invocation, args: dict) -> dict:
    """A summary of text or of search hits; the hits' chunk ids come back as its sources."""
    hits = args.get("hits") or []
    parts = [args["text"]] if args.get("text") else []
    parts += [f"[{h.get('chunk_id')}] {h.get('text', '')}" for h in hits]
    if not parts:
        return {"summary": "", "chunk_ids": []}
    words = int(args.get("max_words", 80))
    text = _model(inv)(
        [
            ("system", f"Summarize the context in at most {words} words. Use only what it says."),
            ("user", "\n\n".join(parts)[:12000]),
        ],
        None,
    )
    return {
        "summary": " ".join(text.split()[:words]),
        "chunk_ids": [h["chunk_id"] for h in hits if "chunk_id" in h],
    }


def _extract(inv: Invocation, args: dict) -> dict:
    """A record in the given JSON Schema from the text, checked against it."""
    from jsonschema import Draft202012Validator

    schema = args["schema"]
    text = _model(inv)(
        [
            (
                "system",
                "Extract the fields the JSON Schema describes from the text. Reply with the JSON object only.",
            ),
            ("user", f"Schema: {schema}\n\nText:\n{args['text'][:12000]}"),
        ],
        schema,
    )
    record = _parse_json(text)
    err = next(iter(Draft202012Validator(schema).iter_errors(record)), None) if record is not None else None
    if record is None or err is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path) if err else ""
        problem = f"record{where}: {err.message}" if err else "not a JSON object"
        raise ToolFailure(f"the model's record does not match the schema: {problem}", retryable=False)
    # `about` (a document id, say) rides along untouched, so the rows of a table stay paired.
    return {"record": record, "about": args.get("about")}


def _snippet_matches(snippet: str, text: str) -> bool:
    """A quoted span matches its chunk when its words appear there in order (whitespace and an
    ellipsis at either end aside)."""
    quoted = " ".join(snippet.replace("…", " ").split()).strip(". ")
    return not quoted or quoted in " ".join(text.split())


def _readable_chunks(inv: Invocation, ids: list) -> dict[int, dict]:
    """The chunks among `ids` (integers only) that exist and the calling agent may read: what a
    citation must name to count."""
    wanted = sorted({i for i in ids if isinstance(i, int) and not isinstance(i, bool)})
    return inv.services.chunks(wanted, inv.collections) if wanted else {}


def _find_similar(inv: Invocation, args: dict) -> dict:
    """Chunks like a given one (by its id, which must be readable) or like a text; the source chunk
    itself is left out, and each hit keeps its chunk id for citing."""
    chunk_id, text = args.get("chunk_id"), args.get("text")
    if (chunk_id is None) == (text is None):
        raise ToolFailure("give chunk_id or text, one of them", retryable=False)
    source = None
    if chunk_id is not None:
        chunk = _readable_chunks(inv, [chunk_id]).get(chunk_id)
        if chunk is None:
            # Unreadable and missing read alike: the key learns nothing of other collections.
            raise ToolFailure(f"no such chunk: {chunk_id}", retryable=False)
        text = chunk["text"]
        source = {"chunk_id": chunk_id, "document_id": chunk["document_id"]}
    names = _collections(inv, args)
    top_k = int(args.get("top_k", 5))
    # The search's query limit (2000 characters by default): a chunk's opening stands for it.
    query = " ".join(str(text).split())[:1000]
    hits = [] if names == [] or not query else inv.services.search(query, names, top_k + 1)
    hits = [h for h in hits if chunk_id is None or h.get("chunk_id") != chunk_id][:top_k]
    return {"hits": hits, "source": source}


def _ids(item: Any) -> list:
    """The chunk ids an insight of the model's cites (none when it gave no list)."""
    ids = item.get("chunk_ids") if isinstance(item, dict) else None
    return ids if isinstance(ids, list) else []


def _extract_insights(inv: Invocation, args: dict) -> dict:
    """Key insights of search hits, each with the chunk ids that support it. A cited id must be one
    of the given hits and a chunk the run may read (check_citations' rule); an id that is not is
    dropped and reported, and an insight left with no support is dropped too."""
    hits = [h for h in args["hits"] if isinstance(h.get("chunk_id"), int)]
    if not hits:
        return {"insights": [], "chunk_ids": [], "problems": []}
    most = int(args.get("max_insights", 5))
    focus = f" about: {args['focus']}" if args.get("focus") else ""
    schema = {
        "type": "object",
        "properties": {
            "insights": {
                "type": "array",
                "maxItems": most,
                "items": {
                    "type": "object",
                    "properties": {
                        "insight": {"type": "string"},
                        "chunk_ids": {
                            "type": "array",
                            "items": {"type": "integer", "enum": [h["chunk_id"] for h in hits]},
                            "minItems": 1,
                        },
                    },
                    "required": ["insight", "chunk_ids"],
                },
            }
        },
        "required": ["insights"],
    }
    text = _model(inv)(
        [
            (
                "system",
                f"List at most {most} key insights{focus}, each one sentence, using only the context. "
                "Each insight cites the [ids] of the passages that support it. Reply with JSON: "
                '{"insights": [{"insight": "...", "chunk_ids": [1]}]}',
            ),
            ("user", "\n\n".join(f"[{h['chunk_id']}] {h.get('text', '')}" for h in hits)[:12000]),
        ],
        schema,
    )
    reply = _parse_json(text)
    listed = reply.get("insights") if isinstance(reply, dict) else None
    if not isinstance(listed, list):
        raise ToolFailure(
            "the model's insights are not a JSON object with a list of insights", retryable=False
        )
    given = {h["chunk_id"] for h in hits}
    cited = [_ids(item) for item in listed]
    found = _readable_chunks(inv, [i for ids in cited for i in ids])
    insights, problems, supporting = [], [], []
    for n, item in enumerate(listed[:most]):
        if not isinstance(item, dict) or not str(item.get("insight") or "").strip():
            problems.append({"insight": n, "chunk_id": None, "problem": "not an insight"})
            continue
        ids = []
        for chunk_id in cited[n]:
            if not isinstance(chunk_id, int) or chunk_id not in given or chunk_id not in found:
                problems.append({"insight": n, "chunk_id": chunk_id, "problem": "no such chunk"})
            elif chunk_id not in ids:
                ids.append(chunk_id)
        if not ids:
            problems.append({"insight": n, "chunk_id": None, "problem": "an insight without support"})
            continue
        insights.append({"insight": " ".join(str(item["insight"]).split()), "chunk_ids": ids})
        supporting += [i for i in ids if i not in supporting]
    return {"insights": insights, "chunk_ids": supporting, "problems": problems}


def _check_citations(inv: Invocation, args: dict) -> dict:
    """Every citation of the answers must name a chunk the run may read, and a quoted snippet must
    match that chunk's text; the valid ones come back for a synthesis to cite."""
    answers = args["answers"]
    cited = [c for a in answers for c in (a.get("citations") or []) if isinstance(c, dict)]
    found = _readable_chunks(inv, [c.get("chunk_id") for c in cited])
    problems, valid, seen = [], [], set()
    for i, answer in enumerate(answers):
        if not answer.get("citations") and (answer.get("answer") or "").strip():
            problems.append({"answer": i, "chunk_id": None, "problem": "an answer without citations"})
        for c in answer.get("citations") or []:
            chunk_id = c.get("chunk_id") if isinstance(c, dict) else None
            chunk = found.get(chunk_id) if isinstance(chunk_id, int) else None
            if chunk is None:
                problems.append({"answer": i, "chunk_id": chunk_id, "problem": "no such chunk"})
            elif c.get("snippet") and not _snippet_matches(c["snippet"], chunk["text"]):
                problems.append(
                    {"answer": i, "chunk_id": chunk_id, "problem": "the quote is not in the chunk"}
                )
            elif chunk_id not in seen:
                seen.add(chunk_id)
                valid.append(
                    {"chunk_id": chunk_id, "document_id": chunk["document_id"], "text": chunk["text"]}
                )
    return {"valid": not problems, "checked": len(cited), "problems": problems, "citations": valid}


def _list_documents(inv: Invocation, args: dict) -> dict:
    names = _collections(inv, {"collections": [args["collection"]]})
    if names == []:
        return {"documents": []}
    since = args.get("since") or None
    if since is not None:
        from datetime import datetime

        try:
            datetime.fromisoformat(since)
        except ValueError:
            raise ToolFailure(f"since: {since!r} is not an ISO date or time", retryable=False) from None
    docs = inv.services.documents(args["collection"], since, int(args.get("limit", 10)))
    chars = int(args.get("max_chars", 4000))
    return {"documents": [{**d, "text": d.get("text", "")[:chars]} for d in docs]}


STRING = {"type": "string"}
HIT = _obj(
    {
        "chunk_id": {"type": "integer"},
        "document_id": STRING,
        "title": STRING,
        "text": STRING,
        "collection": STRING,
        "score": {"type": "number"},
    }
)
BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "builtin.sleep",
            "none",
            _obj({"seconds": {"type": "number", "minimum": 0, "maximum": 3600}}, ["seconds"]),
            _obj({"slept": {"type": "number"}}),
            _sleep,
        ),
        Builtin("builtin.echo", "none", _obj({"text": STRING}, ["text"]), _obj({"text": STRING}), _echo),
        Builtin(
            "builtin.record",
            "non_idempotent",
            _obj({"key": STRING, "value": {}}, ["key", "value"]),
            _obj({"recorded": STRING, "invocation_id": STRING, "first": {"type": "boolean"}}),
            _record,
            honours_invocation_id=True,
        ),
        Builtin("builtin.fail", "none", _obj({"message": STRING}), _obj({}), _fail),
        Builtin(
            "builtin.search",
            "none",
            _obj(
                {
                    "query": STRING,
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
                    "collections": {"type": "array", "items": STRING},
                },
                ["query"],
            ),
            _obj({"hits": {"type": "array", "items": HIT}}),
            _search,
        ),
        Builtin(
            "builtin.find_similar",
            "none",
            _obj(
                {
                    "chunk_id": {"type": "integer"},
                    "text": {"type": "string", "minLength": 1},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
                    "collections": {"type": "array", "items": STRING},
                }
            ),
            _obj(
                {
                    "hits": {"type": "array", "items": HIT},
                    "source": {
                        "type": ["object", "null"],
                        "properties": {"chunk_id": {"type": "integer"}, "document_id": STRING},
                    },
                }
            ),
            _find_similar,
        ),
        Builtin(
            "builtin.extract_insights",
            "none",
            _obj(
                {
                    "hits": {"type": "array", "items": HIT},
                    "focus": STRING,
                    "max_insights": {"type": "integer", "minimum": 1, "maximum": 20},
                },
                ["hits"],
            ),
            _obj(
                {
                    "insights": {
                        "type": "array",
                        "items": _obj(
                            {
                                "insight": STRING,
                                "chunk_ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                            },
                            ["insight", "chunk_ids"],
                        ),
                    },
                    "chunk_ids": {"type": "array", "items": {"type": "integer"}},
                    "problems": {"type": "array", "items": {"type": "object"}},
                }
            ),
            _extract_insights,
        ),
        Builtin(
            "builtin.answer_with_citations",
            "none",
            _obj(
                {
                    "question": STRING,
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
                    "collections": {"type": "array", "items": STRING},
                },
                ["question"],
            ),
            _obj(
                {
                    "answer": STRING,
                    "citations": {"type": "array", "items": _obj({"chunk_id": {"type": "integer"}})},
                    "refused": {"type": "boolean"},
                }
            ),
            _answer,
        ),
        Builtin(
            "builtin.summarize_context",
            "none",
            _obj(
                {
                    "text": STRING,
                    "hits": {"type": "array", "items": HIT},
                    "max_words": {"type": "integer", "minimum": 5},
                }
            ),
            _obj({"summary": STRING, "chunk_ids": {"type": "array", "items": {"type": "integer"}}}),
            _summarize,
        ),
        Builtin(
            "builtin.extract_fields",
            "none",
            _obj({"text": STRING, "schema": {"type": "object"}, "about": {}}, ["text", "schema"]),
            _obj({"record": {"type": "object"}, "about": {}}),
            _extract,
        ),
        Builtin(
            "builtin.check_citations",
            "none",
            _obj(
                {
                    "answers": {
                        "type": "array",
                        "items": _obj(
                            {"answer": STRING, "citations": {"type": "array", "items": {"type": "object"}}}
                        ),
                    }
                },
                ["answers"],
            ),
            _obj(
                {
                    "valid": {"type": "boolean"},
                    "checked": {"type": "integer"},
                    "problems": {"type": "array", "items": {"type": "object"}},
                    "citations": {
                        "type": "array",
                        "items": _obj(
                            {"chunk_id": {"type": "integer"}, "document_id": STRING, "text": STRING}
                        ),
                    },
                }
            ),
            _check_citations,
        ),
        Builtin(
            "builtin.list_documents",
            "none",
            _obj(
                {
                    "collection": STRING,
                    "since": STRING,
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                    "max_chars": {"type": "integer", "minimum": 100, "maximum": 20000},
                },
                ["collection"],
            ),
            _obj(
                {
                    "documents": {
                        "type": "array",
                        "items": _obj(
                            {
                                "document_id": STRING,
                                "title": STRING,
                                "source_id": STRING,
                                "created_at": STRING,
                                "text": STRING,
                            }
                        ),
                    }
                }
            ),
            _list_documents,
        ),
    )
}
