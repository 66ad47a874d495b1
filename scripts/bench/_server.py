"""Starts a throwaway `appliance serve` for a benchmark, or points at a running one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def bench_server(url: str | None = None, key: str | None = None, env: dict | None = None):
    """Yields an authenticated httpx.Client. Without a URL it runs a fresh server in a temp dir."""
    if url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
            yield client
        return
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        data = Path(tmp) / "data"
        log = open(Path(tmp) / "server.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--data-dir", str(data), "--port", str(port)],
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server failed to start:\n" + (Path(tmp) / "server.log").read_text())
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            key = (data / "admin.key").read_text().strip()
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600
            ) as client:
                client.server_pid = proc.pid  # for benches that watch the server's memory and files
                yield client
        finally:
            proc.terminate()
            proc.wait(60)
            log.close()


def wait_job(client: httpx.Client, job_id: str) -> dict:
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)


def ingest_corpus(client: httpx.Client, collection: str, corpus: list[dict], batch: int) -> list[dict]:
    """A BEIR corpus (one document per entry, source_id = its _id) through the batch API, `batch`
    documents per POST; the ended jobs."""
    jobs = []
    for i in range(0, len(corpus), batch):
        docs = [
            {"source_id": d["_id"], "title": d.get("title") or None, "text": d["text"]}
            for d in corpus[i : i + batch]
        ]
        response = client.post("/api/v1/documents/batch", json={"collection": collection, "documents": docs})
        response.raise_for_status()
        jobs.append(response.json()["job_id"])
    return [wait_job(client, j) for j in jobs]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    idx = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[idx]


def chat_model_ready(http: httpx.Client) -> dict:
    """Waits while the server's chat model loads; its state, or SystemExit with why it failed."""
    while (state := http.get("/readyz").json()["chat_model"])["state"] == "loading":
        time.sleep(0.3)
    if state["state"] != "loaded":
        raise SystemExit(f"chat model failed: {state['error']}")
    return state


def ingest_folder(http: httpx.Client, folder: Path, collection: str) -> int:
    """Every file under `folder` into `collection` through the batch API, waited for; how many."""
    import base64

    http.post("/api/v1/collections", json={"name": collection})
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    documents = [
        {"content_base64": base64.b64encode(p.read_bytes()).decode(), "filename": p.name, "source_id": str(p)}
        for p in files
    ]
    job = http.post("/api/v1/documents/batch", json={"collection": collection, "documents": documents})
    wait_job(http, job.json()["job_id"])
    return len(files)
