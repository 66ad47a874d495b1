"""Sources as callers see them: list, add, remove, sync, quarantine, and GitHub deliveries."""

from __future__ import annotations

from collections.abc import Mapping

from appliance.core.access import Scope
from appliance.errors import NotFound
from appliance.ingest.sources.service import SourceService
from appliance.records import QuarantinedFile, RemovedSource, Source


class Sources:
    """The scoped face of the source service (which runs the watchers, syncs and webhooks)."""

    def __init__(self, service: SourceService) -> None:
        self.service = service

    def list(self, scope: Scope) -> list[Source]:
        return self.service.list(scope.visible())

    def get(self, scope: Scope, name: str) -> Source:
        for source in self.list(scope):
            if source.name == name:
                return source
        raise NotFound(f"source {name!r} does not exist")

    def add(
        self,
        scope: Scope,
        kind: str,
        name: str,
        collection: str,
        location: str,
        schedule: str = "manual",
        options: dict | None = None,
    ) -> Source:
        scope.require_admin()
        return self.service.add(kind, name, collection, location, schedule, options)

    def remove(self, scope: Scope, name: str, delete_documents: bool = False) -> RemovedSource:
        scope.require_admin()
        return self.service.remove(name, delete_documents)

    def sync(self, scope: Scope, name: str) -> str | None:
        """The sync job queued (or already queued); None when there is nothing to queue."""
        scope.require_admin()
        return self.service.request_sync(name) or None

    def quarantined(
        self, scope: Scope, collection: str | None = None, source: str | None = None, limit: int = 200
    ) -> list[QuarantinedFile]:
        names = scope.collections([collection]) if collection is not None else scope.visible()
        return self.service.quarantined(names, source, limit)

    def github_delivery(self, headers: Mapping[str, str], body: bytes) -> dict:
        """Authenticated by its HMAC signature, not by an API key: no scope."""
        return self.service.github_delivery(headers, body)
