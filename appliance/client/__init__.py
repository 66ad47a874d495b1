"""Clients of the appliance's REST API: request builders shared by a sync and an async client."""

from appliance.client.async_client import AsyncApplianceClient
from appliance.client.endpoint import resolve_endpoint, server_trust
from appliance.client.errors import ApiError
from appliance.client.sync_client import ApplianceClient

__all__ = ["ApiError", "ApplianceClient", "AsyncApplianceClient", "resolve_endpoint", "server_trust"]
