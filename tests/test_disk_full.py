"""A full data disk: clear errors (507, or 503 once DuckDB has stopped itself), never a 500, no
corruption; once space returns and the server restarts, documents ingest again and the stores agree."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from tests.conftest import ServerProcess

ENV = {"APPLIANCE_DROPFOLDER__ENABLED": "false", "APPLIANCE_LLM__LOAD_AT_START": "false"}


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}"
        )
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _batch(n: int) -> list[dict]:
    return [{"source_id": f"d{n}-{i}", "text": f"Filler {n} {i}. " + "word " * 1500} for i in range(10)]


def _agree(srv: ServerProcess) -> None:
    ready = httpx.get(f"{srv.url}/readyz").json()
    counts = {name: s["count"] for name, s in ready["indexes"].items()}
    assert counts == {"bm25": ready["chunks"], "vectors": ready["chunks"]}, ready


def test_disk_full_gives_clear_errors_and_recovers_once_space_returns(small_disk):
    srv = ServerProcess(small_disk / "data", env=ENV).start()
    stored: set[str] = set()
    errors: list[httpx.Response] = []
    try:
        with srv.client() as client:
            client.post("/api/v1/collections", json={"name": "full"})
            # Fill the disk but a megabyte with ballast, so a few batches reach its end.
            free = os.statvfs(small_disk)
            ballast = small_disk / "ballast"
            ballast.write_bytes(bytes(max(0, free.f_bavail * free.f_frsize - 1_500_000)))
            for n in range(200):
                docs = _batch(n)
                r = client.post(
                    "/api/v1/documents/batch",
                    params={"wait": "true"},
                    json={"collection": "full", "documents": docs},
                    timeout=300,
                )
                assert r.status_code != 500, r.text
                if r.status_code == 200 and r.json()["job"]["state"] == "succeeded":
                    stored.update(d["source_id"] for d in docs)
                elif r.status_code >= 400:
                    errors.append(r)
                    if len(errors) >= 3:
                        break
            assert errors, "the disk never filled"
            for r in errors:
                assert r.status_code in (503, 507), r.text
                assert r.headers["content-type"].startswith("application/problem+json")
                detail = r.json()["detail"]
                assert "disk" in detail and "free space" in detail, r.text
            ready = httpx.get(f"{srv.url}/readyz")
            # Ready (reads still work) or 503 (DuckDB stopped itself on a failed checkpoint).
            assert ready.status_code in (200, 503), ready.text
            assert "Traceback" not in ready.text
        assert stored, "nothing was ingested before the disk filled"

        srv.stop()
        ballast.unlink()  # space returns
        srv.start()
        with srv.client() as client:
            listed = client.get("/api/v1/documents", params={"collection": "full", "limit": 1000}).json()
            assert stored <= {d["source_id"] for d in listed["documents"]}
            r = client.post(
                "/api/v1/documents/batch",
                params={"wait": "true"},
                json={"collection": "full", "documents": _batch(999)},
                timeout=300,
            )
            assert r.status_code == 200 and r.json()["job"]["state"] == "succeeded", r.text
        _agree(srv)
        srv.stop()
        srv.start()  # and a clean restart after that: nothing left half-written
        _agree(srv)
    finally:
        srv.stop()


def test_every_store_saying_its_disk_is_full_is_a_507():
    """DuckDB and the OS say ENOSPC; SQLite (the job queue's Huey storage) says it in its own words.
    The full-disk test above met the queue's words once the catalogue's writes got smaller."""
    import errno
    import sqlite3

    from appliance.api.errors import storage_failure

    for exc in (
        OSError(errno.ENOSPC, "No space left on device"),
        sqlite3.OperationalError("database or disk is full"),
        RuntimeError('Could not write file "x.wal": No space left on device'),
    ):
        assert storage_failure(exc)[0] == 507, exc
    wrapped = RuntimeError("could not queue the job")
    wrapped.__cause__ = sqlite3.OperationalError("database or disk is full")
    assert storage_failure(wrapped)[0] == 507
    assert storage_failure(sqlite3.OperationalError("no such table: task")) is None
