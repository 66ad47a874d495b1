"""Ordered, named schema migrations, each recorded in the database when applied."""

from __future__ import annotations

import functools
import logging

import duckdb

from appliance.db.connection import Database
from appliance.db.embedders import COLLECTION_EMBEDDERS_SQL
from appliance.db.spine_migrations import SPINE_MIGRATIONS

log = logging.getLogger(__name__)

# 0001-0011 live in spine_migrations; each later one is appended here.
MIGRATIONS: list[tuple[str, str]] = [
    *SPINE_MIGRATIONS,
    (
        "0012_model_registry",
        """
        CREATE TABLE model_families (
            key VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            gate VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE model_versions (
            family VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            backend VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,
            size_bytes BIGINT NOT NULL,
            format VARCHAR NOT NULL,
            quantisation VARCHAR,
            architecture VARCHAR,
            context_length INTEGER,
            chat_template_sha256 VARCHAR,
            licence VARCHAR NOT NULL DEFAULT '',
            tags VARCHAR[] NOT NULL,
            state VARCHAR NOT NULL,
            reason VARCHAR,
            probe JSON,
            source VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (family, version)
        );
        CREATE TABLE model_aliases (
            family VARCHAR NOT NULL,
            alias VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (family, alias)
        );
        CREATE SEQUENCE model_alias_history_ids START 1;
        CREATE TABLE model_alias_history (
            id BIGINT PRIMARY KEY,
            family VARCHAR NOT NULL,
            alias VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            version INTEGER,
            previous_version INTEGER,
            actor VARCHAR NOT NULL,
            reason VARCHAR NOT NULL DEFAULT '',
            gated BOOLEAN NOT NULL,
            gate VARCHAR,
            eval_report_id VARCHAR,
            eval_report JSON,
            moved_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX model_alias_history_family ON model_alias_history (family, id);
        """,
    ),
    (
        # Governed workflows (appliance/workflows/store.py): immutable document versions named by
        # their hash, runs pinned to them, each step's record, the ledger of non-idempotent tool
        # invocations (checked before calling), the effects of builtin.record, and approvals.
        "0013_workflows",
        """
        CREATE TABLE workflow_documents (
            kind VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            body JSON NOT NULL,
            created_by VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (kind, name, version)
        );
        CREATE TABLE workflow_runs (
            id VARCHAR PRIMARY KEY,
            workflow VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            key_id VARCHAR NOT NULL,
            job_id VARCHAR,
            state VARCHAR NOT NULL,
            inputs JSON NOT NULL,
            outputs JSON,
            bundle JSON NOT NULL,
            usage JSON NOT NULL,
            degraded BOOLEAN NOT NULL DEFAULT false,
            flags JSON,
            error VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            pruned_at TIMESTAMPTZ
        );
        CREATE INDEX workflow_runs_key ON workflow_runs (key_id, created_at);
        CREATE TABLE workflow_steps (
            run_id VARCHAR NOT NULL,
            key VARCHAR NOT NULL,
            step_id VARCHAR NOT NULL,
            parent VARCHAR,
            ordinal INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            input JSON,
            output JSON,
            error VARCHAR,
            tokens INTEGER NOT NULL DEFAULT 0,
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            duration_ms DOUBLE,
            usage JSON,
            PRIMARY KEY (run_id, key)
        );
        CREATE TABLE workflow_ledger (
            invocation_id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            step_key VARCHAR NOT NULL,
            tool VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            output JSON,
            calls INTEGER NOT NULL DEFAULT 0,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            finished_at TIMESTAMPTZ
        );
        CREATE TABLE workflow_effects (
            invocation_id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            step_key VARCHAR NOT NULL,
            value JSON,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE workflow_approvals (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            step_key VARCHAR NOT NULL,
            key_id VARCHAR NOT NULL,
            approvers JSON NOT NULL,
            prompt VARCHAR NOT NULL,
            schema JSON,
            state VARCHAR NOT NULL,
            answer JSON,
            answered_by VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            expires_at TIMESTAMPTZ,
            answered_at TIMESTAMPTZ
        );
        CREATE INDEX workflow_approvals_run ON workflow_approvals (run_id);
        """,
    ),
    (
        "0014_planner",
        """
        CREATE TABLE plan_calibrations (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            fingerprint VARCHAR NOT NULL,
            body JSON NOT NULL
        );
        CREATE TABLE plan_recommendations (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            intent JSON NOT NULL,
            candidates JSON NOT NULL
        );
        """,
    ),
    # Per-collection fusion settings chosen by calibration (core/calibration.py): the settings
    # search uses, and the whole CollectionFusion record (what chose them) as JSON.
    (
        "0015_collection_fusion",
        """
        CREATE TABLE collection_fusion (
            collection VARCHAR PRIMARY KEY,
            settings JSON NOT NULL,
            record JSON NOT NULL,
            calibrated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    # Safe rollout of chat models (core/rollout.py): canaries with their schedule and each step's
    # analysis, the shadow setting per family, and the paired outputs the shadow produced.
    (
        "0016_model_rollout",
        """
        CREATE TABLE model_rollouts (
            id VARCHAR PRIMARY KEY,
            family VARCHAR NOT NULL,
            candidate_version INTEGER NOT NULL,
            stable_version INTEGER NOT NULL,
            steps INTEGER[] NOT NULL,
            step INTEGER NOT NULL,
            min_samples INTEGER NOT NULL,
            state VARCHAR NOT NULL,
            reason VARCHAR NOT NULL DEFAULT '',
            actor VARCHAR NOT NULL,
            analyses JSON NOT NULL,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX model_rollouts_family ON model_rollouts (family, state);
        CREATE TABLE model_shadows (
            family VARCHAR PRIMARY KEY,
            version INTEGER NOT NULL,
            share DOUBLE NOT NULL,
            actor VARCHAR NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE SEQUENCE model_shadow_pair_ids START 1;
        CREATE TABLE model_shadow_pairs (
            id BIGINT PRIMARY KEY,
            family VARCHAR NOT NULL,
            shadow_version INTEGER NOT NULL,
            production_model VARCHAR NOT NULL,
            prompt VARCHAR NOT NULL,
            production_output VARCHAR NOT NULL,
            shadow_output VARCHAR,
            similarity DOUBLE,
            citation_overlap DOUBLE,
            production_ms DOUBLE,
            shadow_ms DOUBLE,
            error VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX model_shadow_pairs_family ON model_shadow_pairs (family, shadow_version, id);
        """,
    ),
    # The planner's `plan apply` (what it changed, so a rollback restores it; the latest applied
    # row's settings are re-applied at start) and `plan validate` runs (predicted vs measured).
    (
        "0017_plan_apply",
        """
        CREATE TABLE plan_applies (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            state VARCHAR NOT NULL,
            body JSON NOT NULL
        );
        CREATE TABLE plan_validations (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            body JSON NOT NULL
        );
        """,
    ),
    ("0018_collection_embedders", COLLECTION_EMBEDDERS_SQL),  # db/embedders.py: why and what
    # Remote chat models (models/remote.py): where a `remote` version is served, as a RemoteEndpoint.
    ("0019_remote_models", "ALTER TABLE model_versions ADD COLUMN remote JSON;"),
    # Long-term workflow memory (workflows/memory.py): a summary per succeeded run of a workflow that
    # declares `memory`, read back only by the key that ran it; kept until deleted. The embedding (with
    # the embedder's name: vectors of two embedders are never compared) is null without an embedder.
    (
        "0020_workflow_memories",
        """
        CREATE TABLE workflow_memories (
            id VARCHAR PRIMARY KEY,
            key_id VARCHAR NOT NULL,
            workflow VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            summary VARCHAR NOT NULL,
            embedder VARCHAR,
            embedding FLOAT[],
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX workflow_memories_scope ON workflow_memories (key_id, workflow);
        """,
    ),
]


def migrate(db: Database) -> list[str]:
    """Apply pending migrations in order, each in its own transaction. Returns the names applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in db.fetchall("SELECT name FROM schema_migrations")}
    known = [name for name, _ in MIGRATIONS]
    unknown = done - set(known)
    if unknown:
        raise RuntimeError(f"database has migrations this version does not know: {sorted(unknown)}")
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        with db.transaction() as cur:
            cur.execute(sql)
            cur.execute("INSERT INTO schema_migrations (name) VALUES (?)", [name])
        log.info("applied migration", extra={"migration": name})
        applied.append(name)
    return applied


@functools.cache
def appliance_tables() -> frozenset[str]:
    """The names of the tables the migrations create (the appliance's own, as against tables an
    admin adds), found by applying them to an empty in-memory database."""
    scratch = duckdb.connect(":memory:")
    try:
        for _, sql in MIGRATIONS:
            scratch.execute(sql)
        return frozenset(
            r[0] for r in scratch.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        ) | {"schema_migrations"}
    finally:
        scratch.close()
