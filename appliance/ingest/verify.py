"""Chunk verification: re-chunk stored documents from their sources and report those whose chunks are wrong.

Written for issue 10 (two ingest jobs at once could store one document's text under another),
and useful after any suspected damage: a document is checked against the bytes it came from
(a drop-folder file, a git blob at the synced commit, a stored GitHub item), never against itself.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from appliance.db.catalog import Catalog
from appliance.db.connection import Database
from appliance.ingest.chunking import Chunker
from appliance.ingest.pipeline import content_hash
from appliance.ingest.sandbox import DocumentParser

log = logging.getLogger(__name__)


# Verdicts, from worst to best.
DAMAGED = "damaged"  # stored chunks hold text that is not in the document's own source
MISMATCHED = "mismatched"  # every stored chunk is the document's own text, but chunks differ from a re-chunk
AT_RISK = "at_risk"  # no source copy to check against, and ingested while another ingest job ran
UNVERIFIABLE = "unverifiable"  # no source copy to check against
OK = "ok"
VERDICTS = (DAMAGED, MISMATCHED, AT_RISK, UNVERIFIABLE, OK)
MAX_LISTED = 1000  # documents listed by name in one report; counts are always complete


@dataclass(slots=True)
class SourceCopy:
    """The bytes a document was ingested from, as found now, and the filename its parser saw."""

    content: bytes | None
    filename: str | None
    reason: str = ""  # why content is None


@dataclass(slots=True)
class Finding:
    document_id: str
    collection: str
    source_id: str
    verdict: str
    reason: str
    repairable: bool = False  # its source bytes are at hand, so it can be re-ingested from them

    def as_dict(self) -> dict:
        return {
            "document_id": self.document_id,
            "collection": self.collection,
            "source_id": self.source_id,
            "verdict": self.verdict,
            "reason": self.reason,
            "repairable": self.repairable,
        }


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    findings: list[Finding] = field(default_factory=list)  # every verdict but ok, worst first
    repair_job: str | None = None

    def add(self, finding: Finding) -> None:
        self.checked += 1
        self.counts[finding.verdict] += 1
        if finding.verdict != OK:
            self.findings.append(finding)

    def as_dict(self) -> dict:
        ordered = sorted(self.findings, key=lambda f: (VERDICTS.index(f.verdict), f.collection, f.source_id))
        return {
            "checked": self.checked,
            "counts": dict(self.counts),
            "documents": [f.as_dict() for f in ordered[:MAX_LISTED]],
            "listed": min(len(ordered), MAX_LISTED),
            "repair_job": self.repair_job,
        }


def _pieces(chunk_text: str) -> list[str]:
    """The lines a chunk is made of; a chunk is pieces of blocks joined by newlines (a table chunk
    starts with its header, possibly shortened and marked with " …")."""
    out = []
    for line in chunk_text.split("\n"):
        line = line.strip()
        if line.endswith(" …"):
            line = line[:-2].rstrip()
        if line:
            out.append(line)
    return out


class ChunkVerifier:
    """Checks each stored document's chunks against a fresh chunking of its source bytes.

    Two tests, so the check survives a change of chunking rules between versions: every line
    of every stored chunk must occur in the document's own parsed text (else DAMAGED: the
    text came from elsewhere), and the stored chunks must equal a re-chunk (else MISMATCHED:
    pieces missing or cut differently). A chunk whose stored token count disagrees with its
    text is DAMAGED too; that test needs no source.
    """

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        chunker: Chunker,
        parser: DocumentParser,
        redact_secrets: bool = True,
        git_binary: str = "git",
        git_timeout: float = 600.0,
        max_file_bytes: int = 1 << 62,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.chunker = chunker
        self.parser = parser
        self.redact_secrets = redact_secrets
        self.git_binary = git_binary
        self.git_timeout = git_timeout
        self.max_file_bytes = max_file_bytes

    # -- the documents ------------------------------------------------------------------------
    def documents(self, collection: str | None = None) -> list[dict]:
        sql = (
            "SELECT id, collection, source_id, source_kind, uri, content_hash, metadata FROM documents"
            + (" WHERE collection = ?" if collection else "")
            + " ORDER BY collection, source_id"
        )
        rows = self.db.fetchall(sql, [collection] if collection else None)
        return [
            {
                "id": r[0],
                "collection": r[1],
                "source_id": r[2],
                "source_kind": r[3],
                "uri": r[4],
                "content_hash": r[5],
                "metadata": json.loads(r[6]) if r[6] else {},
            }
            for r in rows
        ]

    def verify(
        self,
        documents: Iterable[dict],
        progress: Callable[[int], None] | None = None,
        sources: dict[str, SourceCopy] | None = None,
    ) -> VerifyReport:
        """Check `documents` (rows of documents()); `sources` receives the bytes of every
        document found damaged or mismatched, so a repair can re-ingest exactly those."""
        documents = list(documents)
        copies = self._source_copies(documents)
        at_risk = self._ingested_during_other_jobs()
        report = VerifyReport()
        for n, doc in enumerate(documents, 1):
            copy = copies.get(doc["id"]) or SourceCopy(None, None, "no copy of its source is kept")
            if copy.content is not None and content_hash(copy.content) != doc["content_hash"]:
                copy = SourceCopy(
                    None, None, "its source changed since it was ingested (a sync will re-ingest it)"
                )
            finding = self._check(doc, copy, doc["id"] in at_risk)
            if finding.repairable and sources is not None:
                sources[doc["id"]] = copy
            report.add(finding)
            if progress is not None and (n % 50 == 0 or n == len(documents)):
                progress(n)
        return report

    def _check(self, doc: dict, copy: SourceCopy, at_risk: bool) -> Finding:
        def finding(verdict: str, reason: str, repairable: bool = False) -> Finding:
            return Finding(doc["id"], doc["collection"], doc["source_id"], verdict, reason, repairable)

        stored = self.catalog.chunks_of(doc["id"])
        for chunk in stored:
            if self.chunker.count(chunk.text) != chunk.token_count:
                return finding(
                    DAMAGED,
                    f"chunk {chunk.ordinal}: stored token count {chunk.token_count} does not match its text",
                    copy.content is not None,
                )
        if copy.content is None:
            if at_risk:
                return finding(
                    AT_RISK,
                    f"{copy.reason}, and it was ingested while another ingest job ran: "
                    "submit it again to be sure",
                )
            return finding(UNVERIFIABLE, copy.reason)
        try:
            if self.redact_secrets:
                parsed, _ = self.parser.parse_redacted(copy.content, copy.filename)
            else:
                parsed = self.parser(copy.content, copy.filename)
        except Exception as exc:  # the source no longer parses here: say so, do not stop the check
            return finding(UNVERIFIABLE, f"its source does not parse now: {getattr(exc, 'detail', exc)}")
        own_text = "\n".join(part for b in parsed.blocks for part in (b.header or "", b.text) if part)
        for chunk in stored:
            foreign = [p for p in _pieces(chunk.text) if p not in own_text]
            if foreign:
                return finding(
                    DAMAGED,
                    f"chunk {chunk.ordinal} holds text that is not in this document: {foreign[0][:80]!r}",
                    True,
                )
        fresh = [c.text for c in self.chunker.chunk(parsed)]
        if fresh != [c.text for c in stored]:
            return finding(
                MISMATCHED,
                f"{len(stored)} stored chunks differ from the {len(fresh)} a re-chunk makes "
                "(text missing, or cut differently)",
                True,
            )
        return finding(OK, "")

    # -- where the bytes are --------------------------------------------------------------------
    def _source_copies(self, documents: list[dict]) -> dict[str, SourceCopy]:
        copies: dict[str, SourceCopy] = {}
        git_groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        github = [d for d in documents if d["source_kind"] == "github"]
        for doc in documents:
            uri = doc["uri"] or ""
            if (
                doc["source_kind"] == "git"
                and uri.startswith("git+file://")
                and doc["metadata"].get("commit")
            ):
                git_groups[
                    (
                        doc["metadata"].get("repository") or uri[len("git+file://") :].partition("#")[0],
                        doc["metadata"]["commit"],
                    )
                ].append(doc)
            elif uri.startswith("file://"):
                copies[doc["id"]] = self._file_copy(uri)
        for (repo, commit), docs in git_groups.items():
            copies.update(self._git_copies(repo, commit, docs))
        copies.update(self._github_copies(github))
        return copies

    def _file_copy(self, uri: str) -> SourceCopy:
        path = Path(unquote(urlparse(uri).path))
        try:
            if path.stat().st_size > self.max_file_bytes:
                return SourceCopy(None, None, f"its file {path} is over the file size limit now")
            return SourceCopy(path.read_bytes(), path.name)
        except OSError as exc:
            return SourceCopy(None, None, f"its file {path} cannot be read ({exc.strerror or exc})")

    def _git_copies(self, repo_path: str, commit: str, docs: list[dict]) -> dict[str, SourceCopy]:
        from appliance.ingest.sources.git import GitRepository

        try:
            repo = GitRepository(repo_path, self.git_binary, self.git_timeout)
            blobs = {f.path: f.blob for f in repo.list_files(commit)}
            wanted = {d["id"]: blobs.get(d["metadata"].get("path", "")) for d in docs}
            data = dict(repo.read_blobs([b for b in set(wanted.values()) if b], self.max_file_bytes))
        except Exception as exc:  # repository moved, commit pruned, git missing
            reason = (
                f"its repository {repo_path} at {commit[:12]} cannot be read ({getattr(exc, 'detail', exc)})"
            )
            return {d["id"]: SourceCopy(None, None, reason) for d in docs}
        out = {}
        for doc in docs:
            blob = wanted[doc["id"]]
            content = data.get(blob) if blob else None
            out[doc["id"]] = (
                SourceCopy(content, doc["metadata"].get("path"))
                if content is not None
                else SourceCopy(None, None, f"{doc['metadata'].get('path')} is not in {commit[:12]}")
            )
        return out

    def _github_copies(self, docs: list[dict]) -> dict[str, SourceCopy]:
        from appliance.db.webhooks import WebhookStore
        from appliance.ingest.sources import github

        store = WebhookStore(self.db)
        out = {}
        for doc in docs:
            state = store.item_state(doc["source_id"])
            if state is None:
                out[doc["id"]] = SourceCopy(None, None, "its GitHub item is no longer stored")
                continue
            _, text, _ = github.render_item(state)
            out[doc["id"]] = SourceCopy(text.encode("utf-8"), f"{state['kind']}-{state['number']}.md")
        return out

    # -- which documents could have been hit ------------------------------------------------------
    def _ingested_during_other_jobs(self) -> set[str]:
        """Documents whose chunks were last written by an ingest job that overlapped another one
        in time: the only moments the shared-chunker race (issue 10) could strike."""
        rows = self.db.fetchall(
            """WITH latest AS (
                   SELECT i.document_id, i.job_id,
                          row_number() OVER (PARTITION BY i.document_id ORDER BY j.started_at DESC) AS n
                   FROM job_items i JOIN jobs j ON j.id = i.job_id
                   WHERE i.state = 'done' AND i.action <> 'delete' AND j.kind = 'ingest')
               SELECT DISTINCT l.document_id FROM latest l
               JOIN jobs a ON a.id = l.job_id
               JOIN jobs b ON b.id <> a.id AND b.kind = 'ingest' AND b.started_at IS NOT NULL
                   AND a.started_at IS NOT NULL
                   AND b.started_at < coalesce(a.finished_at, now())
                   AND a.started_at < coalesce(b.finished_at, now())
               WHERE l.n = 1"""
        )
        return {r[0] for r in rows}
