"""Admin routes the console uses, on a live server: stats, recent logs, chat model load/unload."""

from __future__ import annotations

import time

import httpx
import pytest

from appliance.observability.stats import quantile
from tests.conftest import TEST_MODEL_ENV, ServerProcess


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("admin") / "data", env=TEST_MODEL_ENV).start(
        require_llm=True
    )
    with server.client() as c:
        c.post("/api/v1/collections", json={"name": "kb"})
        r = c.post(
            "/api/v1/documents",
            params={"wait": "true"},
            json={"collection": "kb", "source_id": "a.md", "text": "Backups run nightly at 02:00."},
        )
        assert r.status_code == 200, r.text
        for _ in range(3):
            c.post("/api/v1/knowledge/search", json={"query": "when do backups run", "collections": ["kb"]})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(srv):
    with srv.client() as c:
        yield c


@pytest.fixture(scope="module")
def user_key(admin):
    return admin.post("/api/v1/keys", json={"name": "u", "role": "user", "collections": ["kb"]}).json()["key"]


def test_stats_describe_health_counts_traffic_and_history(admin):
    stats = admin.get("/api/v1/admin/stats").json()
    components = {c["name"]: c for c in stats["components"]}
    assert set(components) == {"api", "duckdb", "bm25", "vectors", "jobs", "embedder", "model", "disk"}
    assert components["duckdb"]["status"] == "ok" and components["model"]["status"] == "ok"
    assert "SmolLM2-135M-Instruct" in components["model"]["detail"]
    assert [(c["name"], c["documents"]) for c in stats["collections"]] == [("kb", 1)]
    traffic = stats["traffic"]
    assert traffic["queries_per_min"] > 0  # the three searches of the fixture, within the last minute
    assert traffic["latency_ms"]["search"]["p50"] > 0
    assert traffic["latency_ms"]["search"]["p95"] >= traffic["latency_ms"]["search"]["p50"]
    assert traffic["latency_ms"]["answer"] == {"p50": None, "p95": None}  # nothing asked yet
    assert stats["memory"]["rss_bytes"] > 10 * 1024 * 1024
    assert 0 < stats["disk"]["free_bytes"] <= stats["disk"]["total_bytes"]
    assert stats["queue"]["llm_slots"] == 1 and stats["uptime_seconds"] > 0
    history = stats["history"]
    assert history["interval_seconds"] > 0 and len(history["rss_bytes"]) >= 1
    assert len(history["queries_per_min"]) == len(history["rss_bytes"]) - 1  # rates between readings


def test_admin_routes_need_an_admin_key(srv, user_key):
    for path in ("/api/v1/admin/stats", "/api/v1/admin/logs", "/api/v1/admin/models"):
        assert httpx.get(f"{srv.url}{path}").status_code == 401
        assert (
            httpx.get(f"{srv.url}{path}", headers={"Authorization": f"Bearer {user_key}"}).status_code == 403
        )
    r = httpx.post(f"{srv.url}/api/v1/admin/models/unload", headers={"Authorization": f"Bearer {user_key}"})
    assert r.status_code == 403


def test_logs_filter_by_level_and_tail_after_a_seq(admin):
    lines = admin.get("/api/v1/admin/logs", params={"limit": 500}).json()["lines"]
    assert any(ln["msg"] == "chat model loaded" and ln["model"] == "SmolLM2-135M-Instruct" for ln in lines)
    assert [ln["seq"] for ln in lines] == sorted(ln["seq"] for ln in lines)
    admin.post("/api/v1/admin/models/load", json={"model": "no-such-model"})  # not logged: refused up front
    warnings = admin.get("/api/v1/admin/logs", params={"level": "warning"}).json()["lines"]
    assert all(ln["level"] in ("warning", "error", "critical") for ln in warnings)
    last = admin.get("/api/v1/admin/logs").json()["last_seq"]
    assert admin.get("/api/v1/admin/logs", params={"after": last}).json()["lines"] == []
    assert admin.get("/api/v1/admin/logs", params={"level": "loud"}).status_code == 400
    assert admin.get("/api/v1/admin/logs", params={"limit": 0}).status_code == 400


def test_unload_then_load_the_chat_model(admin):
    models = admin.get("/api/v1/admin/models").json()
    assert models["chat"]["state"] == "loaded" and models["embedding"]["dimensions"] == 384
    assert any(m["name"] == "SmolLM2-135M-Instruct" and m["loaded"] for m in models["available"])
    assert admin.post("/api/v1/admin/models/unload").json()["state"] == "unloaded"
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert admin.post("/v1/chat/completions", json=chat).status_code == 503
    assert (
        admin.post("/api/v1/knowledge/search", json={"query": "backups"}).status_code == 200
    )  # search still works
    assert admin.get("/readyz").json()["chat_model"]["state"] == "unloaded"
    assert admin.post("/api/v1/admin/models/load", json={"model": "no-such-model"}).status_code == 404
    unknown_home = admin.post("/api/v1/admin/models/load", json={"model": "~nosuchuser/x.gguf"})
    assert unknown_home.status_code == 400, unknown_home.text  # was a 500: pathlib raises for `~nosuchuser`
    assert "unknown user" in unknown_home.json()["detail"]
    assert admin.post("/api/v1/admin/models/load", json={"model": "SmolLM2-135M-Instruct"}).status_code == 202
    deadline = time.monotonic() + 120
    while (
        admin.get("/api/v1/admin/models").json()["chat"]["state"] == "loading" and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert admin.get("/api/v1/admin/models").json()["chat"]["state"] == "loaded"
    assert admin.post("/v1/chat/completions", json=chat).status_code == 200
    assert any(ln["msg"] == "chat model unloaded" for ln in admin.get("/api/v1/admin/logs").json()["lines"])


def test_admin_routes_are_in_the_openapi_document(admin):
    paths = admin.get("/schema/openapi.json").json()["paths"]
    for path in (
        "/api/v1/admin/stats",
        "/api/v1/admin/logs",
        "/api/v1/admin/models",
        "/api/v1/admin/models/load",
        "/api/v1/admin/models/unload",
    ):
        assert path in paths, path
    params = {p["name"] for p in paths["/api/v1/admin/logs"]["get"]["parameters"]}
    assert {"level", "limit", "after"} <= params


def test_quantile_interpolates_within_buckets_like_prometheus():
    earlier = {0.1: 0.0, 0.5: 0.0, 1.0: 0.0, float("inf"): 0.0}
    later = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, float("inf"): 40.0}
    assert quantile(0.25, earlier, later) == pytest.approx(0.1)  # the 10th of 40 ends the first bucket
    assert quantile(0.5, earlier, later) == pytest.approx(0.1 + 0.4 * 0.5)  # halfway through the second
    assert quantile(0.95, earlier, later) == pytest.approx(0.5 + 0.5 * 0.8)
    assert quantile(0.5, later, later) is None  # nothing observed between the readings
    beyond = {0.1: 0.0, 0.5: 0.0, 1.0: 0.0, float("inf"): 5.0}
    assert quantile(0.5, earlier, beyond) == 1.0  # past the last bound: that bound
