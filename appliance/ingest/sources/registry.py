"""The source kinds this appliance knows, each registered by kind with a factory of its `Source`."""

from __future__ import annotations

from collections.abc import Callable

from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput
from appliance.ingest.sources.protocols import Source

SourceFactory = Callable[[Settings], Source]


class SourceKinds:
    """One door for every kind: the built-in ones register exactly as an extension would."""

    def __init__(self) -> None:
        self._factories: dict[str, SourceFactory] = {}

    def register(self, kind: str, factory: SourceFactory) -> None:
        """Registering the same factory again is a no-op (start-up may run twice in one process);
        another factory for a kind already taken is refused rather than silently replacing it."""
        current = self._factories.get(kind)
        if current is not None and current != factory:
            raise Conflict(f"source kind {kind!r} is already registered")
        self._factories[kind] = factory

    def kinds(self) -> list[str]:
        return sorted(self._factories)

    def create(self, kind: str, settings: Settings) -> Source:
        factory = self._factories.get(kind)
        if factory is None:
            raise InvalidInput(
                f"unknown source kind {kind!r}: known kinds are {', '.join(self.kinds()) or 'none'}"
            )
        source = factory(settings)
        if source.kind != kind:
            raise InvalidInput(f"the factory registered for {kind!r} made a source of kind {source.kind!r}")
        return source


KINDS = SourceKinds()


def register_source(kind: str, factory: SourceFactory) -> None:
    """Make `kind` available to every source service built afterwards."""
    KINDS.register(kind, factory)
