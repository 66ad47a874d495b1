"""Workflow state in DuckDB: document versions, runs, step records, the invocation ledger and approvals."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from appliance.db.connection import Database
from appliance.errors import Conflict, NotFound
from appliance.workflow_records import Approval, RunStep, WorkflowDocument, WorkflowRun
from appliance.workflows.memory import MemoryRecords

ACTIVE_RUN_STATES = ("queued", "running", "waiting")
ENDED_RUN_STATES = ("succeeded", "degraded", "failed", "cancelled")


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


def _load(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def _now() -> datetime:
    return datetime.now(UTC)


class LedgerRecords:
    """The ledger of non-idempotent invocations (checked before each call) and builtin.record's effects."""

    db: Database

    # -- the ledger of non-idempotent invocations ------------------------------------------------
    def ledger_entry(self, invocation_id: str) -> dict | None:
        rows = self.db.fetch_dicts("SELECT * FROM workflow_ledger WHERE invocation_id = ?", [invocation_id])
        return rows[0] if rows else None

    def ledger_begin(self, invocation_id: str, run_id: str, step_key: str, tool: str) -> None:
        self.db.run_in_transaction(
            lambda cur: cur.execute(
                """INSERT INTO workflow_ledger (invocation_id, run_id, step_key, tool, state, calls)
                   VALUES (?, ?, ?, ?, 'started', 1)
                   ON CONFLICT (invocation_id) DO UPDATE SET calls = workflow_ledger.calls + 1""",
                [invocation_id, run_id, step_key, tool],
            )
        )

    def ledger_end(self, invocation_id: str, state: str, output: Any) -> None:
        self.db.write(
            "UPDATE workflow_ledger SET state = ?, output = ?, finished_at = now() WHERE invocation_id = ?",
            [state, json.dumps(output), invocation_id],
        )

    def ledger(self, run_id: str) -> list[dict]:
        return self.db.fetch_dicts(
            "SELECT * FROM workflow_ledger WHERE run_id = ? ORDER BY step_key", [run_id]
        )

    def record_effect(self, invocation_id: str, run_id: str, step: str, value: Any) -> bool:
        rows = self.db.run_in_transaction(
            lambda cur: cur.execute(
                """INSERT INTO workflow_effects (invocation_id, run_id, step_key, value) VALUES (?, ?, ?, ?)
                   ON CONFLICT DO NOTHING RETURNING invocation_id""",
                [invocation_id, run_id, step, json.dumps(value)],
            ).fetchall()
        )
        return bool(rows)

    def effects(self, run_id: str) -> list[dict]:
        return self.db.fetch_dicts(
            "SELECT * FROM workflow_effects WHERE run_id = ? ORDER BY step_key", [run_id]
        )


