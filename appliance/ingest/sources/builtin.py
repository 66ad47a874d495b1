"""The source kinds that ship with the appliance, registered through the same door as an extension's."""

from __future__ import annotations

from appliance.ingest.sources.dropfolder import DropFolder
from appliance.ingest.sources.gitsource import GitSource
from appliance.ingest.sources.registry import KINDS, SourceKinds


def register_builtin_sources(kinds: SourceKinds = KINDS) -> None:
    """Idempotent: every source service calls it before it creates its sources."""
    kinds.register(GitSource.kind, GitSource)
    kinds.register(DropFolder.kind, DropFolder.from_settings)
