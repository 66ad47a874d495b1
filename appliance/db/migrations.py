"""Ordered, named schema migrations, each recorded in the database when applied."""

from __future__ import annotations

import logging

from appliance.db.connection import Database
from appliance.db.embedders import COLLECTION_EMBEDDERS_SQL

log = logging.getLogger(__name__)

# The audit log (observability/audit.py): seq is assigned by AuditLog under its chain lock (see append).
# No secondary indexes: DuckDB scans this table fast, and each index slows the append.
AUDIT_MIGRATION_SQL = """
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    key_id VARCHAR,
    key_name VARCHAR,
    role VARCHAR,
    action VARCHAR NOT NULL,
    target VARCHAR,
    outcome VARCHAR NOT NULL,
    status INTEGER,
    client VARCHAR,
    detail JSON,
    prev_hash VARCHAR NOT NULL,
    hash VARCHAR NOT NULL
);
"""

# Append only: never edit or reorder a step that has shipped.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_catalogue",
        """
        CREATE TABLE collections (
            name VARCHAR PRIMARY KEY,
            description VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE documents (
            id VARCHAR PRIMARY KEY,
            collection VARCHAR NOT NULL,
            source_id VARCHAR NOT NULL,
            source_kind VARCHAR NOT NULL,
            uri VARCHAR,
            title VARCHAR NOT NULL DEFAULT '',
            content_hash VARCHAR NOT NULL,
            mime_type VARCHAR NOT NULL,
            size_bytes BIGINT NOT NULL,
            metadata JSON,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX documents_collection ON documents (collection);
        CREATE SEQUENCE chunk_ids START 1;
        CREATE TABLE chunks (
            id BIGINT PRIMARY KEY,
            document_id VARCHAR NOT NULL,
            ordinal INTEGER NOT NULL,
            text VARCHAR NOT NULL,
            token_count INTEGER NOT NULL,
            page INTEGER,
            heading_path VARCHAR[],
            line_start INTEGER,
            line_end INTEGER,
            embedding FLOAT[]
        );
        CREATE INDEX chunks_document ON chunks (document_id);
        """,
    ),
    (
        "0002_jobs",
        """
        CREATE TABLE jobs (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            collection VARCHAR,
            state VARCHAR NOT NULL,
            total INTEGER NOT NULL DEFAULT 0,
            done INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            unchanged INTEGER NOT NULL DEFAULT 0,
            error VARCHAR,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner VARCHAR,
            lease_expires_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ
        );
        CREATE TABLE job_items (
            job_id VARCHAR NOT NULL,
            ordinal INTEGER NOT NULL,
            document_id VARCHAR NOT NULL,
            source_id VARCHAR NOT NULL,
            source_kind VARCHAR NOT NULL,
            uri VARCHAR,
            title VARCHAR,
            filename VARCHAR,
            content BLOB,
            metadata JSON,
            state VARCHAR NOT NULL DEFAULT 'pending',
            error VARCHAR,
            chunks INTEGER,
            PRIMARY KEY (job_id, ordinal)
        );
        """,
    ),
    (
        "0003_index_outbox",
        """
        CREATE SEQUENCE outbox_seq START 1;
        CREATE TABLE index_outbox (
            seq BIGINT PRIMARY KEY,
            op VARCHAR NOT NULL,
            chunk_id BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        "0004_api_keys",
        """
        CREATE TABLE api_keys (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            role VARCHAR NOT NULL,
            key_hash VARCHAR NOT NULL UNIQUE,
            collections VARCHAR[],
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            revoked_at TIMESTAMPTZ
        );
        """,
    ),
    (
        "0005_conversations",
        """
        CREATE TABLE conversations (
            id VARCHAR PRIMARY KEY,
            key_id VARCHAR NOT NULL,
            collections VARCHAR[],
            title VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE conversation_messages (
            conversation_id VARCHAR NOT NULL,
            ordinal INTEGER NOT NULL,
            role VARCHAR NOT NULL,
            content VARCHAR NOT NULL,
            citations JSON,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (conversation_id, ordinal)
        );
        """,
    ),
    (
        "0006_key_limits",
        """
        ALTER TABLE api_keys ADD COLUMN rpm INTEGER;
        ALTER TABLE api_keys ADD COLUMN tpm INTEGER;
        """,
    ),
    ("0007_audit_log", AUDIT_MIGRATION_SQL),
    (
        "0008_sources",
        """
        ALTER TABLE jobs ADD COLUMN source VARCHAR;
        ALTER TABLE jobs ADD COLUMN summary JSON;
        ALTER TABLE job_items ADD COLUMN action VARCHAR NOT NULL DEFAULT 'upsert';
        CREATE TABLE sources (
            name VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            collection VARCHAR NOT NULL,
            location VARCHAR NOT NULL,
            config JSON,
            schedule VARCHAR NOT NULL DEFAULT 'manual',
            cursor VARCHAR,
            last_sync_at TIMESTAMPTZ,
            last_success_at TIMESTAMPTZ,
            last_error VARCHAR,
            lag_seconds DOUBLE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE source_files (
            source VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            collection VARCHAR NOT NULL,
            fingerprint VARCHAR NOT NULL,
            content_hash VARCHAR,
            document_id VARCHAR NOT NULL,
            seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (source, path)
        );
        CREATE SEQUENCE quarantine_ids START 1;
        CREATE TABLE quarantine (
            id BIGINT PRIMARY KEY DEFAULT nextval('quarantine_ids'),
            source VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            collection VARCHAR,
            kind VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            size_bytes BIGINT,
            content_hash VARCHAR,
            first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
            last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
            UNIQUE (source, path)
        );
        CREATE TABLE webhook_deliveries (
            delivery_id VARCHAR PRIMARY KEY,
            event VARCHAR NOT NULL,
            repo VARCHAR,
            received_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE github_items (
            source_id VARCHAR PRIMARY KEY,
            collection VARCHAR NOT NULL,
            state JSON NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        # When the version a document holds was submitted: a job that started earlier but
        # finishes later must not overwrite a newer version (two workers, one edited file).
        "0009_document_submitted_at",
        "ALTER TABLE documents ADD COLUMN submitted_at TIMESTAMPTZ;",
    ),
    (
        # Evaluation (appliance/evaluate/, core/evals.py): versioned sets and their items, runs
        # with the configuration they ran under and every item's outcome, and gates.
        "0010_evals",
        """
        CREATE TABLE eval_sets (
            name VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            description VARCHAR NOT NULL DEFAULT '',
            origin VARCHAR NOT NULL DEFAULT '',
            collection VARCHAR,
            corpus_documents INTEGER NOT NULL DEFAULT 0,
            ingest_jobs VARCHAR[],
            content_hash VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (name, version)
        );
        CREATE TABLE eval_items (
            set_name VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            ordinal INTEGER NOT NULL,
            item JSON NOT NULL,
            PRIMARY KEY (set_name, version, ordinal)
        );
        CREATE TABLE eval_runs (
            id VARCHAR PRIMARY KEY,
            set_name VARCHAR NOT NULL,
            set_version INTEGER NOT NULL,
            job_id VARCHAR NOT NULL,
            options JSON NOT NULL,
            config JSON,
            scorecard JSON,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            finished_at TIMESTAMPTZ
        );
        CREATE TABLE eval_run_items (
            run_id VARCHAR NOT NULL,
            ordinal INTEGER NOT NULL,
            outcome JSON NOT NULL,
            PRIMARY KEY (run_id, ordinal)
        );
        CREATE TABLE eval_gates (
            name VARCHAR PRIMARY KEY,
            gate JSON NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        # Every answer's trace (db/traces.py), its ratings, and the drift checks over them. The
        # query embedding is a FLOAT[] (4 bytes a dimension) for the drift tests.
        "0011_answer_traces",
        """
        CREATE TABLE answer_traces (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            key_id VARCHAR NOT NULL,
            conversation_id VARCHAR,
            collections VARCHAR[] NOT NULL,
            question VARCHAR NOT NULL,
            query VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            prompt_version VARCHAR NOT NULL,
            answer VARCHAR NOT NULL,
            refused BOOLEAN NOT NULL,
            citations JSON NOT NULL,
            retrieved JSON NOT NULL,
            sources JSON NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            timings JSON NOT NULL,
            top_similarity DOUBLE,
            answer_chars INTEGER NOT NULL,
            latency_ms DOUBLE NOT NULL,
            embedding FLOAT[]
        );
        CREATE INDEX answer_traces_created ON answer_traces (created_at);
        CREATE TABLE answer_ratings (
            answer_id VARCHAR NOT NULL,
            key_id VARCHAR NOT NULL,
            rating VARCHAR NOT NULL,
            comment VARCHAR,
            correct_answer VARCHAR,
            confirmed_sources VARCHAR[] NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (answer_id, key_id)
        );
        CREATE TABLE drift_checks (
            id VARCHAR PRIMARY KEY,
            collection VARCHAR NOT NULL,
            checked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            trigger VARCHAR NOT NULL,
            reference JSON NOT NULL,
            current JSON NOT NULL,
            drifted BOOLEAN NOT NULL,
            signals JSON NOT NULL
        );
        CREATE INDEX drift_checks_collection ON drift_checks (collection, checked_at);
        """,
    ),
    # The model registry (models/registry.py): families, immutable versions, aliases per family,
    # and every alias move as a history row. `key` is the lower-cased family name (unique).
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
