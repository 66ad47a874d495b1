"""Safe rollout's SQL: canaries and their analyses, shadow settings and paired outputs (migration 0016)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from appliance.db.connection import Database

_ROLLOUT_COLUMNS = (
    "id, family, candidate_version, stable_version, steps, step, min_samples, state, reason, actor, "
    "analyses, started_at, updated_at"
)
_PAIR_COLUMNS = (
    "id, shadow_version, production_model, prompt, production_output, shadow_output, similarity, "
    "citation_overlap, production_ms, shadow_ms, error, created_at"
)


def iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _row(r: dict) -> dict:
    r = dict(r)
    r["analyses"] = json.loads(r["analyses"]) if isinstance(r["analyses"], str) else r["analyses"]
    r["steps"] = list(r["steps"])
    r["started_at"], r["updated_at"] = iso(r["started_at"]), iso(r["updated_at"])
    return r


class RolloutStore:
    """Rows of canaries (one running per family at most: the service checks before it inserts),
    shadow settings, and shadow pairs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- canaries ---------------------------------------------------------------------------------
    def add_canary(
        self,
        rollout_id: str,
        family: str,
        candidate: int,
        stable: int,
        steps: list[int],
        min_samples: int,
        actor: str,
    ) -> dict:
        self.db.write(
            "INSERT INTO model_rollouts (id, family, candidate_version, stable_version, steps, step, "
            "min_samples, state, actor, analyses) VALUES (?, ?, ?, ?, ?, 0, ?, 'running', ?, '[]')",
            [rollout_id, family.lower(), candidate, stable, steps, min_samples, actor],
        )
        return self.canary(rollout_id)

    def canary(self, rollout_id: str) -> dict:
        rows = self.db.fetch_dicts(
            f"SELECT {_ROLLOUT_COLUMNS} FROM model_rollouts WHERE id = ?", [rollout_id]
        )
        return _row(rows[0])

    def update_canary(
        self, rollout_id: str, step: int, state: str, reason: str, analyses: list[dict]
    ) -> dict:
        self.db.write(
            "UPDATE model_rollouts SET step = ?, state = ?, reason = ?, analyses = ?, updated_at = now() "
            "WHERE id = ?",
            [step, state, reason, json.dumps(analyses), rollout_id],
        )
        return self.canary(rollout_id)

    def running(self) -> list[dict]:
        rows = self.db.fetch_dicts(
            f"SELECT {_ROLLOUT_COLUMNS} FROM model_rollouts WHERE state = 'running' ORDER BY started_at"
        )
        return [_row(r) for r in rows]

    def latest(self, family: str) -> dict | None:
        rows = self.db.fetch_dicts(
            f"SELECT {_ROLLOUT_COLUMNS} FROM model_rollouts WHERE family = ? ORDER BY started_at DESC LIMIT 1",
            [family.lower()],
        )
        return _row(rows[0]) if rows else None

    # -- shadows ----------------------------------------------------------------------------------
    def set_shadow(self, family: str, version: int | None, share: float, actor: str) -> None:
        if version is None:
            self.db.write("DELETE FROM model_shadows WHERE family = ?", [family.lower()])
            return
        self.db.write(
            "INSERT INTO model_shadows (family, version, share, actor) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (family) DO UPDATE SET version = excluded.version, share = excluded.share, "
            "actor = excluded.actor, updated_at = now()",
            [family.lower(), version, share, actor],
        )

    def shadows(self) -> list[dict]:
        rows = self.db.fetch_dicts("SELECT family, version, share, actor, updated_at FROM model_shadows")
        return [{**r, "updated_at": iso(r["updated_at"])} for r in rows]

    def add_pair(self, family: str, fields: dict[str, Any]) -> None:
        def insert(cur) -> None:
            (pair_id,) = cur.execute("SELECT nextval('model_shadow_pair_ids')").fetchone()
            cur.execute(
                "INSERT INTO model_shadow_pairs (id, family, shadow_version, production_model, prompt, "
                "production_output, shadow_output, similarity, citation_overlap, production_ms, shadow_ms, "
                "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    pair_id,
                    family.lower(),
                    fields["shadow_version"],
                    fields["production_model"],
                    fields["prompt"],
                    fields["production_output"],
                    fields.get("shadow_output"),
                    fields.get("similarity"),
                    fields.get("citation_overlap"),
                    fields.get("production_ms"),
                    fields.get("shadow_ms"),
                    fields.get("error"),
                ],
            )

        self.db.run_in_transaction(insert)

    def pair_stats(self, family: str, version: int) -> dict:
        row = self.db.fetch_dicts(
            "SELECT count(*) AS pairs, count(error) AS errors, avg(similarity) AS mean_similarity, "
            "median(similarity) AS median_similarity, "
            "avg(CASE WHEN similarity >= 0.8 THEN 1.0 WHEN similarity IS NOT NULL THEN 0.0 END) AS agreement_rate, "
            "avg(citation_overlap) AS mean_citation_overlap, "
            "quantile_cont(production_ms, 0.95) AS p95_production_ms, "
            "quantile_cont(shadow_ms, 0.95) AS p95_shadow_ms "
            "FROM model_shadow_pairs WHERE family = ? AND shadow_version = ?",
            [family.lower(), version],
        )[0]
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}

    def recent_pairs(self, family: str, version: int, limit: int) -> list[dict]:
        rows = self.db.fetch_dicts(
            f"SELECT {_PAIR_COLUMNS} FROM model_shadow_pairs WHERE family = ? AND shadow_version = ? "
            "ORDER BY id DESC LIMIT ?",
            [family.lower(), version, limit],
        )
        return [{**r, "created_at": iso(r["created_at"])} for r in rows]

    def last_shadow_version(self, family: str) -> int | None:
        row = self.db.fetchone(
            "SELECT shadow_version FROM model_shadow_pairs WHERE family = ? ORDER BY id DESC LIMIT 1",
            [family.lower()],
        )
        return row[0] if row else None
