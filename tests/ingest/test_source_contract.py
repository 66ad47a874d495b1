"""One contract every source kind passes (git repositories, the drop folder), through a real SourceService."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.db.catalog import Catalog
from appliance.db.connection import Database
from appliance.db.jobs import JobStore
from appliance.db.migrations import migrate
from appliance.db.sources import SourceRecord
from appliance.errors import InvalidInput
from appliance.ingest.sources.protocols import Source, SourceConfig
from appliance.ingest.sources.registry import KINDS
from appliance.ingest.sources.service import SourceService
from appliance.observability.metrics import Metrics
from appliance.records import JobItem

MAX_FILE_BYTES = 4096
_GIT_ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
}


@dataclass
class World:
    """A source service on a real DuckDB, and the place its source of one kind reads from."""

    service: SourceService
    jobs: JobStore
    metrics: Metrics
    root: Path  # where files are put, as the source will see them
    name: str  # the source's name among the sources
    kind: str

    @property
    def source(self) -> Source:
        """A source of this kind as the registry makes them (the service holds one just like it)."""
        return KINDS.create(self.kind, self.service.settings)

    def record(self) -> SourceRecord:
        return self.service.store.record(self.name)

    def sync(self) -> dict:
        """One sync job run the way the job runner runs it; its summary."""
        job_id = self.jobs.create("sync", self.record().collection, [], source=self.name)
        self.service.run_sync(self.jobs.get(job_id))
        job = self.jobs.get(job_id)
        assert job.state == "succeeded", job
        return job.summary

    def ingest_items(self, summary: dict) -> list[JobItem]:
        return [item for job_id in summary["jobs"] for item in self.jobs.items(job_id)]


def make_world(tmp_path: Path, kind: str, name: str, root: Path, dropfolder: bool) -> Iterator[World]:
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp_path / "data"),
            "limits": {"max_file_bytes": MAX_FILE_BYTES},
            "dropfolder": {"enabled": dropfolder, "path": str(root.parent), "settle_seconds": 0},
        },
    )
    db = Database(tmp_path / "data" / "appliance.duckdb")
    migrate(db)
    jobs, metrics = JobStore(db), Metrics()
    service = SourceService(settings, db, Catalog(db), jobs, lambda _job: None, metrics)
    yield World(service, jobs, metrics, root, name, kind)
    db.close()


class SourceContract:
    """Subclasses provide a `world` fixture (a source of their kind holding README.md, not yet
    synced) and `publish`, which makes what was written visible to the source."""

    def publish(self, world: World) -> None:
        """Nothing to do for sources that read the files where they lie."""

    def put(self, world: World, path: str, content: bytes) -> None:
        target = world.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)

    def key(self, world: World, path: str) -> str:
        """How the source records `path` among its known files."""
        return path

    def valid_config(self, world: World) -> SourceConfig | None:
        """A configuration an admin could add (None: this kind is not added by hand)."""
        return None

    def invalid_config(self, world: World) -> SourceConfig:
        raise NotImplementedError

    # -- the contract ---------------------------------------------------------------------------
    def test_is_a_registered_source(self, world):
        assert isinstance(world.source, Source)
        assert world.source.kind == world.kind == world.record().kind
        assert world.kind in KINDS.kinds()

    def test_validate_refuses_what_cannot_work_and_is_stable(self, world):
        with pytest.raises(InvalidInput):
            world.source.validate(self.invalid_config(world))
        config = self.valid_config(world)
        if config is not None:
            checked = world.source.validate(config)
            assert Path(checked.location).is_absolute()
            assert world.source.validate(checked) == checked

    def test_first_sync_hands_in_every_file_then_nothing(self, world):
        self.put(world, "docs/a.md", b"# A\n\nAlpha.\n")
        self.put(world, "b.txt", b"Bravo.\n")
        self.publish(world)
        items = world.ingest_items(world.sync())
        known = world.service.known_files(world.name)
        expected = {self.key(world, p) for p in ("README.md", "docs/a.md", "b.txt")}
        assert set(known) == expected
        assert sorted(i.source_id for i in items) == sorted(
            world.source.source_id(world.name, k) for k in expected
        )
        assert {i.action for i in items} == {"upsert"}
        assert {i.document_id for i in items} == {f.document_id for f in known.values()}
        assert world.sync()["jobs"] == []

    def test_changed_and_removed_files(self, world):
        self.put(world, "a.md", b"# A\n\nFirst.\n")
        self.put(world, "b.md", b"# B\n\nSoon gone.\n")
        self.publish(world)
        world.sync()
        self.put(world, "a.md", b"# A\n\nSecond, and longer.\n")
        (world.root / "b.md").unlink()
        self.publish(world)
        items = world.ingest_items(world.sync())
        assert sorted((i.source_id, i.action) for i in items) == [
            (world.source.source_id(world.name, self.key(world, "a.md")), "upsert"),
            (world.source.source_id(world.name, self.key(world, "b.md")), "delete"),
        ]
        assert self.key(world, "b.md") not in world.service.known_files(world.name)

    def test_refusals_are_quarantined_counted_once_and_released_when_fixed(self, world):
        self.put(world, "deploy.pem", b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
        self.put(world, "empty.md", b"")
        self.put(world, "huge.txt", b"x" * (MAX_FILE_BYTES + 1))
        self.publish(world)
        items = world.ingest_items(world.sync())
        assert world.source.source_id(world.name, self.key(world, "README.md")) in {
            i.source_id for i in items
        }
        assert len(items) == 1
        self.put(world, "README.md", b"# Readme\n\nChanged, so the next sync has work.\n")
        self.publish(world)
        world.sync()
        kinds = {q.path: q.kind for q in world.service.quarantined(None, world.name, 50)}
        assert kinds == {
            self.key(world, "deploy.pem"): "sensitive",
            self.key(world, "empty.md"): "unsupported",
            self.key(world, "huge.txt"): "too_large",
        }
        assert self.file_secrets(world) == 1

        self.put(world, "empty.md", b"# Now it has words\n")
        self.publish(world)
        items = world.ingest_items(world.sync())
        assert [i.source_id for i in items] == [
            world.source.source_id(world.name, self.key(world, "empty.md"))
        ]
        assert self.key(world, "empty.md") not in {
            q.path for q in world.service.quarantined(None, world.name, 50)
        }

    @staticmethod
    def file_secrets(world: World) -> float:
        return sum(
            s.value
            for metric in world.metrics.registry.collect()
            for s in metric.samples
            if s.name == "rag_secrets_total" and s.labels.get("where") == "file"
        )


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=_GIT_ENV, capture_output=True, check=True, text=True)
    return done.stdout.strip()


class TestGitSource(SourceContract):
    @pytest.fixture
    def world(self, tmp_path):
        repo = tmp_path / "handbook"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "README.md").write_text("# Readme\n")
        self.commit(repo)
        for world in make_world(tmp_path, "git", "handbook", repo, dropfolder=False):
            world.service.add("git", "handbook", "eng", str(repo))
            yield world

    @staticmethod
    def commit(repo: Path) -> None:
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", "change")

    def publish(self, world: World) -> None:
        self.commit(world.root)

    def valid_config(self, world: World) -> SourceConfig | None:
        return SourceConfig(str(world.root / ".." / world.root.name), {"include": ["docs/**"]})

    def invalid_config(self, world: World) -> SourceConfig:
        return SourceConfig(str(world.root), {"branch": "no-such-branch"})

    def test_cursor_is_the_synced_commit(self, world):
        head = git(world.root, "rev-parse", "HEAD")
        assert world.sync()["commit"] == head
        assert world.record().cursor == head

    def test_remove_deletes_the_documents_it_handed_in(self, world):
        world.sync()
        removed = world.service.remove("handbook", delete_documents=True)
        items = world.jobs.items(removed.deleted_documents_job)
        assert [(i.source_id, i.action) for i in items] == [("git:handbook:README.md", "delete")]
        assert world.service.list(None) == []


class TestDropFolder(SourceContract):
    @pytest.fixture
    def world(self, tmp_path):
        folder = tmp_path / "inbox" / "eng"
        folder.mkdir(parents=True)
        (folder / "README.md").write_text("# Readme\n")
        yield from make_world(tmp_path, "dropfolder", "inbox", folder, dropfolder=True)

    def key(self, world: World, path: str) -> str:
        return f"eng/{path}"

    def invalid_config(self, world: World) -> SourceConfig:
        return SourceConfig(str(world.root), {})

    def test_is_kept_by_the_service_not_by_hand(self, world):
        with pytest.raises(InvalidInput):
            world.service.add("dropfolder", "more", "eng", str(world.root))
        with pytest.raises(InvalidInput):
            world.service.remove("inbox")
        assert world.service.request_sync("inbox") == ""  # a poke of the watcher, not a job
