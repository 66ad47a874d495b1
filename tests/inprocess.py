"""An appliance in this process over real stores in a temp dir, serving the echo runtime, and
(for tests of the wire) its API on a free port: the real HTTP stack, without a server process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import uvicorn

from appliance.api.app import create_app
from appliance.config import load_settings
from appliance.core import Appliance
from appliance.ingest.intake import NewDocument
from appliance.models.echo import EchoRuntime
from tests.conftest import free_port


def echo_appliance(data_dir: Path, **overrides) -> Appliance:
    """Started, with the echo runtime as its chat model (nothing loads at start)."""
    settings = load_settings(
        overrides={"data_dir": str(data_dir), "llm": {"load_at_start": False}, **overrides}, environ={}
    )
    app = Appliance(settings)
    app.start()
    app.models.serve(EchoRuntime("echo", context_length=2048))
    return app


def ingest(app: Appliance, collection: str, docs: dict[str, str]) -> None:
    """`docs` (source id -> text) into `collection`, created if need be; returns once indexed."""
    system = app.access.system_scope()
    app.catalog.ensure_collection(collection)
    job_id, _ = app.knowledge.submit(
        system,
        collection,
        [
            NewDocument(source_id=s, title=None, text=t, content=None, filename=f"{s}.md")
            for s, t in docs.items()
        ],
    )
    assert app.jobs.wait(job_id).state == "succeeded"


class InProcessServer:
    """The appliance's API served by uvicorn on a thread of this process."""

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(app),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)

    @property
    def key(self) -> str:
        return self.app.admin_key_path.read_text().strip()

    def start(self, timeout: float = 30.0) -> InProcessServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
