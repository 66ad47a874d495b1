"""Git repositories as a source kind: each sync hands in what changed from the last synced commit to the branch head."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from appliance.config import Settings
from appliance.db.catalog import document_id_for
from appliance.db.sources import KnownFile, SourceRecord
from appliance.errors import InvalidInput
from appliance.ingest.intake import NewDocument
from appliance.ingest.parsers import unsupported_reason
from appliance.ingest.pipeline import content_hash
from appliance.ingest.secrets import sensitive_name
from appliance.ingest.sources.files import PathFilter, ignored_name
from appliance.ingest.sources.git import GitChange, GitRepository, MergeCommit, printable_path
from appliance.ingest.sources.gitfetch import check_remote, fetch
from appliance.ingest.sources.protocols import Sink, SourceConfig, SyncResult
from appliance.ingest.sources.remotes import RemotePolicy

log = logging.getLogger(__name__)

JOB_FILES = 200  # files read into one ingest job, so a large first sync never sits in memory whole


def _bad_location(message: str) -> InvalidInput:
    return InvalidInput(message, errors=[{"key": "location", "source": "body", "message": message}])


def repository_path(location: str) -> Path:
    """The absolute path a source's `location` names; empty, relative and unknown-user (`~name/`)
    locations are refused, since they would be read relative to wherever the server was started."""
    if not isinstance(location, str) or not location.strip():
        raise _bad_location("location is required: the absolute path of a git repository on this machine")
    try:
        path = Path(location).expanduser()
    except (RuntimeError, KeyError):  # `~name/...` where this machine has no user `name`
        raise _bad_location(f"location {location!r} names the home directory of an unknown user") from None
    if not path.is_absolute():
        raise _bad_location(
            f"location {location!r} is not an absolute path (a relative one would be read from the "
            "server's working directory)"
        )
    return path


class GitSource:
    """A local repository (bare or not) read through the git command line; nothing is fetched
    unless the source asks for it. Syncs are incremental by commit range, and fall back to a full
    listing when the last synced commit is gone (a force-push)."""

    kind = "git"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.remotes = RemotePolicy(settings.network)

    def source_id(self, name: str, path: str) -> str:
        return f"git:{name}:{path}"

    def _repo(self, location: str) -> GitRepository:
        src = self.settings.sources
        return GitRepository(location, src.git_binary, src.git_timeout_seconds)

    def validate(self, config: SourceConfig) -> SourceConfig:
        """Check the repository and branch exist before the source is recorded."""
        options = config.options
        for key in ("include", "exclude"):
            value = options.get(key) or []
            if isinstance(value, str) or not all(isinstance(p, str) and p for p in value):
                raise InvalidInput(f"{key} must be a list of glob patterns")
        branch = options.get("branch") or "main"
        path = repository_path(config.location)
        repo = self._repo(str(path))
        repo.resolve(branch)
        if options.get("fetch"):
            check_remote(repo, self.remotes)  # refused now, not at the first sync
        return SourceConfig(
            str(path.resolve()),
            {
                "branch": branch,
                "include": list(options.get("include") or []),
                "exclude": list(options.get("exclude") or []),
                "history": bool(options.get("history", False)),
                "fetch": bool(options.get("fetch", False)),
                "github_repo": options.get("github_repo") or "",
            },
        )

    @staticmethod
    def matches_repo(record: SourceRecord, full_name: str, name: str, branch: str | None) -> bool:
        """Whether a GitHub push to `full_name` (`owner/name`) on `branch` is news for this source."""
        if branch is not None and branch != record.config.get("branch"):
            return False
        if record.config.get("github_repo"):
            return record.config["github_repo"].lower() == full_name.lower()
        stem = PurePosixPath(record.location).name.removesuffix(".git")
        return stem.lower() == name.lower()

    def _head(self, repo: GitRepository, config: dict) -> str:
        branch = config.get("branch") or "main"
        if not config.get("fetch"):
            return repo.resolve(branch)
        fetch(repo, self.remotes)
        # In a non-bare clone a fetch moves origin/<branch>, not the local branch.
        try:
            return repo.resolve(f"origin/{branch}")
        except InvalidInput:
            return repo.resolve(branch)

    def sync(self, record: SourceRecord, sink: Sink) -> SyncResult:
        name, collection, config = record.name, record.collection, record.config
        repo = self._repo(record.location)
        head = self._head(repo, config)
        cursor = record.cursor
        if cursor == head:
            return SyncResult(head, {"commit": head, "full": False, "upserts": 0, "deletions": 0, "jobs": []})
        diff = repo.diff(cursor, head)
        known = sink.known_files(name)
        upserts, deletions = self._select(diff.changes, diff.full, known, record, sink)

        jobs = []
        for start in range(0, max(len(upserts), 1), JOB_FILES):
            docs, seen = self._read(repo, record, head, upserts[start : start + JOB_FILES], sink)
            gone = deletions if start == 0 else []
            if start == 0 and config.get("history"):
                docs += [self._merge_document(name, m) for m in repo.merges(head, cursor)]
            job_id = sink.submit(name, collection, docs, [(self.source_id(name, k), self.kind) for k in gone])
            sink.record_files(name, seen, gone)
            if job_id:
                jobs.append(job_id)
        log.info(
            "git source synced",
            extra={
                "source": name,
                "commit": head,
                "full": diff.full,
                "upserts": len(upserts),
                "deletions": len(deletions),
            },
        )
        return SyncResult(
            head,
            {
                "commit": head,
                "previous": cursor,
                "full": diff.full,
                "upserts": len(upserts),
                "deletions": len(deletions),
                "jobs": jobs,
            },
        )

    def _select(
        self,
        changes: list[GitChange],
        full: bool,
        known: dict[str, KnownFile],
        record: SourceRecord,
        sink: Sink,
    ) -> tuple[list[GitChange], list[str]]:
        """The changes worth reading, and the known paths to delete; refusals go to the quarantine."""
        name, collection, config = record.name, record.collection, record.config
        wanted = PathFilter(config.get("include") or (), config.get("exclude") or ())
        limit = self.settings.limits.max_file_bytes
        upserts, deletions, listed = [], [], set()
        for change in changes:
            key = printable_path(change.path)
            if change.action == "delete":
                if key in known:
                    deletions.append(key)
                continue
            listed.add(key)
            if not wanted(key) or any(ignored_name(part) for part in PurePosixPath(key).parts):
                if key in known:
                    deletions.append(key)  # newly excluded by the globs
                continue
            if (pattern := sensitive_name(key, self.settings.hygiene.sensitive_patterns)) is not None:
                if sink.quarantine(
                    name, key, collection, "sensitive", f"sensitive file name ({pattern}): never indexed"
                ):
                    sink.count_secret(pattern)
                continue
            if (old := known.get(key)) is not None and old.fingerprint == change.blob:
                continue
            if change.size is not None and change.size > limit:
                sink.quarantine(
                    name,
                    key,
                    collection,
                    "too_large",
                    f"{change.size} bytes exceeds the limit of {limit} bytes",
                    change.size,
                )
                continue
            upserts.append(change)
        if full:
            deletions += [k for k in known if k not in listed and k not in deletions]
        return upserts, deletions

    def _read(
        self, repo: GitRepository, record: SourceRecord, head: str, changes: list[GitChange], sink: Sink
    ) -> tuple[list[NewDocument], list[KnownFile]]:
        name, collection = record.name, record.collection
        by_blob: dict[str, list[GitChange]] = {}
        for change in changes:
            by_blob.setdefault(change.blob, []).append(change)
        docs, seen = [], []
        for blob, data in repo.read_blobs(list(by_blob), self.settings.limits.max_file_bytes):
            for change in by_blob.get(blob, []):
                key = printable_path(change.path)
                doc_id = document_id_for(collection, self.source_id(name, key))
                seen.append(
                    KnownFile(key, collection, blob, content_hash(data) if data is not None else None, doc_id)
                )
                if data is None:
                    sink.quarantine(name, key, collection, "too_large", "blob exceeds the file size limit")
                    continue
                if (reason := unsupported_reason(data, key)) is not None:
                    sink.quarantine(name, key, collection, "unsupported", reason, len(data))
                    continue
                sink.release(name, key)
                docs.append(
                    NewDocument(
                        source_id=self.source_id(name, key),
                        content=data,
                        filename=key,
                        uri=f"git+file://{repo.path}#{key}",
                        source_kind=self.kind,
                        metadata={
                            "path": key,
                            "commit": head,
                            "branch": record.config.get("branch"),
                            "repository": str(repo.path),
                        },
                    )
                )
        return docs, seen

    @staticmethod
    def _merge_document(name: str, merge: MergeCommit) -> NewDocument:
        """The history of merged changes: one small document per merge commit on the branch."""
        files = "\n".join(f"- {printable_path(f)}" for f in merge.files[:200])
        text = (
            f"# {merge.subject}\n\nMerged {merge.date.isoformat()} by {merge.author} ({merge.sha[:12]}).\n\n"
            f"{merge.body}\n\n## Files changed\n\n{files}\n"
        )
        return NewDocument(
            source_id=f"git:{name}:merge:{merge.sha}",
            title=merge.subject,
            text=text,
            filename=f"merge-{merge.sha[:12]}.md",
            source_kind="git",
            metadata={"commit": merge.sha, "kind": "merge"},
        )