class ApprovalRecords:
    """Approvals: created by a run, answered once before they expire."""

    db: Database

    # -- approvals -----------------------------------------------------------------------------
    def approval_for(self, run_id: str, step_key: str) -> dict | None:
        rows = self.db.fetch_dicts(
            "SELECT * FROM workflow_approvals WHERE run_id = ? AND step_key = ?", [run_id, step_key]
        )
        return rows[0] if rows else None

    def approval_keys(self, run_id: str, prefix: str) -> list[str]:
        rows = self.db.fetchall(
            """SELECT step_key FROM workflow_approvals WHERE run_id = ? AND starts_with(step_key, ?)
               ORDER BY created_at""",
            [run_id, prefix],
        )
        return [r[0] for r in rows]

    def create_approval(
        self,
        run_id: str,
        step_key: str,
        key_id: str,
        approvers: list[str],
        prompt: str,
        schema: dict | None,
        expires_in_s: float | None,
    ) -> dict:
        approval_id = "apr_" + uuid.uuid4().hex[:20]
        expires = _now() + timedelta(seconds=expires_in_s) if expires_in_s else None
        self.db.write(
            """INSERT INTO workflow_approvals (id, run_id, step_key, key_id, approvers, prompt, schema, state,
                      expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)""",
            [
                approval_id,
                run_id,
                step_key,
                key_id,
                json.dumps(approvers),
                prompt,
                json.dumps(schema),
                expires,
            ],
        )
        return self.approval_row(approval_id)

    def approval_row(self, approval_id: str) -> dict:
        rows = self.db.fetch_dicts("SELECT * FROM workflow_approvals WHERE id = ?", [approval_id])
        if not rows:
            raise NotFound(f"approval {approval_id!r} does not exist")
        return rows[0]

    def answer_approval(self, approval_id: str, answer: Any, by: str) -> None:
        """Record the one answer; a second (or one after expiry) is a 409."""
        rows = self.db.run_in_transaction(
            lambda cur: cur.execute(
                """UPDATE workflow_approvals SET state = 'answered', answer = ?, answered_by = ?, answered_at = now()
                   WHERE id = ? AND state = 'pending' AND (expires_at IS NULL OR expires_at > now())
                   RETURNING id""",
                [json.dumps(answer), by, approval_id],
            ).fetchall()
        )
        if not rows:
            row = self.approval_row(approval_id)
            state = "expired" if row["state"] == "pending" else row["state"]
            raise Conflict(f"approval {approval_id!r} is {state}; it takes one answer, before it expires")

    def close_approvals(self, run_id: str) -> None:
        """A cancelled run's pending approvals can no longer be answered."""
        self.db.write(
            "UPDATE workflow_approvals SET state = 'cancelled' WHERE run_id = ? AND state = 'pending'",
            [run_id],
        )

    def expire_approval(self, approval_id: str) -> bool:
        return bool(
            self.db.run_in_transaction(
                lambda cur: cur.execute(
                    """UPDATE workflow_approvals SET state = 'expired' WHERE id = ? AND state = 'pending'
                       AND expires_at <= now() RETURNING id""",
                    [approval_id],
                ).fetchall()
            )
        )

    def due_approvals(self) -> list[dict]:
        return self.db.fetch_dicts(
            "SELECT * FROM workflow_approvals WHERE state = 'pending' AND expires_at IS NOT NULL AND expires_at <= now()"
        )

    def approvals(self, key_id: str | None, state: str | None = None, limit: int = 100) -> list[Approval]:
        where, params = [], []
        if key_id is not None:
            # Those of the key's runs, and those that name the key among their approvers.
            where.append("(key_id = ? OR list_contains(from_json(approvers, '[\"VARCHAR\"]'), ?))")
            params += [key_id, key_id]
        if state:
            where.append("state = ?")
            params.append(state)
        sql = "SELECT * FROM workflow_approvals" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.db.fetch_dicts(sql + " ORDER BY created_at DESC LIMIT ?", [*params, limit])
        return [self.present_approval(r) for r in rows]

    @staticmethod
    def present_approval(row: dict) -> Approval:
        return Approval(
            id=row["id"],
            run_id=row["run_id"],
            step=row["step_key"],
            state=row["state"],
            prompt=row["prompt"],
            approvers=json.loads(row["approvers"]),
            schema=_load(row["schema"]),
            answer=_load(row["answer"]),
            answered_by=row["answered_by"],
            created_at=row["created_at"].isoformat(),
            expires_at=_iso(row["expires_at"]),
            answered_at=_iso(row["answered_at"]),
        )


