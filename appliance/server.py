"""Runs the API with uvicorn in this process, around the Appliance's start and close."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uvicorn

from appliance.api.app import create_app
from appliance.config import Settings
from appliance.core import Appliance
from appliance.observability.logs import configure_logging

log = logging.getLogger(__name__)


def serve(settings: Settings, config_file: Path | None = None) -> int:
    configure_logging(settings.log_level, settings.log_format)
    # The file the settings came from (kept with backups): given, or the one load_settings read.
    if config_file is None and os.environ.get("APPLIANCE_CONFIG"):
        config_file = Path(os.environ["APPLIANCE_CONFIG"])
    appliance = Appliance(settings, config_file)
    try:
        app = create_app(appliance)
        config = uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        appliance.start()
        url = f"http://{settings.server.host}:{settings.server.port}"
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
        server.run()
    finally:
        appliance.close()
    return 0
