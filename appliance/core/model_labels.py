"""The per-model metric labels of a served model: its registry family, version and alias, a running canary's candidate as alias "canary"."""

from __future__ import annotations

import threading

from appliance.core.registry import Registry
from appliance.core.rollout import Rollouts
from appliance.errors import NotFound
from appliance.registry_records import AliasMove, ModelFamily

CANARY = "canary"
# Which alias names a version held by several: the one a dashboard compares against first.
_PREFERRED = ("production", "default", "staging", "candidate", "shadow")


class ModelLabels:
    """`labels(served name)` -> (model, version, alias) for metrics. The served name is the pool's:
    `fam` (its production or default), `fam@3`, `fam@staging`. What the registry says is cached until
    an alias moves (the registry tells its listeners); the canary's arms are read live from the
    rollout's memory, so the candidate's series and the stable's sit side by side from the first
    request of a canary to its end."""

    def __init__(self, registry: Registry, rollouts: Rollouts) -> None:
        self.registry = registry
        self.rollouts = rollouts
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, str, str]] = {}
        registry.listeners.append(self._moved)

    def __call__(self, served: str) -> tuple[str, str, str]:
        key = served.lower()
        with self._lock:
            found = self._cache.get(key)
        if found is None:
            found = self._look_up(served)
            with self._lock:
                self._cache[key] = found
        model, version, alias = found
        arms = self.rollouts.arms(model) if version else None
        if arms is not None and version == str(arms[0]):
            alias = CANARY
        return model, version, alias

    def _look_up(self, served: str) -> tuple[str, str, str]:
        name, _, qualifier = served.partition("@")
        try:
            family = self.registry.registry.family(name)
        except NotFound:
            return served, "", ""  # not a registry model (an adopted runtime, a file by path)
        if qualifier.isdigit():
            version = int(qualifier)
        elif qualifier:
            version = family.aliases.get(qualifier)
        else:
            version = _served_by_name(family)
        if version is None:
            return family.name, "", qualifier
        alias = qualifier if qualifier and not qualifier.isdigit() else _alias_of(family, version)
        return family.name, str(version), alias

    def _moved(self, move: AliasMove) -> None:
        with self._lock:
            self._cache.clear()


def _served_by_name(family: ModelFamily) -> int | None:
    """The version a bare family name serves (as ModelRegistry.resolve picks it)."""
    for alias in ("production", "default", "embedding"):
        if alias in family.aliases:
            return family.aliases[alias]
    ready = [v.version for v in family.versions if v.state == "ready"]
    return ready[-1] if ready else None


def _alias_of(family: ModelFamily, version: int) -> str:
    held = [a for a, v in family.aliases.items() if v == version]
    for alias in _PREFERRED:
        if alias in held:
            return alias
    return sorted(held)[0] if held else ""
