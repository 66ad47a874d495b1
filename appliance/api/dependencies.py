"""What handlers receive by dependency injection: the caller's Scope and the capability services."""

from __future__ import annotations

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler

from appliance.core.access import Scope


def provide_caller(request: Request) -> Scope:
    # "caller", not "scope": Litestar reserves `scope` for the ASGI scope.
    return request.app.state.appliance.access.scope(request.user)


def _service(name: str):
    def provide(state: State):
        return getattr(state.appliance, name)

    provide.__name__ = f"provide_{name}"
    return Provide(provide, sync_to_thread=False)


DEPENDENCIES = {
    "caller": Provide(provide_caller, sync_to_thread=False),
    **{
        name: _service(name)
        for name in (
            "access",
            "knowledge",
            "answers",
            "gateway",
            "jobs",
            "sources",
            "admin",
            "feedback",
            "drift",
            "evals",
            "eval_sources",
            "registry",
            "rollouts",
            "workflows",
            "planner",
            "calibration",
            "tuning",
            "embedders",
        )
    },
}


def admin_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard of the admin, keys and audit routers: the decision itself is the access service's."""
    connection.app.state.appliance.access.scope(connection.user).require_admin()
