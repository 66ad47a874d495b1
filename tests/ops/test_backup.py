"""Online backup under ingestion load, restore into the stopped data dir, and doctor on both states."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import REPO, ServerProcess


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_backup_while_ingesting_loses_nothing_acknowledged(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    try:
        api = server.client()
        api.post("/api/v1/collections", json={"name": "load"})
        acked: list[tuple[float, str]] = []  # (time the 202 came back, document id)
        stop = threading.Event()

        def ingest() -> None:
            n = 0
            with server.client() as c:
                while not stop.is_set():
                    r = c.post(
                        "/api/v1/documents",
                        json={
                            "collection": "load",
                            "source_id": f"doc-{n}",
                            "text": f"Document {n} about the quarterly audit {n}.",
                        },
                    )
                    if r.status_code == 202:
                        acked.append((time.monotonic(), r.json()["document_ids"][0]))
                    n += 1

        writer = threading.Thread(target=ingest)
        writer.start()
        while len(acked) < 20:
            time.sleep(0.1)
        started = time.monotonic()
        dest = tmp_path / "snap"
        done = cli("backup", str(dest), "--url", server.url, "--key", server.key, "--json")
        finished = time.monotonic()
        time.sleep(1)
        stop.set()
        writer.join()
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["path"] == str(dest) and (dest / "MANIFEST.json").exists()
        assert not list((data / "backups").glob("*"))  # moved to DEST, not copied
        before = [d for t, d in acked if t < started]
        after = [d for t, d in acked if t > finished]
        assert before and after

        # Doctor on the running server: consistent indexes once ingestion settles, no outbound attempt.
        time.sleep(3)
        doc = cli(
            "doctor",
            "--url",
            server.url,
            "--key",
            server.key,
            "--json",
            env={"APPLIANCE_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"},
        )
        checks = {c["name"]: c for c in json.loads(doc.stdout)}
        assert checks["outbound network"]["status"] == "ok", checks
        assert checks["server"]["status"] == "ok"

        refused = cli("restore", str(dest), env={"APPLIANCE_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"})
        assert refused.returncode == 1 and "in use by a running appliance" in refused.stderr
    finally:
        server.stop()

    restored = cli("restore", str(dest), env={"APPLIANCE_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"})
    assert restored.returncode == 0, restored.stderr
    assert "previous files are kept" in restored.stdout
    mode_check = cli(
        "doctor",
        "--json",
        env={"APPLIANCE_DATA_DIR": str(data), "PATH": "/usr/bin:/bin", "APPLIANCE_SERVER__PORT": "1"},
    )
    perms = {c["name"]: c for c in json.loads(mode_check.stdout)}["data directory"]
    assert perms["status"] == "fail" and "open to other users" in perms["detail"]  # made by a bare `serve`
    data.chmod(0o750)  # what install.sh sets
    stopped = cli(
        "doctor",
        "--json",
        env={"APPLIANCE_DATA_DIR": str(data), "PATH": "/usr/bin:/bin", "APPLIANCE_SERVER__PORT": "1"},
    )
    checks = {c["name"]: c for c in json.loads(stopped.stdout)}
    assert checks["server"]["status"] == "info" and checks["data directory"]["status"] == "ok", checks

    server = ServerProcess(data).start()
    try:
        with server.client() as api:
            # A 202 stored the document with its job; jobs in the snapshot resume after the restore.
            deadline = time.monotonic() + 180
            missing = list(before)
            while missing and time.monotonic() < deadline:
                missing = [d for d in missing if api.get(f"/api/v1/documents/{d}").status_code != 200]
                time.sleep(0.5)
            assert not missing, f"{len(missing)} of {len(before)} acknowledged documents lost"
            # The snapshot is a point in time: what came after it is not in it.
            assert api.get(f"/api/v1/documents/{after[-1]}").status_code == 404
            hits = api.post(
                "/api/v1/knowledge/search",
                json={"query": "quarterly audit", "collections": ["load"], "mode": "keyword", "top_k": 5},
            ).json()["hits"]
            assert hits
            # Documents of the snapshot still being ingested were listed a moment before their group
            # reached the indexes: agreement is due once no job is left running.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                ops = api.get("/api/v1/admin/ops").json()
                active = [
                    j
                    for j in api.get("/api/v1/jobs", params={"limit": 200}).json()
                    if j["state"] in ("queued", "running")
                ]
                if not active and all(ix["count"] == ops["chunks"] for ix in ops["indexes"].values()):
                    break
                time.sleep(0.5)
            assert not active and all(ix["count"] == ops["chunks"] for ix in ops["indexes"].values()), (
                ops["chunks"],
                ops["indexes"],
                active[:3],
            )
    finally:
        server.stop()


def test_restore_refuses_a_damaged_snapshot(tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "appliance.duckdb").write_bytes(b"x")
    (snap / "MANIFEST.json").write_text(
        json.dumps(
            {
                "format": 1,
                "created": "",
                "appliance_version": "0",
                "files": {"appliance.duckdb": {"size": 1, "sha256": "0" * 64}},
            }
        )
    )
    out = cli("restore", str(snap), env={"APPLIANCE_DATA_DIR": str(tmp_path / "d"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and "does not match its recorded sha256" in out.stderr


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    # The CLI children get explicit environments above; nothing here may depend on the caller's.
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)
    yield
    httpx.Client().close()
