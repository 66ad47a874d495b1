"""Syncing a git source: from the last synced commit to the branch head, as ingest jobs."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from appliance.config import Settings
from appliance.db.catalog import document_id_for
from appliance.errors import InvalidInput
from appliance.ingest.intake import NewDocument
from appliance.ingest.parsers import unsupported_reason
from appliance.ingest.pipeline import content_hash
from appliance.ingest.secrets import sensitive_name
from appliance.ingest.sources.files import PathFilter, ignored_name
from appliance.ingest.sources.git import GitRepository, MergeCommit, printable_path
from appliance.ingest.sources.registry import KnownFile

if TYPE_CHECKING:
    from appliance.ingest.sources.service import SourceService

log = logging.getLogger(__name__)

JOB_FILES = 200  # files read into one ingest job, so a large first sync never sits in memory whole


class GitSync:
    def __init__(self, service: SourceService, settings: Settings) -> None:
        self.service = service
        self.settings = settings

    @staticmethod
    def source_id(name: str, path: str) -> str:
        return f"git:{name}:{path}"

    def _repo(self, location: str) -> GitRepository:
        src = self.settings.sources
        return GitRepository(location, src.git_binary, src.git_timeout_seconds)

    def validate(self, location: str, options: dict) -> dict:
        """Check the repository and branch exist before the source is recorded."""
        repo = self._repo(location)
        branch = options.get("branch") or "main"
        repo.resolve(branch)
        for key in ("include", "exclude"):
            value = options.get(key) or []
            if isinstance(value, str) or not all(isinstance(p, str) and p for p in value):
                raise InvalidInput(f"{key} must be a list of glob patterns")
        return {
            "branch": branch,
            "include": list(options.get("include") or []),
            "exclude": list(options.get("exclude") or []),
            "history": bool(options.get("history", False)),
            "fetch": bool(options.get("fetch", False)),
            "github_repo": options.get("github_repo") or "",
        }

    @staticmethod
    def matches_repo(source: dict, full_name: str, name: str, branch: str | None) -> bool:
        config = source["config"]
        if branch is not None and branch != config.get("branch"):
            return False
        if config.get("github_repo"):
            return config["github_repo"].lower() == full_name.lower()
        stem = PurePosixPath(source["location"]).name.removesuffix(".git")
        return stem.lower() == name.lower()

    def sync(self, source: dict) -> dict:
        name, collection, config = source["name"], source["collection"], source["config"]
        repo = self._repo(source["location"])
        branch = config.get("branch") or "main"
        if config.get("fetch"):
            repo.fetch()
            # In a non-bare clone a fetch moves origin/<branch>, not the local branch.
            try:
                head = repo.resolve(f"origin/{branch}")
            except InvalidInput:
                head = repo.resolve(branch)
        else:
            head = repo.resolve(branch)
        cursor = source.get("cursor")
        if cursor == head:
            return {"commit": head, "full": False, "upserts": 0, "deletions": 0, "jobs": []}
        diff = repo.diff(cursor, head)
        store = self.service.store
        known = store.known_files(name)
        wanted = PathFilter(config.get("include") or (), config.get("exclude") or ())
        limit = self.settings.limits.max_file_bytes

        upserts, deletions, listed = [], [], set()
        for change in diff.changes:
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
                if store.quarantine(name, key, collection, "sensitive",
                                    f"sensitive file name ({pattern}): never indexed"):
                    self.service.metrics.count_secret("file", pattern)
                continue
            if (old := known.get(key)) is not None and old.fingerprint == change.blob:
                continue
            if change.size is not None and change.size > limit:
                store.quarantine(name, key, collection, "too_large",
                                 f"{change.size} bytes exceeds the limit of {limit} bytes", change.size)
                continue
            upserts.append(change)
        if diff.full:
            deletions += [k for k in known if k not in listed and k not in deletions]

        jobs = []
        for start in range(0, max(len(upserts), 1), JOB_FILES):
            batch = upserts[start:start + JOB_FILES]
            docs, seen = self._read(repo, name, collection, head, config, batch)
            gone = deletions if start == 0 else []
            if start == 0 and config.get("history"):
                docs += [self._merge_document(name, m) for m in repo.merges(head, cursor)]
            job_id = self.service.submit(name, collection, docs, [(self.source_id(name, k), "git") for k in gone])
            store.record_files(name, seen, gone)
            if job_id:
                jobs.append(job_id)
        log.info("git source synced", extra={"source": name, "commit": head, "full": diff.full,
                                             "upserts": len(upserts), "deletions": len(deletions)})
        return {"commit": head, "previous": cursor, "full": diff.full, "upserts": len(upserts),
                "deletions": len(deletions), "jobs": jobs}

    def _read(self, repo: GitRepository, name: str, collection: str, head: str, config: dict,
              changes: list) -> tuple[list[NewDocument], list[KnownFile]]:
        store = self.service.store
        by_blob: dict[str, list] = {}
        for change in changes:
            by_blob.setdefault(change.blob, []).append(change)
        docs, seen = [], []
        for blob, data in repo.read_blobs(list(by_blob), self.settings.limits.max_file_bytes):
            for change in by_blob.get(blob, []):
                key = printable_path(change.path)
                doc_id = document_id_for(collection, self.source_id(name, key))
                seen.append(KnownFile(key, collection, blob, content_hash(data) if data is not None else None, doc_id))
                if data is None:
                    store.quarantine(name, key, collection, "too_large", "blob exceeds the file size limit")
                    continue
                if (reason := unsupported_reason(data, key)) is not None:
                    store.quarantine(name, key, collection, "unsupported", reason, len(data))
                    continue
                store.release(name, key)
                docs.append(NewDocument(
                    source_id=self.source_id(name, key),
                    content=data,
                    filename=key,
                    uri=f"git+file://{repo.path}#{key}",
                    source_kind="git",
                    metadata={"path": key, "commit": head, "branch": config.get("branch"),
                              "repository": str(repo.path)},
                ))
        return docs, seen

    @staticmethod
    def _merge_document(name: str, merge: MergeCommit) -> NewDocument:
        """The history of merged changes: one small document per merge commit on the branch."""
        files = "\n".join(f"- {printable_path(f)}" for f in merge.files[:200])
        text = (f"# {merge.subject}\n\nMerged {merge.date.isoformat()} by {merge.author} ({merge.sha[:12]}).\n\n"
                f"{merge.body}\n\n## Files changed\n\n{files}\n")
        return NewDocument(
            source_id=f"git:{name}:merge:{merge.sha}", title=merge.subject, text=text,
            filename=f"merge-{merge.sha[:12]}.md", source_kind="git",
            metadata={"commit": merge.sha, "kind": "merge"},
        )
