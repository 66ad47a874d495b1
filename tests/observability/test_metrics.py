"""Metrics: every required series is exposed; HTTP metrics use route templates and cover whole streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar import Litestar, get
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware
from litestar.params import FromPath
from litestar.response import Stream
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from appliance.observability.metrics import Metrics, decode_rate, instrument_app

REQUIRED = {
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
}


class FakeClock:
    """A clock only the test moves, so durations are exact and nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class KeyRequired(AbstractAuthenticationMiddleware):
    """Stands in for the appliance's key check: it raises before the handler, like the real one."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        if connection.headers.get("authorization") != "Bearer good":
            raise NotAuthorizedException("missing key")
        return AuthenticationResult(user="tester", auth="good")


def make_app(metrics: Metrics, clock: FakeClock) -> Litestar:
    @get("/api/v1/documents/{document_id:str}", sync_to_thread=False)
    def get_document(document_id: FromPath[str]) -> dict:
        return {"id": document_id}

    @get("/stream", sync_to_thread=False)
    def stream() -> Stream:
        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"a", b"b", b"c"):
                clock.now += 2.5  # each chunk "takes" 2.5 s; the whole body 7.5 s
                yield part

        return Stream(chunks())

    app = Litestar(
        route_handlers=[get_document, stream],
        middleware=[DefineMiddleware(KeyRequired)],
        logging_config=None,
    )
    return instrument_app(app, metrics, clock=clock)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_exposition_has_every_required_metric_after_observing() -> None:
    metrics = Metrics()
    metrics.observe_query(
        "hybrid",
        {
            "embed": 0.004,
            "keyword": 0.002,
            "semantic": 0.003,
            "fusion": 0.0001,
            "retrieval": 0.01,
            "generation": 1.5,
            "first_token": 0.3,
            "total": 1.6,
        },
    )
    metrics.add_chunks_indexed(12)
    metrics.set_ingestion_lag("dropfolder", 3.0)
    metrics.observe_llm("qwen", "chat", prompt_tokens=100, completion_tokens=51, ttft_s=0.5, total_s=1.5)
    metrics.set_queue_depth("qwen", 2)
    metrics.observe_http("GET", "/healthz", 200, 0.001)

    payload, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(payload.decode())}
    # The parser drops the _total suffix of counters.
    names = {f.name + ("_total" if f.type == "counter" else "") for f in families.values()}
    assert REQUIRED <= names

    assert sample(metrics, "rag_queries_total", mode="hybrid", outcome="ok") == 1
    assert sample(metrics, "rag_query_latency_seconds_count", stage="embed") == 1
    assert sample(metrics, "rag_chunks_indexed_total") == 12
    assert sample(metrics, "llm_tokens_total", model="qwen", kind="prompt") == 100
    assert sample(metrics, "llm_tokens_total", model="qwen", kind="completion") == 51
    assert sample(metrics, "llm_queue_depth", model="qwen") == 2
    # 50 tokens after the first, in the 1 s after the first token.
    assert sample(metrics, "llm_tokens_per_second_sum", model="qwen") == pytest.approx(50.0)


def test_unknown_stage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown query stages"):
        Metrics().observe_query("hybrid", {"retrieve": 0.1})


def test_decode_rate() -> None:
    assert decode_rate(11, 1.0, 2.0) == pytest.approx(10.0)
    assert decode_rate(10, None, 2.0) == pytest.approx(5.0)
    assert decode_rate(1, 0.5, 0.5) is None  # one token: no decode interval to measure
    assert decode_rate(0, None, 1.0) is None


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.add_chunks_indexed(3)
    assert sample(a, "rag_chunks_indexed_total") == 3
    assert sample(b, "rag_chunks_indexed_total") == 0


def test_openmetrics_on_request() -> None:
    payload, content_type = Metrics().render(accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert payload.rstrip().endswith(b"# EOF")


def test_http_metrics_use_route_templates_not_raw_paths() -> None:
    metrics, clock = Metrics(), FakeClock()
    with TestClient(make_app(metrics, clock)) as client:
        auth = {"Authorization": "Bearer good"}
        assert client.get("/api/v1/documents/doc_1", headers=auth).status_code == 200
        assert client.get("/api/v1/documents/doc_2", headers=auth).status_code == 200
        assert client.get("/api/v1/documents/doc_3").status_code == 401
        assert client.get("/no/such/thing/42", headers=auth).status_code == 404
        assert client.request("BREW", "/api/v1/documents/doc_1", headers=auth).status_code == 405

    template = "/api/v1/documents/{document_id}"
    assert sample(metrics, "http_requests_total", method="GET", route=template, status="200") == 2
    # The key check raises before the handler; the 401 is still counted, under the template.
    assert sample(metrics, "http_requests_total", method="GET", route=template, status="401") == 1
    assert sample(metrics, "http_requests_total", method="GET", route="unmatched", status="404") == 1
    # A junk method neither becomes a label nor a route.
    assert sample(metrics, "http_requests_total", method="OTHER", route="unmatched", status="405") == 1
    assert sample(metrics, "http_request_duration_seconds_count", method="GET", route=template) == 3

    text = metrics.render()[0].decode()
    assert "doc_1" not in text and "/no/such/thing" not in text


def test_streamed_response_is_timed_to_its_last_chunk() -> None:
    metrics, clock = Metrics(), FakeClock()
    with TestClient(make_app(metrics, clock)) as client:
        response = client.get("/stream", headers={"Authorization": "Bearer good"})
        assert response.status_code == 200 and response.content == b"abc"

    assert sample(metrics, "http_requests_total", method="GET", route="/stream", status="200") == 1
    assert sample(
        metrics, "http_request_duration_seconds_sum", method="GET", route="/stream"
    ) == pytest.approx(7.5)
