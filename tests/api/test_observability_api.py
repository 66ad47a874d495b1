"""/metrics and the audit log on a live server."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import TEST_MODEL_ENV, ServerProcess

REQUIRED = [
    "rag_queries_total",
    "rag_query_latency_seconds",
    "rag_chunks_indexed_total",
    "rag_ingestion_lag_seconds",
    "llm_requests_total",
    "llm_tokens_total",
    "llm_time_to_first_token_seconds",
    "llm_tokens_per_second",
    "llm_queue_depth",
    "http_requests_total",
    "http_request_duration_seconds",
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("obs") / "data", env=TEST_MODEL_ENV).start(
        require_llm=True
    )
    with server.client() as c:
        c.post("/api/v1/collections", json={"name": "kb"})
        c.post(
            "/api/v1/documents",
            params={"wait": "true"},
            json={
                "collection": "kb",
                "source_id": "a.md",
                "text": "Backups run nightly at 02:00 and are kept for 30 days.",
            },
        )
        c.post("/api/v1/knowledge/search", json={"query": "when do backups run", "collections": ["kb"]})
        c.post(
            "/api/v1/knowledge/query",
            json={"query": "SECRET-QUESTION when do backups run?", "collections": ["kb"]},
        )
        c.get("/api/v1/documents/does-not-exist")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0)
    list(
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        )
    )
    yield server
    server.stop()


def test_metrics_need_the_admin_key_and_carry_every_series(srv):
    assert httpx.get(f"{srv.url}/metrics").status_code == 401
    with srv.client() as admin:
        user = admin.post("/api/v1/keys", json={"name": "u", "role": "user", "collections": ["kb"]}).json()[
            "key"
        ]
        text = admin.get("/metrics").text
    assert httpx.get(f"{srv.url}/metrics", headers={"Authorization": f"Bearer {user}"}).status_code == 403
    for name in REQUIRED:
        assert f"# TYPE {name}" in text or f"# TYPE {name.removesuffix('_total')}" in text, name
    assert 'route="/api/v1/documents/{document_id}"' in text  # templates, never raw ids
    assert "does-not-exist" not in text
    assert 'llm_tokens_total{kind="completion",model="SmolLM2-135M-Instruct"}' in text
    assert 'rag_query_latency_seconds_count{stage="first_token"}' in text


def test_audit_log_records_who_did_what_without_prompt_text(srv):
    with srv.client() as admin:
        entries = admin.get("/api/v1/audit", params={"limit": 200}).json()
    actions = {e["action"] for e in entries}
    assert "POST /api/v1/knowledge/query" in actions and "POST /api/v1/documents" in actions
    assert "POST /v1/chat/completions" in actions
    query = next(e for e in entries if e["action"] == "POST /api/v1/knowledge/query")
    assert query["key_name"] == "admin" and query["outcome"] == "ok" and query["status"] == 200
    missing = next(e for e in entries if e["action"] == "GET /api/v1/documents/{document_id}")
    assert missing["status"] == 404 and missing["target"] == "does-not-exist"
    assert "SECRET-QUESTION" not in str(entries)
    denied = httpx.get(f"{srv.url}/api/v1/collections", headers={"Authorization": "Bearer apk_bogus"})
    assert denied.status_code == 401
    with srv.client() as admin:
        latest = admin.get("/api/v1/audit", params={"limit": 5}).json()
    assert any(e["outcome"] == "denied" and e["key_id"] is None for e in latest)
