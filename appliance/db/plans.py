"""The capacity planner's SQL: calibrations (with the hardware fingerprint) and recommendations."""

from __future__ import annotations

import json

import msgspec

from appliance.db.connection import Database
from appliance.plan_records import Calibration


class PlanStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save_calibration(self, cal: Calibration) -> None:
        self.db.execute(
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
        self.db.execute(
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
