"""Drift: the latest check of each collection, and a check on demand (admin)."""

from __future__ import annotations

import msgspec
from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody

from appliance.api.dependencies import admin_only
from appliance.core.access import Scope
from appliance.core.drift import Drift
from appliance.errors import InvalidInput
from appliance.records import DriftReport, Window


class WindowIn(msgspec.Struct, forbid_unknown_fields=True):
    """A time range {start, end} (ISO 8601; end defaults to now), or {first_n, after}: the first
    N answers after a time (e.g. a model promotion)."""

    start: str | None = None
    end: str | None = None
    first_n: int | None = None
    after: str | None = None

    def window(self, name: str, counted: bool) -> Window:
        if self.after is not None and self.start is not None:
            raise InvalidInput(f"{name}: give start or after, not both")
        if self.first_n is not None and not counted:
            raise InvalidInput(f"{name}: the current window is a time range (start, end)")
        return Window(start=self.after or self.start, end=self.end, first_n=self.first_n)


class DriftCheckIn(msgspec.Struct, forbid_unknown_fields=True):
    collection: str
    reference: WindowIn | None = None  # default: the settings' (drift.reference_days or reference_first_n)
    current: WindowIn | None = None  # default: the last drift.current_days


@get("/", sync_to_thread=True, summary="The latest drift check of each collection the key sees")
def latest(
    caller: NamedDependency[Scope], drift: NamedDependency[Drift], collection: FromQuery[str | None] = None
) -> list[DriftReport]:
    return drift.latest(caller, collection)


@post(
    "/check",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    summary="Check a collection for drift now: MMD on query embeddings, KS and PSI on scalar signals",
)
def check(
    caller: NamedDependency[Scope], drift: NamedDependency[Drift], data: JSONBody[DriftCheckIn]
) -> DriftReport:
    return drift.check(
        caller,
        data.collection,
        data.reference.window("reference", counted=True) if data.reference else None,
        data.current.window("current", counted=False) if data.current else None,
    )


router = Router("/api/v1/drift", route_handlers=[latest, check], tags=["drift"])
