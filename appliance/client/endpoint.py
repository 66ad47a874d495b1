"""Which server a client talks to, and with which key: flags, then the environment, then the config."""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING

from appliance.client.errors import ApiError

if TYPE_CHECKING:
    from appliance.config import Settings


def resolve_endpoint(
    settings: Settings | None = None, url: str | None = None, key: str | None = None
) -> tuple[str, str]:
    """Server URL and key: explicit values, else APPLIANCE_URL / APPLIANCE_KEY, else the config
    file's address and `<data dir>/admin.key`."""
    url = url or os.environ.get("APPLIANCE_URL")
    key = key or os.environ.get("APPLIANCE_KEY")
    if not url or not key:
        if settings is None:
            from appliance.config import load_settings

            settings = load_settings()
        # A server listening on every address is reached on loopback from its own machine.
        host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = url or f"{'https' if settings.server.tls else 'http'}://{host}:{settings.server.port}"
        if not key:
            key_file = settings.data_path / "admin.key"
            try:
                key = key_file.read_text().strip()
            except OSError:
                raise ApiError(0, "No API key", f"set APPLIANCE_KEY or make {key_file} readable") from None
    return url.rstrip("/"), key


def server_trust(settings: Settings | None) -> ssl.SSLContext | bool:
    """What a client checks the server's certificate against: the usual CAs (True), or, when this
    machine's config serves TLS and its certificate is readable (`sudo appliance ...` on the
    server), that certificate itself, self-signed or not (a partial chain is accepted)."""
    if settings is None or not settings.server.tls:
        return True
    try:
        context = ssl.create_default_context(cafile=settings.server.tls_cert)
    except (OSError, ssl.SSLError):
        return True
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
