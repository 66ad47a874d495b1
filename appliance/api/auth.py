"""Bearer-key authentication for every route but the health probes."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from appliance.errors import Unauthorized


class BearerKeyMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        access = connection.app.state.appliance.access
        principal = access.authenticate(secret.strip())
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        access.admit(principal)
        return AuthenticationResult(user=principal, auth=secret)
