"""Crash recovery: kill -9 mid-ingest, restart, and every acknowledged document is searchable,
with DuckDB, Tantivy and USearch agreeing. Lost or damaged index files are rebuilt from DuckDB."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx

from tests.conftest import ServerProcess, wait_job
from tests.db.test_wal_recovery import corrupt_wal

N_DOCS = 240


def _doc(i: int) -> dict:
    return {
        "source_id": f"doc-{i}",
        "text": f"Record {i} mentions the marker word qz{i}marker. "
        f"It describes shipment number {i} leaving warehouse {i % 7} on a weekday.",
    }


def _counts(srv: ServerProcess) -> tuple[int, dict]:
    health = httpx.get(f"{srv.url}/readyz").json()
    return health["chunks"], {name: s["count"] for name, s in health["indexes"].items()}


def _assert_consistent_and_searchable(srv: ServerProcess, client: httpx.Client, ids: range) -> None:
    chunks, index_counts = _counts(srv)
    assert chunks >= len(ids)
    assert index_counts == {"bm25": chunks, "vectors": chunks}, (chunks, index_counts)
    for i in ids:
        hits = client.post(
            "/api/v1/knowledge/search",
            json={"query": f"qz{i}marker", "collections": ["crash"], "mode": "keyword", "top_k": 1},
        ).json()["hits"]
        assert hits and hits[0]["source_id"] == f"doc-{i}", (i, hits)
    # and the vector side holds every acknowledged document too
    listed = client.get("/api/v1/documents", params={"collection": "crash", "limit": 1000}).json()
    assert listed["total"] == len(ids)


def test_kill_during_batch_ingest_then_resume(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with srv.client() as client:
            client.post("/api/v1/collections", json={"name": "crash"})
            accepted = []
            for start in range(0, N_DOCS, 80):
                r = client.post(
                    "/api/v1/documents/batch",
                    json={"collection": "crash", "documents": [_doc(i) for i in range(start, start + 80)]},
                )
                assert r.status_code == 202
                accepted.append(r.json()["job_id"])
            # Kill once the first job is visibly under way, so the crash lands mid-batch.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                progress = client.get(f"/api/v1/jobs/{accepted[0]}").json()["progress"]
                if progress["processed"] > 0:
                    break
                time.sleep(0.05)
        srv.kill()
        states_at_kill = progress
        assert states_at_kill["processed"] < N_DOCS

        srv.start()
        with srv.client() as client:
            jobs = [wait_job(client, j, timeout=300) for j in accepted]
            assert all(j["state"] == "succeeded" for j in jobs), jobs
            assert sum(j["progress"]["failed"] for j in jobs) == 0
            _assert_consistent_and_searchable(srv, client, range(N_DOCS))
    finally:
        srv.stop()


def test_missing_or_damaged_indexes_are_rebuilt_from_duckdb(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with srv.client() as client:
            client.post("/api/v1/collections", json={"name": "crash"})
            r = client.post(
                "/api/v1/documents/batch",
                params={"wait": "true"},
                json={"collection": "crash", "documents": [_doc(i) for i in range(30)]},
            )
            assert r.json()["job"]["state"] == "succeeded"
        srv.stop()
        index_dir = srv.data_dir / "index"
        shutil.rmtree(index_dir / "bm25")
        for f in (index_dir / "vectors").iterdir():
            if f.suffix == ".usearch":
                f.write_bytes(f.read_bytes()[:100])  # truncated: a torn write
        srv.start()
        assert "rebuilt" in srv.log()
        with srv.client() as client:
            _assert_consistent_and_searchable(srv, client, range(30))
            hits = client.post(
                "/api/v1/knowledge/search",
                json={"query": "shipment leaving warehouse", "collections": ["crash"], "mode": "semantic"},
            ).json()["hits"]
            assert hits and all(h["source_id"].startswith("doc-") for h in hits)
    finally:
        srv.stop()


def test_restart_keeps_everything_without_rebuilding(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with srv.client() as client:
            client.post("/api/v1/collections", json={"name": "crash"})
            client.post(
                "/api/v1/documents/batch",
                params={"wait": "true"},
                json={"collection": "crash", "documents": [_doc(i) for i in range(20)]},
            )
        srv.stop()
        srv.start()
        assert "rebuilding index" not in srv.log()
        with srv.client() as client:
            _assert_consistent_and_searchable(srv, client, range(20))
    finally:
        srv.stop()


def test_unreplayable_duckdb_wal_is_set_aside_and_the_server_starts(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with srv.client() as client:
            client.post("/api/v1/collections", json={"name": "crash"})
            r = client.post(
                "/api/v1/documents/batch",
                params={"wait": "true"},
                json={"collection": "crash", "documents": [_doc(i) for i in range(30)]},
            )
            assert r.json()["job"]["state"] == "succeeded"
        srv.kill()  # no checkpoint: the latest writes live in the WAL
        db = srv.data_dir / "appliance.duckdb"
        corrupt_wal(db, tmp_path)
        srv.start()
        log = srv.log()
        assert "ERROR" in log and "WAL failed to replay" in log
        ready = httpx.get(f"{srv.url}/readyz").json()
        aside = ready["set_aside"]["duckdb_wal"]
        assert aside and ".unreplayable-" in aside and Path(aside).exists()
        with srv.client() as client:
            assert "appliance_duckdb_wal_set_aside 1.0" in client.get("/metrics").text
            # Whatever the database kept, the indexes agree with it (the reconciler rebuilt them).
            chunks, index_counts = _counts(srv)
            assert index_counts == {"bm25": chunks, "vectors": chunks}, (chunks, index_counts)
            # The WAL's writes are gone (the collection itself may have been among them); the
            # database takes new ones.
            client.post("/api/v1/collections", json={"name": "crash"})
            r = client.post(
                "/api/v1/documents/batch",
                params={"wait": "true"},
                json={"collection": "crash", "documents": [_doc(i) for i in range(100, 105)]},
            )
            assert r.json()["job"]["state"] == "succeeded", r.text
        srv.stop()
        srv.start()  # no crash loop: the next start is a clean one
        assert httpx.get(f"{srv.url}/readyz").json()["set_aside"]["duckdb_wal"] is None
    finally:
        srv.stop()
