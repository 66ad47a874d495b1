"""Sources registered in a real DuckDB (schedules, what is due, quarantine, file policies) and the registry of kinds."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.config import Settings, load_settings
from appliance.db.catalog import Catalog, document_id_for
from appliance.db.connection import Database
from appliance.db.jobs import JobStore
from appliance.db.migrations import migrate
from appliance.db.sources import KnownFile, SourceRecord, SourceStore, schedule_interval
from appliance.errors import Conflict, InvalidInput
from appliance.ingest.intake import NewDocument
from appliance.ingest.pipeline import content_hash
from appliance.ingest.sources.files import PathFilter, ignored_name, path_key
from appliance.ingest.sources.gitsource import GitSource
from appliance.ingest.sources.protocols import Sink, SourceConfig, SyncResult
from appliance.ingest.sources.registry import SourceKinds
from appliance.ingest.sources.service import SourceService
from appliance.observability.metrics import Metrics


@pytest.fixture
def store(tmp_path):
    db = Database(tmp_path / "a.duckdb")
    migrate(db)
    yield SourceStore(db)
    db.close()


def test_schedules():
    assert schedule_interval("manual") is None
    assert schedule_interval("daily") == 86400
    assert schedule_interval("every 15 minutes") == 900
    assert schedule_interval("every 2 hours") == 7200
    for bad in ("sometimes", "every 0 minutes", "every -1 hours"):
        with pytest.raises(InvalidInput):
            schedule_interval(bad)


def test_due_sources_follow_their_schedule(store):
    store.create("hourly-repo", "git", "eng", "/srv/a", {}, "hourly")
    store.create("manual-repo", "git", "eng", "/srv/b", {}, "manual")
    store.create("daily-repo", "git", "eng", "/srv/c", {}, "daily")
    now = datetime.now(UTC)
    assert sorted(store.due(now)) == ["daily-repo", "hourly-repo"]  # never synced: due at once
    store.sync_started("hourly-repo")
    store.sync_started("daily-repo")
    assert store.due(now + timedelta(minutes=5)) == []
    assert store.due(now + timedelta(minutes=61)) == ["hourly-repo"]
    assert sorted(store.due(now + timedelta(days=1, minutes=1))) == ["daily-repo", "hourly-repo"]
    with pytest.raises(Conflict):
        store.create("daily-repo", "git", "eng", "/srv/c", {}, "daily")
    with pytest.raises(InvalidInput):
        store.create("Bad Name", "git", "eng", "/srv/c", {}, "daily")


def test_records_carry_config_and_cursor(store):
    store.create("repo", "git", "eng", "/srv/a", {"branch": "main"}, "manual")
    store.ensure("inbox", "dropfolder", "*", "/srv/inbox")
    store.sync_succeeded("repo", "abc123")
    assert store.record("repo") == SourceRecord(
        "repo", "git", "eng", "/srv/a", "manual", {"branch": "main"}, "abc123"
    )
    assert [r.name for r in store.records()] == ["inbox", "repo"]
    assert [r.name for r in store.records("dropfolder")] == ["inbox"]


def test_files_and_quarantine(store):
    store.ensure("inbox", "dropfolder", "*", "/srv/inbox")
    store.record_files("inbox", [KnownFile("eng/a.md", "eng", "1:2", "sha256:x", "doc-a")], [])
    store.quarantine("inbox", "eng/b.pdf", "eng", "failed", "broken")
    store.quarantine("inbox", "eng/b.pdf", "eng", "failed", "still broken")
    rows = store.quarantined(["eng"])
    assert [(r.path, r.reason) for r in rows] == [("eng/b.pdf", "still broken")]
    assert store.quarantined(["other"]) == []
    listed = {s.name: s for s in store.list()}["inbox"]
    assert listed.documents == 1 and listed.quarantined == 1
    store.release_missing("inbox", "eng", {"eng/a.md"})
    assert store.quarantined(None) == []
    store.record_files("inbox", [], ["eng/a.md"])
    assert store.known_files("inbox") == {}


def test_file_policies():
    for name in (
        ".hidden",
        ".~lock.report.odt#",
        "~$budget.xlsx",
        "notes.md.swp",
        "movie.mp4.part",
        "file.crdownload",
        "Thumbs.db",
    ):
        assert ignored_name(name), name
    for name in ("report.md", "budget.xlsx", "a~b.txt"):
        assert not ignored_name(name), name
    assert path_key("caf\udce9.txt") == "caf\\xe9.txt"
    docs_only = PathFilter(["docs/**", "*.md"], ["**/drafts/**"])
    assert docs_only("docs/a/b.txt") and docs_only("README.md") and docs_only("x/y/z.md")
    assert not docs_only("src/main.py") and not docs_only("docs/drafts/x.md")
    assert PathFilter()("anything/at/all.bin")


# -- the registry of kinds ------------------------------------------------------------------------
class NotesSource:
    """An extension's kind, as small as one can be: the .txt files of a folder, compared by content."""

    kind = "notes"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def validate(self, config: SourceConfig) -> SourceConfig:
        if not Path(config.location).is_dir():
            raise InvalidInput(f"{config.location} is not a folder")
        return SourceConfig(str(Path(config.location).resolve()), {})

    def source_id(self, name: str, path: str) -> str:
        return f"notes:{name}:{path}"

    def sync(self, record: SourceRecord, sink: Sink) -> SyncResult:
        known = sink.known_files(record.name)
        docs, seen = [], []
        for path in sorted(Path(record.location).glob("*.txt")):
            data = path.read_bytes()
            digest = content_hash(data)
            if (old := known.get(path.name)) is None or old.content_hash != digest:
                sid = self.source_id(record.name, path.name)
                docs.append(
                    NewDocument(source_id=sid, content=data, filename=path.name, source_kind=self.kind)
                )
                seen.append(
                    KnownFile(
                        path.name, record.collection, digest, digest, document_id_for(record.collection, sid)
                    )
                )
        job = sink.submit(record.name, record.collection, docs, [])
        sink.record_files(record.name, seen, [])
        return SyncResult(None, {"jobs": [job] if job else []})


