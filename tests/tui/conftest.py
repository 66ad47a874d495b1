"""Fixtures of the console tests: a live server with a small corpus and helpers to drive the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.conftest import TEST_MODEL_ENV, ServerProcess

POLICY = """# Travel policy

## Per diems

Employees travelling in Europe receive a per diem of 75 EUR a day for meals.
In Asia the per diem is 80 USD a day.

## Booking

Flights over six hours may be booked in business class.
"""
RUNBOOK = """# Key rotation

Rotate API keys every 90 days. Revoke a leaked key at once and create a new one.
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One server per test module, with the small chat model and two documents in `docs`."""
    # Short answers: the screens show a streamed answer the same at any length, and SmolLM2 tends
    # to run to the limit (512 tokens by default, ~20 s each on this machine).
    env = {**TEST_MODEL_ENV, "APPLIANCE_ANSWER__MAX_ANSWER_TOKENS": "96"}
    server = ServerProcess(tmp_path_factory.mktemp("console") / "data", env=env).start(require_llm=True)
    with server.client() as c:
        c.post("/api/v1/collections", json={"name": "docs"})
        for source_id, text in (("travel.md", POLICY), ("keys.md", RUNBOOK)):
            r = c.post(
                "/api/v1/documents",
                params={"wait": "true"},
                json={"collection": "docs", "source_id": source_id, "text": text},
            )
            assert r.status_code == 200, r.text
    yield server
    server.stop()


async def until(
    pilot, condition: Callable[[], object], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Let the app run until `condition()` holds; fails with `what` when it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        try:
            if condition():
                return
        except Exception:  # widgets not mounted yet, a row not there yet
            pass
        await asyncio.sleep(0.05)
    banner = pilot.app.query_one("#banner")
    raise AssertionError(
        f"timed out waiting for {what}; the console says: {banner.render()!s}; "
        f"screen {type(pilot.app.screen).__name__}"
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio
