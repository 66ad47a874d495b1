"""Job rows, their items and leases: the durable state behind every background job."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from appliance.db.connection import Database
from appliance.errors import Conflict, NotFound
from appliance.records import Job, JobItem, Progress

ACTIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One document to ingest (with its raw bytes, so a crash cannot lose it), or to delete."""

    ordinal: int
    document_id: str
    source_id: str
    source_kind: str
    uri: str | None
    title: str | None
    filename: str | None
    content: bytes
    metadata: dict
    # "upsert"; "delete": remove the document (sources that saw it disappear); "reingest": chunk and
    # embed again even if its content is unchanged (repairs chunks found damaged, see ingest/verify.py)
    action: str = "upsert"


_COUNTERS = ("done", "unchanged", "failed")  # an item's outcome, and the job column counting it


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one job item."""

    ordinal: int
    state: str  # one of _COUNTERS
    error: str | None = None
    chunks: int | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, kind: str, collection: str | None, items: Sequence[WorkItem], source: str | None = None
    ) -> str:
        job_id = "job_" + uuid.uuid4().hex[:20]
        rows = [
            (
                job_id,
                it.ordinal,
                it.document_id,
                it.source_id,
                it.source_kind,
                it.uri,
                it.title,
                it.filename,
                it.content,
                json.dumps(it.metadata),
                it.action,
            )
            for it in items
        ]

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            cur.execute(
                "INSERT INTO jobs (id, kind, collection, state, total, source) VALUES (?, ?, ?, 'queued', ?, ?)",
                [job_id, kind, collection, len(items), source],
            )
            if rows:
                # One statement over column lists: executemany ran one insert per item (0.5 s for
                # 500 short documents, all of it inside the POST).
                cur.execute(
                    """INSERT INTO job_items (job_id, ordinal, document_id, source_id, source_kind, uri, title,
                       filename, content, metadata, action)
                       SELECT unnest(?::VARCHAR[]), unnest(?::INTEGER[]), unnest(?::VARCHAR[]),
                              unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]),
                              unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BLOB[]),
                              unnest(?::VARCHAR[])::JSON, unnest(?::VARCHAR[])""",
                    [list(column) for column in zip(*rows, strict=True)],
                )

        self.db.run_in_transaction(work)
        return job_id

    def claim(self, job_id: str, instance: str, lease_seconds: float) -> str | None:
        """Take the job if it is queued, or running under an expired lease or a previous process.

        Returns this run's lease token (`<instance>:<run>`), or None if the job is not to be run
        here. The token, not the process, owns the lease: a run whose job was cancelled and
        retried meanwhile finds its token replaced (renew() says so) and stops, so one job never
        runs on two workers at once."""
        now = _now()
        token = f"{instance}:{uuid.uuid4().hex[:12]}"
        row = self.db.run_in_transaction(
            lambda cur: cur.execute(
                """UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1,
                          started_at = coalesce(started_at, ?)
                   WHERE id = ? AND (state = 'queued' OR (state = 'running'
                         AND (lease_owner IS NULL OR NOT starts_with(lease_owner, ?) OR lease_expires_at < ?)))
                   RETURNING id""",
                [token, now + timedelta(seconds=lease_seconds), now, job_id, f"{instance}:", now],
            ).fetchone()
        )
        return token if row is not None else None

    def renew(self, job_id: str, token: str, lease_seconds: float) -> bool:
        """Extend the lease; False when this run no longer holds it (cancelled, or taken over)."""
        return bool(
            self.db.run_in_transaction(
                lambda cur: cur.execute(
                    """UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND state = 'running'
                   RETURNING id""",
                    [_now() + timedelta(seconds=lease_seconds), job_id, token],
                ).fetchall()
            )
        )

    def pending_items(
        self, job_id: str, limit: int, max_bytes: int | None = None, after: int | None = None
    ) -> list[WorkItem]:
        """The next pending items in order (past ordinal `after`, if given): at most `limit`, and
        (with `max_bytes`) no more than fit in that many bytes of content, but always the first."""
        rows = self.db.fetchall(
            """SELECT ordinal, document_id, source_id, source_kind, uri, title, filename, content, metadata, action
               FROM (SELECT *, sum(coalesce(octet_length(content), 0)) OVER (ORDER BY ordinal
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
                     FROM job_items WHERE job_id = ? AND state = 'pending' AND ordinal > ?
                     ORDER BY ordinal LIMIT ?)
               WHERE ? IS NULL OR coalesce(before, 0) < ? ORDER BY ordinal""",
            [job_id, -1 if after is None else after, limit, max_bytes, max_bytes],
        )
        return [
            WorkItem(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                bytes(r[7] or b""),
                json.loads(r[8]) if r[8] else {},
                r[9],
            )
            for r in rows
        ]

    def finish_item(
        self, job_id: str, ordinal: int, state: str, error: str | None = None, chunks: int | None = None
    ) -> None:
        """Record an item's outcome (see finish_items)."""
        self.finish_items(job_id, [ItemResult(ordinal, state, error, chunks)])

    def finish_items(self, job_id: str, results: Sequence[ItemResult]) -> None:
        """Record a group's outcomes in one transaction. The bytes of a finished item are dropped
        (the document now lives in the catalogue); a failed item keeps them so the job can be
        retried."""
        for result in results:
            if result.state not in _COUNTERS:
                raise ValueError(f"unknown item state {result.state!r}")

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            # Only a pending item changes: two workers may finish the same item (a job retried
            # while its cancelled run ends its group), and only the first one counts.
            finished = cur.execute(
                """UPDATE job_items SET state = r.state, error = r.error, chunks = r.chunks,
                          content = CASE WHEN r.state = 'failed' THEN job_items.content ELSE NULL END
                   FROM (SELECT unnest(?::INTEGER[]) AS ordinal, unnest(?::VARCHAR[]) AS state,
                                unnest(?::VARCHAR[]) AS error, unnest(?::INTEGER[]) AS chunks) r
                   WHERE job_items.job_id = ? AND job_items.ordinal = r.ordinal AND job_items.state = 'pending'
                   RETURNING job_items.state""",
                [
                    [r.ordinal for r in results],
                    [r.state for r in results],
                    [r.error for r in results],
                    [r.chunks for r in results],
                    job_id,
                ],
            ).fetchall()
            counted = Counter(state for (state,) in finished)
            if finished:
                cur.execute(
                    "UPDATE jobs SET done = done + ?, unchanged = unchanged + ?, failed = failed + ? WHERE id = ?",
                    [counted["done"], counted["unchanged"], counted["failed"], job_id],
                )

        if results:
            self.db.run_in_transaction(work)

    def finish(
        self,
        job_id: str,
        state: str,
        error: str | None = None,
        summary: dict | None = None,
        token: str | None = None,
    ) -> None:
        """End a running job; a job cancelled meanwhile stays cancelled. With `token`, only while
        that run still holds the lease (a run that was taken over must not end its successor's)."""
        self.db.run_in_transaction(
            lambda cur: cur.execute(
                """UPDATE jobs SET state = ?, error = ?, summary = coalesce(?, summary), finished_at = now(),
                          lease_owner = NULL
                   WHERE id = ? AND state IN ('queued', 'running') AND (? IS NULL OR lease_owner = ?)""",
                [state, error, json.dumps(summary) if summary is not None else None, job_id, token, token],
            )
        )

    def set_progress(self, job_id: str, total: int, processed: int) -> None:
        """Progress of a job without items (a chunk verification): `processed` of `total` done."""
        self.db.write("UPDATE jobs SET total = ?, done = ? WHERE id = ?", [total, processed, job_id])

    def set_summary(self, job_id: str, summary: dict) -> None:
        self.db.write("UPDATE jobs SET summary = ? WHERE id = ?", [json.dumps(summary), job_id])

    def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job: its worker notices between groups of documents."""
        job = self.get(job_id)
        if job.state not in ACTIVE_STATES:
            raise Conflict(f"job {job_id!r} is {job.state}; only queued or running jobs can be cancelled")
        self.db.run_in_transaction(
            lambda cur: cur.execute(
                """UPDATE jobs SET state = 'cancelled', error = 'cancelled', finished_at = now(), lease_owner = NULL
               WHERE id = ? AND state IN ('queued', 'running')""",
                [job_id],
            )
        )
        return self.get(job_id)

    def retry(self, job_id: str) -> Job:
        """Queue an ended job again: its failed documents (their bytes were kept) and, for a
        cancelled job, the ones it never reached."""
        job = self.get(job_id)
        if job.state not in TERMINAL_STATES:
            raise Conflict(f"job {job_id!r} is {job.state}; wait for it to end before retrying")

        def work(cur: duckdb.DuckDBPyConnection) -> int:
            # The state is checked again inside the transaction: two retries at once must not
            # both queue the job (the second would reset a job the first already started).
            if (
                cur.execute(
                    f"SELECT state FROM jobs WHERE id = ? AND state IN {TERMINAL_STATES}", [job_id]
                ).fetchone()
                is None
            ):
                raise Conflict(f"job {job_id!r} is no longer ended; it was retried already")
            retried = cur.execute(
                """UPDATE job_items SET state = 'pending', error = NULL
                   WHERE job_id = ? AND state = 'failed' AND (content IS NOT NULL OR action = 'delete')
                   RETURNING ordinal""",
                [job_id],
            ).fetchall()
            pending = cur.execute(
                "SELECT count(*) FROM job_items WHERE job_id = ? AND state = 'pending'", [job_id]
            ).fetchone()[0]
            if pending == 0 and job.kind == "ingest":
                return 0
            cur.execute(
                """UPDATE jobs SET state = 'queued', error = NULL, finished_at = NULL, lease_owner = NULL,
                          failed = failed - ? WHERE id = ? AND state IN ('succeeded', 'failed', 'cancelled')""",
                [len(retried), job_id],
            )
            return pending

        if self.db.run_in_transaction(work) == 0 and job.kind == "ingest":
            raise Conflict(f"job {job_id!r} has nothing to retry")
        return self.get(job_id)

    def state(self, job_id: str) -> str:
        row = self.db.fetchone("SELECT state FROM jobs WHERE id = ?", [job_id])
        if row is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return row[0]

    def get(self, job_id: str) -> Job:
        rows = self.db.fetch_dicts("SELECT * FROM jobs WHERE id = ?", [job_id])
        if not rows:
            raise NotFound(f"job {job_id!r} does not exist")
        return self._present(rows[0])

    def items(self, job_id: str) -> list[JobItem]:
        rows = self.db.fetch_dicts(
            """SELECT ordinal, document_id, source_id, action, state, error, chunks FROM job_items
               WHERE job_id = ? ORDER BY ordinal""",
            [job_id],
        )
        return [JobItem(**r) for r in rows]

    def list(
        self, collections: Sequence[str] | None = None, state: str | None = None, limit: int = 50
    ) -> list[Job]:
        where, params = [], []
        if collections is not None:
            where.append("collection IN (SELECT unnest(?))")
            params.append(list(collections))
        if state:
            where.append("state = ?")
            params.append(state)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.db.fetch_dicts(sql + " ORDER BY created_at DESC LIMIT ?", [*params, limit])
        return [self._present(r) for r in rows]

    def active_for_source(self, source: str, kind: str) -> list[str]:
        """Queued or running jobs of one kind that a source created, oldest first."""
        return [
            r[0]
            for r in self.db.fetchall(
                """SELECT id FROM jobs WHERE source = ? AND kind = ? AND state IN ('queued', 'running')
               ORDER BY created_at""",
                [source, kind],
            )
        ]

    def queued_before(self, seconds: float) -> list[str]:
        """Jobs still queued `seconds` after they were created (a worker picks a signalled job up
        within a second when one is free): the ones whose signal may have been lost."""
        return [
            r[0]
            for r in self.db.fetchall(
                """SELECT id FROM jobs WHERE state = 'queued'
                   AND created_at < now() - to_microseconds(CAST(? * 1e6 AS BIGINT)) ORDER BY created_at""",
                [seconds],
            )
        ]

    def active_ids(self) -> list[str]:
        return [
            r[0]
            for r in self.db.fetchall(
                "SELECT id FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at"
            )
        ]

    @staticmethod
    def _present(row: dict) -> Job:
        total = row["total"] or 0
        processed = row["done"] + row["unchanged"] + row["failed"]
        return Job(
            id=row["id"],
            kind=row["kind"],
            collection=row["collection"],
            source=row.get("source"),
            state=row["state"],
            progress=Progress(
                total=total,
                processed=processed,
                indexed=row["done"],
                unchanged=row["unchanged"],
                failed=row["failed"],
                fraction=(processed / total) if total else 1.0,
            ),
            error=row["error"],
            summary=json.loads(row["summary"]) if row.get("summary") else None,
            attempts=row["attempts"],
            created_at=row["created_at"].isoformat() if row["created_at"] else None,
            started_at=row["started_at"].isoformat() if row["started_at"] else None,
            finished_at=row["finished_at"].isoformat() if row["finished_at"] else None,
        )
