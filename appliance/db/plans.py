"""The capacity planner's SQL: calibrations (with the hardware fingerprint), recommendations, applies, validations."""

from __future__ import annotations

import json

import msgspec

from appliance.db.connection import Database
from appliance.plan_records import Calibration, PlanApply, Validation


class PlanStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save_calibration(self, cal: Calibration) -> None:
        self.db.write(
            "INSERT INTO plan_calibrations (id, created_at, fingerprint, body) VALUES (?, ?, ?, ?)",
            [cal.id, cal.created_at, cal.fingerprint, msgspec.json.encode(cal).decode()],
        )

    def latest_calibration(self, fingerprint: str | None = None) -> Calibration | None:
        sql = "SELECT body FROM plan_calibrations"
        params: list = []
        if fingerprint is not None:
            sql += " WHERE fingerprint = ?"
            params.append(fingerprint)
        row = self.db.fetchone(sql + " ORDER BY created_at DESC LIMIT 1", params)
        return msgspec.json.decode(row[0], type=Calibration) if row else None

    def save_recommendation(self, rec_id: str, intent: dict, rows: list[dict]) -> None:
        self.db.write(
            "INSERT INTO plan_recommendations (id, intent, candidates) VALUES (?, ?, ?)",
            [rec_id, json.dumps(intent), json.dumps(rows)],
        )

    def candidate(self, config_id: str) -> dict | None:
        """The latest recommendation's row for a configuration id."""
        for (candidates,) in self.db.fetchall(
            "SELECT candidates FROM plan_recommendations ORDER BY created_at DESC LIMIT 20"
        ):
            for row in json.loads(candidates):
                if row["id"] == config_id:
                    return row
        return None

    # -- apply and validate ----------------------------------------------------------------------
    def save_apply(self, record: PlanApply) -> None:
        """Insert or replace (a rollback rewrites the row with its new state)."""
        self.db.write(
            "INSERT OR REPLACE INTO plan_applies (id, created_at, state, body) VALUES (?, ?, ?, ?)",
            [record.id, record.created_at, record.state, msgspec.json.encode(record).decode()],
        )

    def latest_applied(self) -> PlanApply | None:
        """The newest apply still in force (rollbacks pop them like a stack)."""
        row = self.db.fetchone(
            "SELECT body FROM plan_applies WHERE state = 'applied' ORDER BY created_at DESC LIMIT 1"
        )
        return msgspec.json.decode(row[0], type=PlanApply) if row else None

    def applies(self, limit: int = 50) -> list[PlanApply]:
        rows = self.db.fetchall("SELECT body FROM plan_applies ORDER BY created_at DESC LIMIT ?", [limit])
        return [msgspec.json.decode(r[0], type=PlanApply) for r in rows]

    def save_validation(self, record: Validation) -> None:
        """Insert or replace (dropping a validation's refit rewrites its row)."""
        self.db.write(
            "INSERT OR REPLACE INTO plan_validations (id, created_at, body) VALUES (?, ?, ?)",
            [record.id, record.created_at, msgspec.json.encode(record).decode()],
        )

    def validations(self, limit: int = 50) -> list[Validation]:
        rows = self.db.fetchall("SELECT body FROM plan_validations ORDER BY created_at DESC LIMIT ?", [limit])
        return [msgspec.json.decode(r[0], type=Validation) for r in rows]

    def validation(self, validation_id: str) -> Validation | None:
        row = self.db.fetchone("SELECT body FROM plan_validations WHERE id = ?", [validation_id])
        return msgspec.json.decode(row[0], type=Validation) if row else None

    def intent_for(self, config_id: str) -> dict | None:
        """The intent of the latest recommendation that offered a configuration (its promised SLOs)."""
        for intent, candidates in self.db.fetchall(
            "SELECT intent, candidates FROM plan_recommendations ORDER BY created_at DESC LIMIT 20"
        ):
            if any(row["id"] == config_id for row in json.loads(candidates)):
                return json.loads(intent)
        return None