class WorkflowStore(LedgerRecords, ApprovalRecords, MemoryRecords):
    """Documents, runs and step records; the ledger, approvals and memories come from their own bases."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- documents -----------------------------------------------------------------------------
    def put_document(self, kind: str, name: str, version: str, body: dict, created_by: str) -> bool:
        """Store a version; False when that exact version was stored already."""
        rows = self.db.run_in_transaction(
            lambda cur: cur.execute(
                """INSERT INTO workflow_documents (kind, name, version, body, created_by) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING RETURNING version""",
                [kind, name, version, json.dumps(body), created_by],
            ).fetchall()
        )
        if rows:
            return True
        # Applying an older version again makes it the latest once more.
        self.db.write(
            "UPDATE workflow_documents SET created_at = now() WHERE kind = ? AND name = ? AND version = ?",
            [kind, name, version],
        )
        return False

    def latest_bodies(self, kind: str) -> dict[str, dict]:
        rows = self.db.fetchall(
            # The kind filters before the window: a Tool and a Workflow may share a name.
            """SELECT name, body FROM workflow_documents WHERE kind = ? QUALIFY row_number() OVER
               (PARTITION BY name ORDER BY created_at DESC) = 1""",
            [kind],
        )
        return {r[0]: json.loads(r[1]) for r in rows}

    def documents(self, kind: str | None = None, name: str | None = None) -> list[WorkflowDocument]:
        """Latest version of each document (every version of `name`, when given)."""
        where, params = [], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if name:
            where.append("name = ?")
            params.append(name)
        sql = "SELECT kind, name, version, created_at, body FROM workflow_documents"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        if name is None:
            sql += " QUALIFY row_number() OVER (PARTITION BY kind, name ORDER BY created_at DESC) = 1"
        rows = self.db.fetchall(sql + " ORDER BY kind, name, created_at DESC", params)
        return [
            WorkflowDocument(
                kind=r[0],
                name=r[1],
                version=r[2],
                created_at=r[3].isoformat(),
                body=json.loads(r[4]) if name else None,
            )
            for r in rows
        ]

    # -- runs ----------------------------------------------------------------------------------
    def create_run(
        self, workflow: str, version: str, key_id: str, inputs: dict, bundle: dict, usage: dict
    ) -> str:
        run_id = "wfr_" + uuid.uuid4().hex[:20]
        self.db.write(
            """INSERT INTO workflow_runs (id, workflow, version, key_id, state, inputs, bundle, usage)
               VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)""",
            [run_id, workflow, version, key_id, json.dumps(inputs), json.dumps(bundle), json.dumps(usage)],
        )
        return run_id

    def set_job(self, run_id: str, job_id: str) -> None:
        self.db.write("UPDATE workflow_runs SET job_id = ? WHERE id = ?", [job_id, run_id])

    def run_row(self, run_id: str) -> dict:
        rows = self.db.fetch_dicts("SELECT * FROM workflow_runs WHERE id = ?", [run_id])
        if not rows:
            raise NotFound(f"run {run_id!r} does not exist")
        return rows[0]

    def run_for_job(self, job_id: str) -> str | None:
        row = self.db.fetchone("SELECT id FROM workflow_runs WHERE job_id = ?", [job_id])
        return row[0] if row else None

    def set_state(self, run_id: str, state: str, only_from: tuple[str, ...] = ACTIVE_RUN_STATES) -> bool:
        started = "coalesce(started_at, now())" if state == "running" else "started_at"
        return bool(
            self.db.run_in_transaction(
                lambda cur: cur.execute(
                    f"""UPDATE workflow_runs SET state = ?, started_at = {started}
                        WHERE id = ? AND state IN (SELECT unnest(?)) RETURNING id""",
                    [state, run_id, list(only_from)],
                ).fetchall()
            )
        )

    def finish_run(
        self,
        run_id: str,
        state: str,
        outputs: dict | None,
        error: str | None,
        degraded: bool,
        flags: dict,
        usage: dict | None = None,
    ) -> bool:
        """End an active run (with its final usage, in the same statement, so a reader that sees it
        ended sees its usage too); False when it had ended already."""
        return bool(
            self.db.run_in_transaction(
                lambda cur: cur.execute(
                    """UPDATE workflow_runs SET state = ?, outputs = ?, error = ?, degraded = ?, flags = ?,
                              usage = coalesce(?, usage), finished_at = now()
                       WHERE id = ? AND state IN ('queued', 'running', 'waiting') RETURNING id""",
                    [
                        state,
                        json.dumps(outputs),
                        error,
                        degraded,
                        json.dumps(flags),
                        json.dumps(usage) if usage is not None else None,
                        run_id,
                    ],
                ).fetchall()
            )
        )

    def save_progress(self, run_id: str, usage: dict, degraded: bool, flags: dict) -> None:
        """A run that pauses (for approvals) or is interrupted keeps what it has so far."""
        self.db.write(
            "UPDATE workflow_runs SET usage = ?, degraded = ?, flags = ? WHERE id = ?",
            [json.dumps(usage), degraded, json.dumps(flags), run_id],
        )

    def runs(self, key_id: str | None, limit: int = 50, state: str | None = None) -> list[WorkflowRun]:
        where, params = [], []
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if state:
            where.append("state = ?")
            params.append(state)
        sql = "SELECT * FROM workflow_runs" + (" WHERE " + " AND ".join(where) if where else "")
        return [
            self.present(r)
            for r in self.db.fetch_dicts(sql + " ORDER BY created_at DESC LIMIT ?", [*params, limit])
        ]

    def prune(self, ended_before: datetime) -> int:
        """Retention: runs ended before then keep their outcome and each step's state, attempts and
        timings; step inputs, nested steps' outputs and ledger outputs go. Returns runs pruned."""

        def work(cur: duckdb.DuckDBPyConnection) -> int:
            ids = [
                r[0]
                for r in cur.execute(
                    """SELECT id FROM workflow_runs WHERE pruned_at IS NULL AND finished_at < ?
                       AND state IN ('succeeded', 'degraded', 'failed', 'cancelled')""",
                    [ended_before],
                ).fetchall()
            ]
            if ids:
                cur.execute(
                    """UPDATE workflow_steps SET input = NULL, usage = NULL,
                              output = CASE WHEN parent IS NULL THEN output ELSE NULL END
                       WHERE run_id IN (SELECT unnest(?))""",
                    [ids],
                )
                cur.execute(
                    "UPDATE workflow_ledger SET output = NULL WHERE run_id IN (SELECT unnest(?))", [ids]
                )
                cur.execute(
                    "UPDATE workflow_runs SET pruned_at = now() WHERE id IN (SELECT unnest(?))", [ids]
                )
            return len(ids)

        return self.db.run_in_transaction(work)

    def active_runs(self) -> list[dict]:
        return self.db.fetch_dicts(
            "SELECT * FROM workflow_runs WHERE state IN ('queued', 'running', 'waiting')"
        )

    @staticmethod
    def present(row: dict, steps: list[RunStep] | None = None) -> WorkflowRun:
        bundle = json.loads(row["bundle"])
        return WorkflowRun(
            id=row["id"],
            workflow=row["workflow"],
            version=row["version"],
            state=row["state"],
            inputs=json.loads(row["inputs"]),
            outputs=_load(row["outputs"]),
            error=row["error"],
            degraded=row["degraded"],
            usage=json.loads(row["usage"]),
            pins=bundle.get("pins", {}),
            job_id=row["job_id"],
            created_at=row["created_at"].isoformat(),
            finished_at=_iso(row["finished_at"]),
            flags=_load(row["flags"]) or {},
            pruned_at=_iso(row["pruned_at"]),
            steps=steps or [],
        )

    # -- steps ---------------------------------------------------------------------------------
    def steps(self, run_id: str) -> dict[str, dict]:
        rows = self.db.fetch_dicts(
            "SELECT * FROM workflow_steps WHERE run_id = ? ORDER BY ordinal, key", [run_id]
        )
        return {r["key"]: r for r in rows}

    def step_records(self, run_id: str) -> list[RunStep]:
        return [
            RunStep(
                id=r["step_id"],
                key=r["key"],
                parent=r["parent"],
                kind=r["kind"],
                state=r["state"],
                attempts=r["attempts"],
                input=_load(r["input"]),
                output=_load(r["output"]),
                error=r["error"],
                tokens=r["tokens"],
                started_at=_iso(r["started_at"]),
                finished_at=_iso(r["finished_at"]),
                duration_ms=r["duration_ms"],
            )
            for r in self.steps(run_id).values()
        ]

    def begin_step(
        self,
        run_id: str,
        key: str,
        step_id: str,
        parent: str | None,
        ordinal: int,
        kind: str,
        input: Any,
        first: bool = True,
    ) -> int:
        """Mark a step running (one more attempt); returns its attempt number. `first`: the run has
        no record of this step yet (a plain insert, the cheap case)."""
        if first:
            self.db.write(
                """INSERT INTO workflow_steps (run_id, key, step_id, parent, ordinal, kind, state, attempts, input,
                          started_at) VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, now())""",
                [run_id, key, step_id, parent, ordinal, kind, json.dumps(input)],
            )
            return 1
        rows = self.db.write(
            """UPDATE workflow_steps SET state = 'running', attempts = attempts + 1, input = ?, error = NULL
               WHERE run_id = ? AND key = ? RETURNING attempts""",
            [json.dumps(input), run_id, key],
        )
        return rows[0][0]

    def count_attempt(self, run_id: str, key: str) -> None:
        self.db.write(
            "UPDATE workflow_steps SET attempts = attempts + 1 WHERE run_id = ? AND key = ?", [run_id, key]
        )

    def end_step(
        self,
        run_id: str,
        key: str,
        state: str,
        output: Any = None,
        error: str | None = None,
        tokens: int = 0,
        duration_ms: float | None = None,
        usage: dict | None = None,
    ) -> None:
        """Record a step's outcome with the run's usage at that moment (one statement: a resumed
        run takes its usage from its latest step)."""
        self.db.write(
            """UPDATE workflow_steps SET state = ?, output = ?, error = ?, tokens = tokens + ?,
                      finished_at = now(), duration_ms = ?, usage = ? WHERE run_id = ? AND key = ?""",
            [
                state,
                json.dumps(output),
                error,
                tokens,
                duration_ms,
                json.dumps(usage) if usage else None,
                run_id,
                key,
            ],
        )

    def latest_usage(self, run_id: str) -> dict | None:
        row = self.db.fetchone(
            """SELECT usage FROM workflow_steps WHERE run_id = ? AND usage IS NOT NULL
               ORDER BY finished_at DESC LIMIT 1""",
            [run_id],
        )
        return json.loads(row[0]) if row else None
