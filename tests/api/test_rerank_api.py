"""The rerank stage inside search, on a live server: a bi-encoder and a locally built cross-encoder."""

from __future__ import annotations

import pytest

from appliance.models.catalog import default_embedding_dir
from tests.conftest import ServerProcess
from tests.retrieve.test_rerank import _build_tiny_cross_encoder

DOCS = [
    {"source_id": "tea", "text": "Green tea is steeped at 80 degrees for two minutes."},
    {"source_id": "rotation", "text": "API keys are rotated every ninety days by the platform team."},
    {"source_id": "parking", "text": "Visitors park in the underground garage on level minus two."},
]


def _serve(tmp_path, kind: str, model_dir) -> ServerProcess:
    return ServerProcess(
        tmp_path / "data",
        env={
            "APPLIANCE_RETRIEVAL__RERANKER": kind,
            "APPLIANCE_RETRIEVAL__RERANKER_MODEL_DIR": str(model_dir),
        },
    ).start()


def _load(client) -> None:
    client.post("/api/v1/collections", json={"name": "kb"})
    r = client.post(
        "/api/v1/documents/batch", params={"wait": "true"}, json={"collection": "kb", "documents": DOCS}
    )
    assert r.json()["job"]["state"] == "succeeded"


@pytest.mark.parametrize("kind", ["bi-encoder", "cross-encoder"])
def test_search_reranks_when_configured(tmp_path, kind):
    model_dir = default_embedding_dir()
    if kind == "cross-encoder":
        model_dir = _build_tiny_cross_encoder(tmp_path / "ce", model_dir, num_labels=1)
    srv = _serve(tmp_path, kind, model_dir)
    try:
        with srv.client() as client:
            _load(client)
            body = {"query": "how often are keys rotated", "collections": ["kb"], "top_k": 3}
            reranked = client.post("/api/v1/knowledge/search", json=body).json()
            assert reranked["reranked"] is True and "rerank_ms" in reranked["timings"]
            assert len(reranked["hits"]) == 3
            scores = [h["score"] for h in reranked["hits"]]
            assert scores == sorted(scores, reverse=True)
            again = client.post("/api/v1/knowledge/search", json=body).json()
            assert [h["chunk_id"] for h in again["hits"]] == [h["chunk_id"] for h in reranked["hits"]]
            if kind == "bi-encoder":
                assert reranked["hits"][0]["source_id"] == "rotation"
            plain = client.post("/api/v1/knowledge/search", json={**body, "rerank": False}).json()
            assert plain["reranked"] is False and "rerank_ms" not in plain["timings"]
    finally:
        srv.stop()


def test_a_bad_reranker_directory_stops_start_up_with_a_clear_message(tmp_path):
    srv = ServerProcess(
        tmp_path / "data",
        env={
            "APPLIANCE_RETRIEVAL__RERANKER": "cross-encoder",
            "APPLIANCE_RETRIEVAL__RERANKER_MODEL_DIR": str(tmp_path / "missing"),
        },
    )
    with pytest.raises(RuntimeError, match="server exited"):
        srv.start(timeout=60)
    assert "missing" in srv.log() and "Traceback" not in srv.log()
