"""Admin: live statistics, recent logs, chat model load/unload, installation status, backups, audit log."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from appliance.core.access import Scope
from appliance.db.catalog import Catalog
from appliance.db.jobs import JobStore
from appliance.errors import InvalidInput
from appliance.index.sync import IndexSync
from appliance.models.embedder import Embedder
from appliance.models.service import ModelService
from appliance.observability.audit import AuditLog
from appliance.observability.health import DiskUsage, component_health
from appliance.observability.metrics import Metrics

# Writes a consistent snapshot into the given folder (see ops/backup.py); bound by the composition root.
Snapshot = Callable[[Path], dict]


class Admin:
    """What operators and the console need beyond the other services. Every call needs an admin scope."""

    def __init__(
        self,
        data_dir: Path,
        catalog: Catalog,
        jobs: JobStore,
        sync: IndexSync,
        models: ModelService,
        embedder: Embedder,
        embedder_ready: threading.Event,
        metrics: Metrics,
        audit: AuditLog,
        snapshot: Snapshot,
    ) -> None:
        self.data_dir = data_dir
        self.catalog = catalog
        self.jobs = jobs
        self.sync = sync
        self.models = models
        self.embedder = embedder
        self.embedder_ready = embedder_ready
        self.metrics = metrics
        self.audit = audit
        self.snapshot = snapshot
        self._stats = None

    # -- the console's live statistics -------------------------------------------------------
    def start_sampling(self) -> None:
        from appliance.observability.logs import log_ring
        from appliance.observability.stats import StatsSampler

        log_ring()  # in-process servers (tests) never ran configure_logging
        self._stats = StatsSampler(self.metrics, self._gauges)
        self._stats.start()

    def stop_sampling(self) -> None:
        if self._stats is not None:
            self._stats.stop()

    def _gauges(self) -> dict[str, float]:
        queue = self.models.health().get("queue") or {}
        return {
            "llm_queue": float(queue.get("waiting", 0)),
            "llm_in_use": float(queue.get("in_use", 0)),
            "llm_slots": float(queue.get("slots", 0)),
            "jobs_active": float(len(self.jobs.active_ids())),
        }

    def components(self, disk: DiskUsage) -> list[dict]:
        return component_health(
            self.catalog.chunk_count,
            self.sync.status(),
            len(self.jobs.active_ids()),
            len(self.jobs.list(None, "failed", 20)),
            self.embedder_ready.is_set(),
            f"{self.embedder.name} ({self.embedder.dimensions}-d)",
            self.models.health(),
            disk,
        )

    def stats(self, scope: Scope) -> dict:
        from appliance import __version__
        from appliance.observability.stats import StatsSampler, ingestion_lags

        scope.require_admin()
        snap = (self._stats or StatsSampler(self.metrics, self._gauges)).snapshot()
        disk = DiskUsage.of(self.data_dir)
        gauges = snap["gauges"]
        return {
            "version": __version__,
            "uptime_seconds": snap["current"].pop("uptime_seconds"),
            "components": self.components(disk),
            "collections": self.catalog.list_collections(),
            "ingestion_lag_seconds": ingestion_lags(self.metrics),
            "traffic": snap["current"],
            "queue": {
                "llm_waiting": int(gauges.get("llm_queue", 0)),
                "llm_in_use": int(gauges.get("llm_in_use", 0)),
                "llm_slots": int(gauges.get("llm_slots", 0)),
                "jobs_active": int(gauges.get("jobs_active", 0)),
            },
            "memory": {
                k: (int(gauges[k]) if k in gauges else None)
                for k in ("rss_bytes", "gpu_used_bytes", "gpu_total_bytes")
            },
            "disk": disk.as_dict(),
            "history": snap["history"],
        }

    def logs(self, scope: Scope, level: str | None, limit: int, after: int = 0) -> dict:
        from appliance.observability.logs import LEVELS, log_ring

        scope.require_admin()
        if level is not None and level.lower() not in LEVELS:
            raise InvalidInput(f"level must be one of {', '.join(LEVELS)}")
        if not 1 <= limit <= 2000:
            raise InvalidInput("limit must be between 1 and 2000")
        lines = log_ring().recent(level.lower() if level else None, limit, after)
        return {"lines": lines, "last_seq": lines[-1]["seq"] if lines else after}

    # -- models ---------------------------------------------------------------------------------
    def models_state(self, scope: Scope) -> dict:
        scope.require_admin()
        return {
            "chat": self.models.health(),
            "available": self.models.available(),
            "embedding": {
                "name": self.embedder.name,
                "dimensions": self.embedder.dimensions,
                "state": "loaded" if self.embedder_ready.is_set() else "loading",
            },
        }

    def load_model(self, scope: Scope, name: str | None) -> dict:
        scope.require_admin()
        return self.models.start_load(name)

    def unload_model(self, scope: Scope) -> dict:
        scope.require_admin()
        return self.models.unload()

    # -- operations -------------------------------------------------------------------------------
    def ops_status(self, scope: Scope) -> dict:
        """What `appliance doctor` asks a running server: version, the network guard, index counts."""
        from appliance import __version__
        from appliance.offline import GUARD

        scope.require_admin()
        return {
            "version": __version__,
            "data_dir": str(self.data_dir),
            "ready": self.embedder_ready.is_set(),
            "network": GUARD.status(),
            "indexes": self.sync.status(),
            "chunks": self.catalog.chunk_count(),
        }

    def backup(self, scope: Scope, name: str | None = None) -> dict:
        """A consistent snapshot into <data dir>/backups/<name> while serving (see ops/backup.py)."""
        from appliance.ops.backup import backup_name

        scope.require_admin()
        return self.snapshot(self.data_dir / "backups" / backup_name(name))

    def audit_entries(
        self, scope: Scope, limit: int, offset: int, action: str | None, key_id: str | None
    ) -> list[dict]:
        scope.require_admin()
        return self.audit.recent(limit=limit, offset=offset, action=action, key_id=key_id)
