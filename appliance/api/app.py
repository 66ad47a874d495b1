"""The Litestar application factory."""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from appliance import __version__
from appliance.api.audit import audit_app
from appliance.api.auth import BearerKeyMiddleware
from appliance.api.errors import EXCEPTION_HANDLERS
from appliance.api.routes import (
    admin,
    answers,
    collections,
    documents,
    health,
    jobs,
    keys,
    knowledge,
    observability,
    openai,
    ops,
    sources,
)
from appliance.core import Appliance
from appliance.observability.metrics import instrument_app


def create_app(appliance: Appliance) -> Litestar:
    openapi = OpenAPIConfig(
        title="Appliance API",
        version=__version__,
        # Only the JSON document: the HTML viewers load scripts from public CDNs, useless offline.
        render_plugins=[JsonRenderPlugin()],
        path="/schema",
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
        security=[{"bearer": []}],
    )
    app = Litestar(
        route_handlers=[
            health.healthz,
            health.readyz,
            collections.create_collection,
            collections.list_collections,
            documents.create_document,
            documents.create_documents,
            documents.list_documents,
            documents.get_document,
            documents.delete_document,
            jobs.get_job,
            jobs.list_jobs,
            jobs.cancel_job,
            jobs.retry_job,
            sources.list_sources,
            sources.add_source,
            sources.get_source,
            sources.remove_source,
            sources.sync_source,
            sources.list_quarantine,
            sources.github_webhook,
            knowledge.search,
            answers.knowledge_query,
            answers.create_conversation,
            answers.list_conversations,
            answers.get_conversation,
            answers.delete_conversation,
            answers.post_message,
            keys.create_key,
            keys.list_keys,
            keys.revoke_key,
            openai.list_models,
            openai.chat_completions,
            openai.completions,
            openai.embeddings,
            observability.metrics,
            observability.audit_entries,
            admin.stats,
            admin.logs,
            admin.models,
            admin.load_model,
            admin.unload_model,
            ops.ops_status,
            ops.backup,
            ops.verify_chunks,
        ],
        middleware=[DefineMiddleware(BearerKeyMiddleware, exclude_from_auth_key="exclude_from_auth")],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi,
        request_max_body_size=appliance.settings.limits.max_body_bytes,
        state=State({"appliance": appliance}),
        debug=False,
        logging_config=None,  # our structured logging is configured once, at start-up
    )
    # Outermost wrappers see every request, routed or not, with its final status.
    return instrument_app(audit_app(app, appliance.audit), appliance.metrics)
