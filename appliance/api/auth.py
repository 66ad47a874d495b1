"""Bearer-key authentication for every route but the health probes, and refusal of clients that keep failing it."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from appliance.errors import TooManyRequests, Unauthorized

# Set on the ASGI scope of a request refused for want of a valid credential (no key, a bad key, a
# client over its failed-authentication allowance, a bad webhook signature), when it is counted:
# whether the audit middleware records it one by one (False: it goes into the client's summary).
AUTH_REFUSED = "appliance.auth_refused_audited"


def count_refusal(connection: ASGIConnection) -> None:
    """Count a refused credential against the client, at the moment of refusal."""
    failed_auth = connection.app.state.appliance.access.failed_auth
    connection.scope[AUTH_REFUSED] = failed_auth.refused(client_address(connection))  # type: ignore[literal-required]


def client_address(connection: ASGIConnection) -> str:
    """The peer's address, or the forwarded client's when the peer is a trusted proxy (uvicorn
    rewrites it for server.trusted_proxies only)."""
    return connection.client.host if connection.client else "unknown"


class BearerKeyMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        access = connection.app.state.appliance.access
        try:
            # Before the key is looked at: a guesser over the allowance learns nothing from a hit.
            access.admit_client(client_address(connection))
            header = connection.headers.get("authorization", "")
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
            principal = access.authenticate(secret.strip())
            if principal is None:
                raise Unauthorized("invalid or revoked API key")
        except (Unauthorized, TooManyRequests):
            count_refusal(connection)
            raise
        access.admit(principal)
        return AuthenticationResult(user=principal, auth=secret)
