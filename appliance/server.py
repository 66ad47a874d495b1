"""Runs the API with uvicorn in this process, around the Appliance's start and close."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
from pathlib import Path

import uvicorn

from appliance.api.app import create_app
from appliance.api.wire import HeaderLimits, header_deadline_protocol
from appliance.config import ServerSettings, Settings
from appliance.core import Appliance
from appliance.errors import InvalidInput
from appliance.observability.logs import configure_logging

log = logging.getLogger(__name__)


class StopSignals:
    """SIGTERM and SIGINT as a request to stop cleanly. uvicorn handles them while it serves, then
    re-raises the signal it caught once it has drained: with the default handlers that re-raise
    killed the process before `Appliance.close()` ran, so every stop was a crash (no DuckDB
    checkpoint, no index flush). Here the re-raised signal lands on this handler, which only
    notes it; a second signal while closing stops at once, as the default would."""

    def __init__(self) -> None:
        self.requested = False
        self._installed: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            self._installed = {
                sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
            }

    def _handle(self, signum: int, frame: object) -> None:
        if not self.requested:
            self.requested = True
            return
        log.warning("second stop signal: exiting without a clean close", extra={"signal": signum})
        self.restore()
        signal.raise_signal(signum)

    def restore(self) -> None:
        for sig, handler in self._installed.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._installed = {}


def check_tls(server: ServerSettings) -> None:
    """Load the certificate and key once before anything starts, so a bad path or a key that does
    not match fails the start with a clear message rather than a traceback after start-up."""
    if not server.tls:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"cannot serve TLS with server.tls_cert={server.tls_cert!r} and server.tls_key={server.tls_key!r}: {exc}"
        ) from None


def uvicorn_config(app: object, server: ServerSettings) -> uvicorn.Config:
    """uvicorn with every limit explicit: header deadline, count and size, keep-alive, proxies, TLS."""
    return uvicorn.Config(
        HeaderLimits(app, server.max_headers, server.max_header_bytes),  # type: ignore[arg-type]
        host=server.host,
        port=server.port,
        http=header_deadline_protocol(server.header_timeout_seconds),
        ws="none",
        h11_max_incomplete_event_size=server.max_header_bytes,
        timeout_keep_alive=server.timeout_keep_alive_seconds,
        timeout_graceful_shutdown=server.graceful_shutdown_seconds,  # type: ignore[arg-type]
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: then anyone on the
        # box could write any address into the audit log. Only configured proxies are believed.
        proxy_headers=bool(server.trusted_proxies),
        forwarded_allow_ips=list(server.trusted_proxies),
        ssl_certfile=server.tls_cert or None,
        ssl_keyfile=server.tls_key or None,
        server_header=False,
        log_config=None,
        access_log=False,
        lifespan="off",
    )


def serve(settings: Settings, config_file: Path | None = None) -> int:
    configure_logging(settings.log_level, settings.log_format)
    check_tls(settings.server)
    # The file the settings came from (kept with backups): given, or the one load_settings read.
    if config_file is None and os.environ.get("APPLIANCE_CONFIG"):
        config_file = Path(os.environ["APPLIANCE_CONFIG"])
    stop = StopSignals()  # before anything opens: a stop during start-up also closes cleanly
    appliance = Appliance(settings, config_file)
    try:
        server = uvicorn.Server(uvicorn_config(create_app(appliance), settings.server))
        appliance.start()
        scheme = "https" if settings.server.tls else "http"
        url = f"{scheme}://{settings.server.host}:{settings.server.port}"
        note = "created" if appliance.admin_key_created else "existing"
        log.info(
            "serving",
            extra={
                "url": url,
                "admin_key_file": str(appliance.admin_key_path),
                "data_dir": str(appliance.data_dir),
            },
        )
        print(
            f"appliance serving on {url}\n  admin key ({note}): {appliance.admin_key_path}\n  data: {appliance.data_dir}",
            flush=True,
        )
        if not stop.requested:
            server.run()
        log.info("stopping: closing the catalogue, indexes and workers")
    finally:
        appliance.close()
    stop.restore()
    log.info("stopped cleanly")
    return 0
