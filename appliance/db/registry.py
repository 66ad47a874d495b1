"""The model registry's SQL: families, immutable versions, aliases and the alias history (migration 0012)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec

from appliance.db.connection import Database
from appliance.errors import NotFound
from appliance.registry_records import AliasMove, ModelFamily, ModelVersion, RemoteEndpoint

_VERSION_COLUMNS = (
    "family, version, kind, backend, path, sha256, size_bytes, format, quantisation, architecture, "
    "context_length, chat_template_sha256, licence, tags, state, reason, probe, source, created_at, remote"
)
_HISTORY_COLUMNS = (
    "id, family, alias, action, version, previous_version, actor, reason, gated, gate, "
    "eval_report_id, eval_report, moved_at"
)


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class RegistryStore:
    """Rows of the registry. Versions are written once (the probe fills in its own columns); an
    alias and its history row change in one transaction, so the history never misses a move."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- families -------------------------------------------------------------------------------
    def family_row(self, name: str) -> dict | None:
        rows = self.db.fetch_dicts(
            "SELECT key, name, kind, gate, created_at FROM model_families WHERE key = ?", [name.lower()]
        )
        return rows[0] if rows else None

    def ensure_family(self, name: str, kind: str) -> dict:
        self.db.write(
            "INSERT INTO model_families (key, name, kind) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
            [name.lower(), name, kind],
        )
        row = self.family_row(name)
        assert row is not None
        return row

    def set_gate(self, name: str, gate: str | None) -> None:
        self.db.write("UPDATE model_families SET gate = ? WHERE key = ?", [gate, name.lower()])

    def family_names(self) -> list[str]:
        return [r[0] for r in self.db.fetchall("SELECT name FROM model_families ORDER BY kind, key")]

    # -- versions -------------------------------------------------------------------------------
    def add_version(self, family: str, fields: dict[str, Any]) -> int:
        """Insert the family's next version number with `fields`; returns the number."""
        key = family.lower()

        def insert(cur) -> int:
            row = cur.execute("SELECT max(version) FROM model_versions WHERE family = ?", [key]).fetchone()
            version = (row[0] or 0) + 1
            cur.execute(
                "INSERT INTO model_versions (family, version, kind, backend, path, sha256, size_bytes, "
                "format, quantisation, architecture, context_length, chat_template_sha256, licence, tags, "
                "state, reason, probe, source, remote) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    key,
                    version,
                    fields["kind"],
                    fields["backend"],
                    fields["path"],
                    fields["sha256"],
                    fields["size_bytes"],
                    fields["format"],
                    fields.get("quantisation"),
                    fields.get("architecture"),
                    fields.get("context_length"),
                    fields.get("chat_template_sha256"),
                    fields.get("licence") or "",
                    list(fields.get("tags") or []),
                    fields["state"],
                    fields.get("reason"),
                    json.dumps(fields["probe"]) if fields.get("probe") is not None else None,
                    fields["source"],
                    msgspec.json.encode(fields["remote"]).decode() if fields.get("remote") else None,
                ],
            )
            return version

        return self.db.run_in_transaction(insert)

    def version_with_sha(self, family: str, sha256: str) -> int | None:
        row = self.db.fetchone(
            "SELECT max(version) FROM model_versions WHERE family = ? AND sha256 = ?",
            [family.lower(), sha256],
        )
        return row[0] if row and row[0] is not None else None

    def set_probe(
        self,
        family: str,
        version: int,
        state: str,
        reason: str | None,
        tags: list[str],
        probe: dict | None,
        context_length: int | None = None,  # what the probe found, where the file did not say (remote)
    ) -> None:
        self.db.write(
            "UPDATE model_versions SET state = ?, reason = ?, tags = ?, probe = ?, "
            "context_length = coalesce(?, context_length) WHERE family = ? AND version = ?",
            [
                state,
                reason,
                tags,
                json.dumps(probe) if probe is not None else None,
                context_length,
                family.lower(),
                version,
            ],
        )

    def versions(self, family: str) -> list[ModelVersion]:
        name = self._name(family)
        aliases = self.aliases(family)
        rows = self.db.fetch_dicts(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE family = ? ORDER BY version",
            [family.lower()],
        )
        return [self._version(name, r, aliases) for r in rows]

    def version(self, family: str, version: int) -> ModelVersion:
        name = self._name(family)
        rows = self.db.fetch_dicts(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE family = ? AND version = ?",
            [family.lower(), version],
        )
        if not rows:
            raise NotFound(f"model {name!r} has no version {version}")
        return self._version(name, rows[0], self.aliases(family))

    def _name(self, family: str) -> str:
        row = self.family_row(family)
        if row is None:
            raise NotFound(f"model {family!r} is not in the registry")
        return row["name"]

    @staticmethod
    def _version(name: str, r: dict, aliases: dict[str, int]) -> ModelVersion:
        return ModelVersion(
            name=name,
            version=r["version"],
            kind=r["kind"],
            backend=r["backend"],
            path=r["path"],
            sha256=r["sha256"],
            size_bytes=r["size_bytes"],
            format=r["format"],
            quantisation=r["quantisation"],
            architecture=r["architecture"],
            context_length=r["context_length"],
            chat_template_sha256=r["chat_template_sha256"],
            licence=r["licence"],
            tags=list(r["tags"]),
            state=r["state"],
            reason=r["reason"],
            probe=_json(r["probe"]),
            source=r["source"],
            created_at=_iso(r["created_at"]),
            aliases=sorted(a for a, v in aliases.items() if v == r["version"]),
            remote=msgspec.convert(_json(r["remote"]), RemoteEndpoint) if r["remote"] else None,
        )

    def family(self, name: str) -> ModelFamily:
        row = self.family_row(name)
        if row is None:
            raise NotFound(f"model {name!r} is not in the registry")
        return ModelFamily(
            name=row["name"],
            kind=row["kind"],
            gate=row["gate"],
            aliases=self.aliases(name),
            versions=self.versions(name),
            created_at=_iso(row["created_at"]),
        )

    # -- aliases --------------------------------------------------------------------------------
    def aliases(self, family: str) -> dict[str, int]:
        rows = self.db.fetchall(
            "SELECT alias, version FROM model_aliases WHERE family = ? ORDER BY alias", [family.lower()]
        )
        return {alias: version for alias, version in rows}

    def alias_holders(self, alias: str) -> list[tuple[str, int]]:
        """(family name, version) of every family whose `alias` is set."""
        rows = self.db.fetchall(
            "SELECT f.name, a.version FROM model_aliases a JOIN model_families f ON f.key = a.family "
            "WHERE a.alias = ? ORDER BY f.key",
            [alias],
        )
        return [(name, version) for name, version in rows]

    def move_alias(
        self,
        family: str,
        alias: str,
        version: int | None,
        *,
        action: str,
        actor: str,
        reason: str = "",
        gated: bool = False,
        gate: str | None = None,
        eval_report_id: str | None = None,
        eval_report: dict | None = None,
    ) -> AliasMove:
        """Point `alias` at `version` (None: remove it) and write the history row, atomically."""
        key = family.lower()

        def move(cur) -> int:
            row = cur.execute(
                "SELECT version FROM model_aliases WHERE family = ? AND alias = ?", [key, alias]
            ).fetchone()
            previous = row[0] if row else None
            if version is None:
                cur.execute("DELETE FROM model_aliases WHERE family = ? AND alias = ?", [key, alias])
            else:
                cur.execute(
                    "INSERT INTO model_aliases (family, alias, version) VALUES (?, ?, ?) "
                    "ON CONFLICT (family, alias) DO UPDATE SET version = excluded.version, updated_at = now()",
                    [key, alias, version],
                )
            (move_id,) = cur.execute("SELECT nextval('model_alias_history_ids')").fetchone()
            cur.execute(
                "INSERT INTO model_alias_history (id, family, alias, action, version, previous_version, actor, "
                "reason, gated, gate, eval_report_id, eval_report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    move_id,
                    key,
                    alias,
                    action,
                    version,
                    previous,
                    actor,
                    reason,
                    gated,
                    gate,
                    eval_report_id,
                    json.dumps(eval_report) if eval_report is not None else None,
                ],
            )
            return move_id

        move_id = self.db.run_in_transaction(move)
        return next(m for m in self.history(family) if m.id == move_id)

    def history(self, family: str, alias: str | None = None) -> list[AliasMove]:
        """The family's alias moves, oldest first (of one alias when given)."""
        name = self._name(family)
        sql = f"SELECT {_HISTORY_COLUMNS} FROM model_alias_history WHERE family = ?"
        params: list[Any] = [family.lower()]
        if alias is not None:
            sql += " AND alias = ?"
            params.append(alias)
        return [
            AliasMove(
                id=r["id"],
                name=name,
                alias=r["alias"],
                action=r["action"],
                version=r["version"],
                previous_version=r["previous_version"],
                actor=r["actor"],
                reason=r["reason"],
                gated=r["gated"],
                gate=r["gate"],
                eval_report_id=r["eval_report_id"],
                eval_report=_json(r["eval_report"]),
                at=_iso(r["moved_at"]),
            )
            for r in self.db.fetch_dicts(sql + " ORDER BY id", params)
        ]
