"""The first wave's schema migrations (0001-0011): catalogue, jobs, outbox, keys, conversations, limits,
audit log, sources, evals and answer traces; the later ones follow them in appliance.db.migrations."""

from __future__ import annotations

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
SPINE_MIGRATIONS: list[tuple[str, str]] = [
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
]
