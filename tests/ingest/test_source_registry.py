"""Source registry in a real DuckDB: schedules and what is due, quarantine, file policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.errors import Conflict, InvalidInput
from appliance.ingest.sources.files import PathFilter, ignored_name, path_key
from appliance.ingest.sources.registry import KnownFile, SourceStore, schedule_interval


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


def test_files_and_quarantine(store):
    store.ensure("inbox", "dropfolder", "*", "/srv/inbox")
    store.record_files("inbox", [KnownFile("eng/a.md", "eng", "1:2", "sha256:x", "doc-a")], [])
    store.quarantine("inbox", "eng/b.pdf", "eng", "failed", "broken")
    store.quarantine("inbox", "eng/b.pdf", "eng", "failed", "still broken")
    rows = store.quarantined(["eng"])
    assert [(r["path"], r["reason"]) for r in rows] == [("eng/b.pdf", "still broken")]
    assert store.quarantined(["other"]) == []
    listed = {s["name"]: s for s in store.list()}["inbox"]
    assert listed["documents"] == 1 and listed["quarantined"] == 1
    store.release_missing("inbox", "eng", {"eng/a.md"})
    assert store.quarantined(None) == []
    store.record_files("inbox", [], ["eng/a.md"])
    assert store.known_files("inbox") == {}


def test_file_policies():
    for name in (".hidden", ".~lock.report.odt#", "~$budget.xlsx", "notes.md.swp", "movie.mp4.part",
                 "file.crdownload", "Thumbs.db"):
        assert ignored_name(name), name
    for name in ("report.md", "budget.xlsx", "a~b.txt"):
        assert not ignored_name(name), name
    assert path_key("caf\udce9.txt") == "caf\\xe9.txt"
    docs_only = PathFilter(["docs/**", "*.md"], ["**/drafts/**"])
    assert docs_only("docs/a/b.txt") and docs_only("README.md") and docs_only("x/y/z.md")
    assert not docs_only("src/main.py") and not docs_only("docs/drafts/x.md")
    assert PathFilter()("anything/at/all.bin")
