"""The Litestar application factory."""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from appliance import __version__
from appliance.api.admission import Admission, AdmissionMiddleware
from appliance.api.audit import audit_app
from appliance.api.auth import BearerKeyMiddleware
from appliance.api.dependencies import DEPENDENCIES
from appliance.api.errors import PROBLEM_HANDLERS
from appliance.api.openapi import document_operations
from appliance.api.requests import ApiRequest
from appliance.api.routes import (
    admin,
    answers,
    collections,
    documents,
    drift,
    evals,
    feedback,
    health,
    jobs,
    keys,
    knowledge,
    observability,
    openai,
    plan,
    sources,
    tuning,
    workflows,
)
from appliance.api.routes import registry as model_registry
from appliance.api.routes import retrieval as retrieval_tuning
from appliance.api.routes.docs import OfflineSwaggerPlugin
from appliance.api.routes.mcp import McpEndpoint, mcp_route
from appliance.core import Appliance
from appliance.observability.metrics import instrument_app


def create_app(appliance: Appliance) -> Litestar:
    """One Router per area; guards, dependencies and exception handlers at the layer they govern
    (problem details here, OpenAI's envelope on the /v1 router)."""
    openapi = OpenAPIConfig(
        title="Appliance API",
        version=__version__,
        # The JSON document, and Swagger UI from shipped files at /schema/docs (Litestar's own
        # viewers load scripts from public CDNs, useless offline).
        render_plugins=[JsonRenderPlugin(), OfflineSwaggerPlugin()],
        path="/schema",
        # Security is declared per operation (api/openapi.py): the probes and the webhook need no key.
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
    )
    admission = Admission.from_settings(appliance.settings)
    admission.register_metrics(appliance.metrics.registry)
    mcp = McpEndpoint()
    app = Litestar(
        route_handlers=[
            *health.route_handlers,
            observability.metrics,
            collections.router,
            documents.router,
            jobs.router,
            sources.router,
            knowledge.router,
            answers.conversations_router,
            keys.router,
            observability.audit_router,
            admin.router,
            evals.router,
            openai.router,
            feedback.answers_router,
            feedback.feedback_router,
            drift.router,
            mcp_route(mcp),
            model_registry.router,
            workflows.workflows_router,
            workflows.runs_router,
            workflows.approvals_router,
            plan.router,
            retrieval_tuning.router,
            tuning.router,
        ],
        dependencies=DEPENDENCIES,
        middleware=[
            DefineMiddleware(BearerKeyMiddleware, exclude_from_auth_key="exclude_from_auth"),
            DefineMiddleware(AdmissionMiddleware, admission=admission),  # after auth: see api/admission.py
        ],
        on_shutdown=[admission.close],
        exception_handlers=PROBLEM_HANDLERS,
        openapi_config=openapi,
        request_max_body_size=appliance.settings.limits.max_body_bytes,
        request_class=ApiRequest,
        state=State({"appliance": appliance, "admission": admission}),
        debug=False,
        logging_config=None,  # our structured logging is configured once, at start-up
    )
    document_operations(app)
    # Outermost wrappers see every request, routed or not, with its final status.
    return instrument_app(audit_app(app, appliance.audit, appliance.access.failed_auth), appliance.metrics)
