"""The drop folder against a live server: real files in a temp inbox, each with its expected outcome."""

from __future__ import annotations

import hashlib
import os
import re
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.ingest.pdf_fixture import build_pdf

SETTLE = 1.0


@pytest.fixture(scope="module")
def inbox(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("share") / "inbox"


@pytest.fixture(scope="module")
def server(tmp_path_factory, inbox):
    env = {
        "APPLIANCE_DROPFOLDER__PATH": str(inbox),
        "APPLIANCE_DROPFOLDER__SETTLE_SECONDS": str(SETTLE),
        "APPLIANCE_DROPFOLDER__SCAN_INTERVAL_SECONDS": "5",
        "APPLIANCE_LIMITS__MAX_FILE_BYTES": str(2 * 1024 * 1024),
        "APPLIANCE_PARSING__MEMORY_MB": "512",
        "APPLIANCE_PARSING__WALL_SECONDS": "20",
    }
    srv = ServerProcess(tmp_path_factory.mktemp("dropfolder") / "data", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server):
    with server.client() as client:
        yield client


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def documents(api, collection: str) -> dict[str, dict]:
    response = api.get("/api/v1/documents", params={"collection": collection, "limit": 500})
    if response.status_code == 404:
        return {}
    return {d["source_id"]: d for d in response.json()["documents"]}


def quarantined(api, path: str) -> dict | None:
    for q in api.get("/api/v1/quarantine").json()["files"]:
        if q["path"] == path:
            return q
    return None


def search_texts(api, query: str, collection: str) -> list[str]:
    body = {"query": query, "collections": [collection], "top_k": 5, "mode": "keyword"}
    response = api.post("/api/v1/knowledge/search", json=body)
    if response.status_code == 404:  # the collection appears with its first file
        return []
    return [h["text"] for h in response.json()["hits"]]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_new_changed_moved_deleted(api, inbox):
    f = write(
        inbox / "handbook" / "policies" / "travel.md", "# Travel\n\nThe per diem for Lisbon is 80 euros.\n"
    )
    wait_until(
        lambda: any("Lisbon" in t for t in search_texts(api, "Lisbon per diem", "handbook")),
        what="new file searchable",
    )
    assert documents(api, "handbook")["inbox:policies/travel.md"]["source_kind"] == "dropfolder"

    write(f, "# Travel\n\nThe per diem for Porto is 70 euros.\n")
    wait_until(
        lambda: any("Porto" in t for t in search_texts(api, "Porto per diem", "handbook")), what="change"
    )
    assert not any("Lisbon" in t for t in search_texts(api, "Lisbon", "handbook"))

    before = _metric(api, "rag_chunks_reused_total")
    target = inbox / "handbook" / "archive" / "travel-2025.md"
    target.parent.mkdir(parents=True)
    os.rename(f, target)
    # The catalogue shows the move a moment before the job's group reaches the indexes: wait for both.
    wait_until(
        lambda: (
            set(documents(api, "handbook")) == {"inbox:archive/travel-2025.md"}
            and any("Porto" in t for t in search_texts(api, "Porto", "handbook"))
        ),
        what="move",
    )
    assert _metric(api, "rag_chunks_reused_total") > before, "a moved file must not be embedded again"

    target.unlink()
    wait_until(lambda: not documents(api, "handbook"), what="deletion")
    assert search_texts(api, "Porto", "handbook") == []


def _metric(api, name: str) -> float:
    text = api.get("/metrics").text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_half_copied_file_waits_until_complete(api, inbox):
    path = inbox / "copies" / "report.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"Section {i}: quarterly figures line {i}.\n" * 20 for i in range(8)]
    with open(path, "wb") as fh:
        for part in parts:  # a slow copy: it grows for longer than the settle time
            fh.write(part.encode())
            fh.flush()
            time.sleep(SETTLE * 0.4)
            assert "inbox:report.txt" not in documents(api, "copies"), "a file still being written was taken"
    full = "".join(parts).encode()
    doc = wait_until(lambda: documents(api, "copies").get("inbox:report.txt"), what="completed copy")
    assert doc["content_hash"] == "sha256:" + hashlib.sha256(full).hexdigest()


def test_refused_files_are_quarantined_with_reasons(api, inbox, tmp_path):
    folder = inbox / "refusals"
    outside = write(tmp_path / "outside" / "secret.md", "# Outside\n\nnot for the index\n")
    folder.mkdir(parents=True)
    (folder / "escape.md").symlink_to(outside)
    (folder / "loop-a.md").symlink_to(folder / "loop-b.md")
    (folder / "loop-b.md").symlink_to(folder / "loop-a.md")
    os.mkfifo(folder / "pipe.txt")
    write(folder / "empty.txt", b"")
    with open(folder / "huge.log", "wb") as fh:  # 4 GB sparse: must be refused without being read
        fh.truncate(4 * 1024**3)
    write(folder / "photo.pdf", bytes(range(256)) * 64)  # binary renamed .pdf
    write(folder / ".env", "AWS_SECRET_ACCESS_KEY=abc\n")
    write(folder / "id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n")
    write(folder / ".~lock.notes.odt#", "lock")
    write(folder / "draft.md.swp", "swap")
    write(folder / "fine.md", "# Fine\n\nThis one is taken.\n")

    wait_until(lambda: documents(api, "refusals").get("inbox:fine.md"), what="the good file")
    expected = {
        "refusals/escape.md": ("refused", "outside the drop folder"),
        "refusals/loop-a.md": ("refused", "cannot be resolved"),
        "refusals/pipe.txt": ("refused", "not a regular file"),
        "refusals/empty.txt": ("unsupported", "empty file"),
        "refusals/huge.log": ("too_large", "exceeds the limit"),
        "refusals/photo.pdf": ("unsupported", "despite its .pdf extension"),
        "refusals/id_rsa": ("sensitive", "never indexed"),
    }
    for path, (kind, reason) in expected.items():
        entry = wait_until(lambda p=path: quarantined(api, p), what=f"quarantine of {path}")
        assert entry["kind"] == kind, entry
        assert reason in entry["reason"], entry
    # Hidden files (.env among them) and editor/office temporaries are ignored, not listed.
    for path in ("refusals/.env", "refusals/.~lock.notes.odt#", "refusals/draft.md.swp"):
        assert quarantined(api, path) is None
    assert set(documents(api, "refusals")) == {"inbox:fine.md"}
    assert api.get("/readyz").status_code == 200


def test_sensitive_names_and_secrets_in_text(api, inbox):
    write(inbox / "ops" / "credentials.json", '{"token": "x"}')
    write(
        inbox / "ops" / "deploy.md",
        "# Deploy\n\nUse the key AKIAIOSFODNN7EXAMPLE to reach the bucket.\nThen run the deploy script.\n",
    )
    doc = wait_until(lambda: documents(api, "ops").get("inbox:deploy.md"), what="deploy notes")
    assert (
        wait_until(lambda: quarantined(api, "ops/credentials.json"), what="sensitive file")["kind"]
        == "sensitive"
    )
    chunks = api.get(f"/api/v1/documents/{doc['id']}", params={"chunks": "true"}).json()["chunks"]
    text = " ".join(c["text"] for c in chunks)
    assert "AKIAIOSFODNN7EXAMPLE" not in text and "[REDACTED:" in text
    assert doc["metadata"]["redacted_secrets"] >= 1
    assert search_texts(api, "AKIAIOSFODNN7EXAMPLE", "ops") == []
    assert _metric_labelled(api, "rag_secrets_total", 'where="file"') >= 1
    assert _metric_labelled(api, "rag_secrets_total", 'where="chunk"') >= 1


def _metric_labelled(api, name: str, label: str) -> float:
    total = 0.0
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_malformed_and_bomb_files_are_quarantined_then_retried_when_changed(api, inbox):
    folder = inbox / "broken"
    write(folder / "scan.pdf", b"%PDF-1.7\n1 0 obj <</Type /Catalog>>\nendobj\ntrailer garbage\n%%EOF\n")
    bomb = folder / "bomb.docx"
    bomb.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(
                b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                b'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>'
            )
            chunk = b"A" * (1024 * 1024)
            for _ in range(1536):  # 1.5 GB of text once inflated, a few MB on disk
                member.write(chunk)
            member.write(b"</w:t></w:r></w:p></w:body></w:document>")
    assert bomb.stat().st_size < 2 * 1024 * 1024
    pdf_entry = wait_until(
        lambda: (q := quarantined(api, "broken/scan.pdf")) and q["kind"] == "failed" and q,
        timeout=90,
        what="malformed PDF quarantined",
    )
    assert "scan.pdf" in pdf_entry["reason"] or "PDF" in pdf_entry["reason"]
    bomb_entry = wait_until(
        lambda: (q := quarantined(api, "broken/bomb.docx")) and q["kind"] == "failed" and q,
        timeout=120,
        what="DOCX bomb quarantined",
    )
    assert bomb_entry["reason"]
    assert api.get("/readyz").status_code == 200

    # Unchanged, it stays quarantined; once it changes it is tried again and released.
    (folder / "scan.pdf").write_bytes(build_pdf([["Quarterly revenue grew in the north region."]]))
    wait_until(lambda: documents(api, "broken").get("inbox:scan.pdf"), timeout=90, what="fixed PDF indexed")
    wait_until(lambda: quarantined(api, "broken/scan.pdf") is None, what="quarantine released")


def test_odd_file_names(api, inbox):
    folder = inbox / "names"
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.fsencode(folder) + b"/caf\xe9 menu.txt"  # Latin-1 bytes: not valid UTF-8
    with open(raw, "wb") as fh:
        fh.write(b"The cafe serves soup on Mondays.\n")
    write(
        folder / "r\u00e9sum\u00e9 \u05e9\u05dc\u05d5\u05dd \U0001f600.md", "# Notes\n\nUnicode names work.\n"
    )
    write(folder / "e\u0301t\u00e9.txt", "Combining accents in the name.\n")
    docs = wait_until(lambda: len(documents(api, "names")) == 3 and documents(api, "names"), what="odd names")
    assert "inbox:caf\\xe9 menu.txt" in docs
    assert "inbox:r\u00e9sum\u00e9 \u05e9\u05dc\u05d5\u05dd \U0001f600.md" in docs
    os.unlink(raw)
    wait_until(lambda: len(documents(api, "names")) == 2, what="non-UTF-8 name deleted")


def test_files_outside_a_collection_folder_and_bad_folder_names(api, inbox):
    write(inbox / "stray.md", "# Stray\n")
    write(inbox / "Not A Collection" / "x.md", "# X\n")
    assert (
        "collection folder" in wait_until(lambda: quarantined(api, "stray.md"), what="stray file")["reason"]
    )
    assert (
        "collection name"
        in wait_until(lambda: quarantined(api, "Not A Collection"), what="bad folder")["reason"]
    )


def test_sources_list_shows_the_drop_folder(api):
    sources = {s["name"]: s for s in api.get("/api/v1/sources").json()["sources"]}
    inbox = sources["inbox"]
    assert inbox["kind"] == "dropfolder" and inbox["documents"] >= 1 and inbox["last_sync_at"]
    assert inbox["lag_seconds"] is not None and inbox["quarantined"] >= 1
    assert 'rag_ingestion_lag_seconds{source="inbox"}' in api.get("/metrics").text


def test_restart_does_not_reingest(server, api, inbox):
    count = len(documents(api, "names"))
    server.stop()
    server.start()
    with server.client() as fresh:
        time.sleep(SETTLE * 3)
        assert len(documents(fresh, "names")) == count
        jobs = fresh.get("/api/v1/jobs", params={"limit": 5}).json()
        recent = [j for j in jobs if j.get("source") == "inbox" and j["state"] == "queued"]
        assert recent == []
