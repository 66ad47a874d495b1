"""Eval sets (versioned, immutable once a run used them), runs with their item outcomes, and gates."""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb
import msgspec

from appliance.db.connection import Database
from appliance.errors import NotFound
from appliance.records import EvalGate, EvalItem, EvalOutcome, EvalRunOptions, EvalSet

_SET_COLUMNS = """s.name, s.version, s.kind, s.description, s.origin, s.collection, s.corpus_documents,
    s.ingest_jobs, s.content_hash, s.created_at,
    (SELECT count(*) FROM eval_items i WHERE i.set_name = s.name AND i.version = s.version) AS item_count,
    (SELECT count(*) FROM eval_items i WHERE i.set_name = s.name AND i.version = s.version
        AND coalesce(json_extract_string(i.item, '$.kind'), 'answerable') = 'answerable') AS answerable,
    (SELECT count(*) FROM eval_items i WHERE i.set_name = s.name AND i.version = s.version
        AND json_extract_string(i.item, '$.kind') = 'unanswerable') AS unanswerable,
    EXISTS (SELECT 1 FROM eval_runs r WHERE r.set_name = s.name AND r.set_version = s.version) AS used"""


class EvalStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- sets -------------------------------------------------------------------------------------
    def save_set(
        self,
        name: str,
        kind: str,
        items: Sequence[EvalItem],
        content_hash: str,
        description: str = "",
        origin: str = "",
        collection: str | None = None,
        corpus_documents: int = 0,
    ) -> tuple[EvalSet, bool]:
        """Store a set's items under `name`: the same content again is the latest version as it
        is; otherwise a new version, except that a latest version no run has used is replaced in
        place. Returns the version and whether anything was written."""
        encoded = [msgspec.json.encode(item).decode() for item in items]

        def work(cur: duckdb.DuckDBPyConnection) -> tuple[int, bool]:
            latest = cur.execute(
                """SELECT version, content_hash, kind,
                          EXISTS (SELECT 1 FROM eval_runs r WHERE r.set_name = ? AND r.set_version = s.version)
                   FROM eval_sets s WHERE name = ? ORDER BY version DESC LIMIT 1""",
                [name, name],
            ).fetchone()
            if latest is not None and latest[1] == content_hash and latest[2] == kind:
                return latest[0], False
            if latest is not None and not latest[3]:
                version = latest[0]
                cur.execute("DELETE FROM eval_items WHERE set_name = ? AND version = ?", [name, version])
                cur.execute("DELETE FROM eval_sets WHERE name = ? AND version = ?", [name, version])
            else:
                version = (latest[0] + 1) if latest is not None else 1
            cur.execute(
                """INSERT INTO eval_sets (name, version, kind, description, origin, collection, corpus_documents,
                       ingest_jobs, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, [], ?)""",
                [name, version, kind, description, origin, collection, corpus_documents, content_hash],
            )
            cur.executemany(
                "INSERT INTO eval_items (set_name, version, ordinal, item) VALUES (?, ?, ?, ?)",
                [(name, version, i, item) for i, item in enumerate(encoded)],
            )
            return version, True

        version, written = self.db.run_in_transaction(work)
        return self.get_set(name, version), written

    def set_ingest_jobs(self, name: str, version: int, jobs: Sequence[str]) -> None:
        self.db.write(
            "UPDATE eval_sets SET ingest_jobs = ? WHERE name = ? AND version = ?", [list(jobs), name, version]
        )

    def get_set(self, name: str, version: int | None = None) -> EvalSet:
        where, params = (
            ("s.name = ?", [name]) if version is None else ("s.name = ? AND s.version = ?", [name, version])
        )
        rows = self.db.fetch_dicts(
            f"SELECT {_SET_COLUMNS} FROM eval_sets s WHERE {where} ORDER BY s.version DESC LIMIT 1", params
        )
        if not rows:
            suffix = f" version {version}" if version is not None else ""
            raise NotFound(f"eval set {name!r}{suffix} does not exist")
        return _set(rows[0])

    def list_sets(self, all_versions: bool = False) -> list[EvalSet]:
        latest = (
            ""
            if all_versions
            else ("WHERE s.version = (SELECT max(version) FROM eval_sets t WHERE t.name = s.name)")
        )
        rows = self.db.fetch_dicts(
            f"SELECT {_SET_COLUMNS} FROM eval_sets s {latest} ORDER BY s.name, s.version"
        )
        return [_set(r) for r in rows]

    def items(self, name: str, version: int, limit: int | None = None) -> list[EvalItem]:
        rows = self.db.fetchall(
            "SELECT item FROM eval_items WHERE set_name = ? AND version = ? ORDER BY ordinal LIMIT ?",
            [name, version, limit if limit is not None else 2**31 - 1],
        )
        return [msgspec.json.decode(r[0], type=EvalItem) for r in rows]

    # -- runs -------------------------------------------------------------------------------------
    def create_run(self, run_id: str, name: str, version: int, job_id: str, options: EvalRunOptions) -> None:
        self.db.write(
            "INSERT INTO eval_runs (id, set_name, set_version, job_id, options) VALUES (?, ?, ?, ?, ?)",
            [run_id, name, version, job_id, msgspec.json.encode(options).decode()],
        )

    def run_row(self, run_id: str) -> dict:
        rows = self.db.fetch_dicts("SELECT * FROM eval_runs WHERE id = ?", [run_id])
        if not rows:
            raise NotFound(f"eval run {run_id!r} does not exist")
        return _run_row(rows[0])

    def run_for_job(self, job_id: str) -> dict:
        rows = self.db.fetch_dicts("SELECT * FROM eval_runs WHERE job_id = ?", [job_id])
        if not rows:
            raise NotFound(f"no eval run for job {job_id!r}")
        return _run_row(rows[0])

    def run_rows(self, set_name: str | None = None, limit: int = 50) -> list[dict]:
        where, params = ("WHERE set_name = ?", [set_name]) if set_name else ("", [])
        rows = self.db.fetch_dicts(
            f"SELECT * FROM eval_runs {where} ORDER BY created_at DESC, id LIMIT ?", [*params, limit]
        )
        return [_run_row(r) for r in rows]

    def add_outcome(self, run_id: str, outcome: EvalOutcome) -> None:
        """Store an item's outcome once (a resumed run, or a duplicate worker, cannot store it twice)."""
        self.db.write(
            "INSERT INTO eval_run_items (run_id, ordinal, outcome) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [run_id, outcome.ordinal, msgspec.json.encode(outcome).decode()],
        )

    def outcomes(self, run_id: str) -> list[EvalOutcome]:
        rows = self.db.fetchall(
            "SELECT outcome FROM eval_run_items WHERE run_id = ? ORDER BY ordinal", [run_id]
        )
        return [msgspec.json.decode(r[0], type=EvalOutcome) for r in rows]

    def done_ordinals(self, run_id: str) -> set[int]:
        return {
            r[0] for r in self.db.fetchall("SELECT ordinal FROM eval_run_items WHERE run_id = ?", [run_id])
        }

    def set_config(self, run_id: str, config: dict) -> None:
        self.db.write("UPDATE eval_runs SET config = ? WHERE id = ?", [json.dumps(config), run_id])

    def finish_run(self, run_id: str, scorecard: dict) -> None:
        self.db.write(
            "UPDATE eval_runs SET scorecard = ?, finished_at = now() WHERE id = ?",
            [json.dumps(scorecard), run_id],
        )

    # -- gates ------------------------------------------------------------------------------------
    def save_gate(self, gate: EvalGate) -> EvalGate:
        self.db.write(
            """INSERT INTO eval_gates (name, gate) VALUES (?, ?)
               ON CONFLICT (name) DO UPDATE SET gate = excluded.gate""",
            [gate.name, msgspec.json.encode(gate).decode()],
        )
        return self.get_gate(gate.name)

    def get_gate(self, name: str) -> EvalGate:
        row = self.db.fetchone("SELECT gate, created_at FROM eval_gates WHERE name = ?", [name])
        if row is None:
            raise NotFound(f"gate {name!r} does not exist")
        return _gate(row)

    def list_gates(self) -> list[EvalGate]:
        return [_gate(r) for r in self.db.fetchall("SELECT gate, created_at FROM eval_gates ORDER BY name")]


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _set(row: dict) -> EvalSet:
    return EvalSet(
        name=row["name"],
        version=row["version"],
        kind=row["kind"],
        description=row["description"],
        origin=row["origin"],
        collection=row["collection"],
        item_count=row["item_count"],
        answerable=row["answerable"] if row["kind"] != "retrieval" else 0,
        unanswerable=row["unanswerable"],
        corpus_documents=row["corpus_documents"],
        ingest_jobs=list(row["ingest_jobs"] or []),
        content_hash=row["content_hash"],
        used=bool(row["used"]),
        created_at=_iso(row["created_at"]),
    )


def _run_row(row: dict) -> dict:
    return {
        **row,
        "options": msgspec.json.decode(row["options"], type=EvalRunOptions),
        "config": json.loads(row["config"]) if row["config"] else {},
        "scorecard": json.loads(row["scorecard"]) if row["scorecard"] else None,
        "created_at": _iso(row["created_at"]),
        "finished_at": _iso(row["finished_at"]),
    }


def _gate(row: tuple) -> EvalGate:
    gate = msgspec.json.decode(row[0], type=EvalGate)
    return msgspec.structs.replace(gate, created_at=_iso(row[1]))