def test_kinds_register_once_and_refuse_a_second_factory():
    kinds = SourceKinds()
    kinds.register("notes", NotesSource)
    kinds.register("notes", NotesSource)  # the same again: a no-op
    with pytest.raises(Conflict):
        kinds.register("notes", GitSource)
    assert kinds.kinds() == ["notes"]
    with pytest.raises(InvalidInput, match="known kinds are notes"):
        kinds.create("svn", load_settings(environ={}))
    kinds.register("liar", NotesSource)
    with pytest.raises(InvalidInput):
        kinds.create("liar", load_settings(environ={}))  # a factory must make the kind it was registered for


def test_an_extension_kind_goes_through_the_same_door(tmp_path):
    kinds = SourceKinds()
    kinds.register("notes", NotesSource)
    settings = load_settings(
        environ={}, overrides={"data_dir": str(tmp_path / "data"), "dropfolder": {"enabled": False}}
    )
    db = Database(tmp_path / "a.duckdb")
    migrate(db)
    jobs = JobStore(db)
    signalled: list[str] = []
    try:
        service = SourceService(settings, db, Catalog(db), jobs, signalled.append, Metrics(), kinds=kinds)
        assert kinds.kinds() == ["dropfolder", "git", "notes"]  # built-in kinds registered the same way
        notes = tmp_path / "notes"
        notes.mkdir()
        (notes / "a.txt").write_text("Remember the milk.")
        with pytest.raises(InvalidInput):
            service.add("notes", "mine", "personal", str(tmp_path / "missing"))
        assert service.add("notes", "mine", "personal", str(notes)).kind == "notes"

        sync_job = service.request_sync("mine")
        assert service.request_sync("mine") == sync_job  # one sync at a time
        service.run_sync(jobs.get(sync_job))
        done = jobs.get(sync_job)
        assert done.state == "succeeded" and signalled == [sync_job, *done.summary["jobs"]]
        [ingest] = done.summary["jobs"]
        assert [i.source_id for i in jobs.items(ingest)] == ["notes:mine:a.txt"]

        removed = service.remove("mine", delete_documents=True)
        assert [(i.source_id, i.action) for i in jobs.items(removed.deleted_documents_job)] == [
            ("notes:mine:a.txt", "delete")
        ]
        with pytest.raises(InvalidInput, match="unknown source kind"):
            service.add("svn", "x", "personal", str(notes))
    finally:
        db.close()


def test_source_modules_do_not_import_the_service():
    """The kinds are below the service: importing one never pulls in the service that dispatches to it."""
    code = (
        "import sys; import appliance.ingest.sources.builtin; "
        "print('appliance.ingest.sources.service' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
