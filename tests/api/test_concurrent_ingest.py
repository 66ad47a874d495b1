"""Issue 10: ingest jobs running at once keep every document's text its own; damage is found and repaired.

A live server with the default `jobs.workers = 2`. The first test is the reproduction of the issue:
two batches submitted at the same moment into two collections, each document carrying only its
collection's marker. The second damages stored chunks the way the race did (another document's
text under a document) and checks that `appliance doctor --verify-chunks` finds it and `--repair`
puts it right from the source.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import duckdb
import pytest

from tests.conftest import REPO, ServerProcess, wait_job

DOCS_PER_BATCH = 64
ROUNDS = 1  # one round: each job runs well over a second beside the other, which the race needed
PARTS = 5  # sections per document: long enough that chunking one takes a few thread switches


def _document(marker: str, n: int) -> str:
    paragraphs = [f"# {marker} handbook {n}"]
    for s in range(PARTS):
        paragraphs.append(f"## {marker} part {s}")
        paragraphs.append(
            " ".join(
                f"{marker} paragraph {s}.{i} of document {n} records fact {i * n + s}." for i in range(12)
            )
        )
        paragraphs.append(f"{marker} figures for part {s}:")
        paragraphs.append(
            "| item | amount |\n|---|---|\n" + "\n".join(f"| {marker} line {r} | {r * n} |" for r in range(6))
        )
    return "\n\n".join(paragraphs)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("concurrent") / "data").start()
    yield srv
    srv.stop()


def _submit_together(srv: ServerProcess, batches: dict[str, tuple[str, list[dict]]]) -> dict[str, str]:
    """Submit each collection's batch from its own thread, released at the same instant."""
    barrier = threading.Barrier(len(batches))
    job_ids: dict[str, str] = {}
    errors: list[str] = []

    def submit(collection: str, documents: list[dict]) -> None:
        with srv.client() as client:
            barrier.wait()
            response = client.post(
                "/api/v1/documents/batch", json={"collection": collection, "documents": documents}
            )
            if response.status_code != 202:
                errors.append(response.text)
            else:
                job_ids[collection] = response.json()["job_id"]

    threads = [threading.Thread(target=submit, args=(c, docs)) for c, (_, docs) in batches.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return job_ids


def test_two_batches_at_once_keep_every_document_to_its_own_text(server):
    api = server.client()
    for round_ in range(ROUNDS):
        batches = {}
        for marker, prefix in (("AAAMARK", "ca"), ("BBBMARK", "cb")):
            collection = f"{prefix}{round_}"
            assert api.post("/api/v1/collections", json={"name": collection}).status_code == 201
            batches[collection] = (
                marker,
                [
                    {"source_id": f"{prefix}-doc-{n}.md", "text": _document(marker, n)}
                    for n in range(DOCS_PER_BATCH)
                ],
            )
        job_ids = _submit_together(server, batches)
        jobs = {c: wait_job(api, j, timeout=600) for c, j in job_ids.items()}
        # Both jobs ran at the same time: the condition the race needs.
        a, b = jobs.values()
        assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"], jobs
        for collection, (marker, _) in batches.items():
            job = jobs[collection]
            assert job["state"] == "succeeded" and job["progress"]["failed"] == 0, [
                i
                for i in api.get(f"/api/v1/jobs/{job['id']}", params={"items": "true"}).json()["items"]
                if i["state"] == "failed"
            ][:3]
            other = "BBBMARK" if marker == "AAAMARK" else "AAAMARK"
            listed = api.get("/api/v1/documents", params={"collection": collection, "limit": 1000}).json()
            assert listed["total"] == DOCS_PER_BATCH
            for doc in listed["documents"]:
                n = int(doc["source_id"].split("-")[2].split(".")[0])
                chunks = api.get(f"/api/v1/documents/{doc['id']}", params={"chunks": "true"}).json()["chunks"]
                assert len(chunks) >= 2
                text = "\n".join(c["text"] for c in chunks)
                assert other not in text, f"{collection}/{doc['source_id']} holds the other collection's text"
                # Every paragraph of the document, and nothing of another document of the same batch.
                for s in range(PARTS):
                    assert f"{marker} paragraph {s}.11 of document {n} records" in text
                    assert f"item: {marker} line 5; amount: {5 * n}" in text
                assert not [m for m in re.findall(r"of document (\d+)", text) if int(m) != n]

    # What the check reports on this data: nothing damaged; API documents keep no source copy, and
    # those written while the other job ran are the ones it calls at risk.
    job = api.post("/api/v1/admin/verify-chunks", json={}).json()
    report = wait_job(api, job["id"])["summary"]
    assert report["checked"] == ROUNDS * 2 * DOCS_PER_BATCH
    assert report["counts"]["damaged"] == 0 and report["counts"]["mismatched"] == 0
    assert report["counts"]["at_risk"] > 0
    assert report["counts"]["at_risk"] + report["counts"]["unverifiable"] == report["checked"]
    api.close()


def _name(source_id: str) -> str:
    """policy-0.md for the drop folder's inbox:handbook/policy-0.md, as for the API's note.md."""
    return source_id.rsplit("/", 1)[-1].removeprefix("inbox:")


def _doctor(srv: ServerProcess, *flags: str) -> tuple[int, dict]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "doctor",
            "--verify-chunks",
            "--json",
            "--url",
            srv.url,
            "--key",
            srv.key,
            *flags,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_verify_chunks_finds_damage_and_repair_restores_it_from_the_source(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "handbook").mkdir(parents=True)
    for n in range(3):
        (inbox / "handbook" / f"policy-{n}.md").write_text(_document(f"POLICY{n}", n))
    env = {"APPLIANCE_DROPFOLDER__PATH": str(inbox), "APPLIANCE_DROPFOLDER__SETTLE_SECONDS": "0.5"}
    srv = ServerProcess(tmp_path / "data", env=env).start()
    try:
        with srv.client() as api:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                listed = api.get("/api/v1/documents", params={"collection": "handbook"})
                if (
                    listed.status_code == 200
                    and listed.json()["total"] == 3
                    and not api.get("/api/v1/jobs", params={"job_state": "running"}).json()
                ):
                    break
                time.sleep(0.3)
            api.post("/api/v1/collections", json={"name": "notes"})
            note = api.post(
                "/api/v1/documents",
                params={"wait": "true"},
                json={"collection": "notes", "source_id": "note.md", "text": _document("NOTE", 7)},
            )
            assert note.status_code == 200, note.text
            docs = {_name(d["source_id"]): d["id"] for d in api.get("/api/v1/documents").json()["documents"]}
            rc, clean = _doctor(srv)
            assert rc == 0, clean
            # The API document keeps no source copy; it ran alone, so it is not at risk either.
            assert clean["counts"] == {
                "damaged": 0,
                "mismatched": 0,
                "at_risk": 0,
                "unverifiable": 1,
                "ok": 3,
            }
        srv.stop()

        # Damage as the race left it: policy-0's second chunk holds policy-1's text (with a token
        # count that matches, so only the source can tell), and the note's first chunk lost its
        # own count (the one test that works without a source).
        db = duckdb.connect(str(srv.data_dir / "appliance.duckdb"))
        foreign, foreign_count = db.execute(
            "SELECT text, token_count FROM chunks WHERE document_id = ? ORDER BY ordinal LIMIT 1",
            [docs["policy-1.md"]],
        ).fetchone()
        db.execute(
            "UPDATE chunks SET text = ?, token_count = ? WHERE document_id = ? AND ordinal = 1",
            [foreign, foreign_count, docs["policy-0.md"]],
        )
        db.execute(
            "UPDATE chunks SET text = text || ' POLICY1 paragraph' WHERE document_id = ? AND ordinal = 0",
            [docs["note.md"]],
        )
        db.close()
        srv.start()

        rc, report = _doctor(srv)
        assert rc == 1
        verdicts = {_name(d["source_id"]): d for d in report["documents"]}
        assert verdicts["policy-0.md"]["verdict"] == "damaged" and verdicts["policy-0.md"]["repairable"]
        assert "not in this document" in verdicts["policy-0.md"]["reason"]
        assert verdicts["note.md"]["verdict"] == "damaged" and not verdicts["note.md"]["repairable"]
        assert "policy-1.md" not in verdicts and "policy-2.md" not in verdicts  # ok documents are not listed
        assert report["counts"] == {"damaged": 2, "mismatched": 0, "at_risk": 0, "unverifiable": 0, "ok": 2}

        rc, repaired = _doctor(srv, "--repair")
        assert rc == 1 and len(repaired["repair_jobs"]) == 1
        with srv.client() as api:
            job = wait_job(api, repaired["repair_jobs"][0])
            assert job["state"] == "succeeded" and job["progress"]["indexed"] == 1, job
            chunks = api.get(f"/api/v1/documents/{docs['policy-0.md']}", params={"chunks": "true"}).json()[
                "chunks"
            ]
            assert "POLICY1" not in "\n".join(c["text"] for c in chunks)
            hits = api.post(
                "/api/v1/knowledge/search",
                json={
                    "query": "POLICY1 paragraph 0.0 of document 1",
                    "collections": ["handbook"],
                    "mode": "keyword",
                },
            ).json()
            assert {_name(h["source_id"]) for h in hits["hits"][:3]} == {"policy-1.md"}
        rc, after = _doctor(srv)
        assert (
            after["counts"]["damaged"] == 1 and after["counts"]["ok"] == 3
        )  # only the note, which has no source
        assert [_name(d["source_id"]) for d in after["documents"]] == ["note.md"]
    finally:
        srv.stop()
