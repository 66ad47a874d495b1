"""Server-sent events: headers, framing, and the relay from a blocking iterator, for every streaming route."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from appliance.api.admission import blocking
from appliance.api.errors import error_of
from appliance.errors import ApplianceError

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE = "text/event-stream"
_END = object()


def data(payload: dict | str) -> bytes:
    """A `data:` frame (OpenAI's streams: JSON objects, then the literal [DONE])."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def event(payload: dict) -> bytes:
    """A named event frame (the answer stream: sources, token..., answer, queue, error)."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def comment(text: str) -> bytes:
    # Clients skip comments; a person watching the stream sees why it waits.
    return f": {text}\n\n".encode()


def error_data(exc: ApplianceError) -> bytes:
    """An error after the response started, in OpenAI's envelope (what its SDKs raise from)."""
    return data(error_of(exc, openai=True))


def error_event(exc: ApplianceError) -> bytes:
    """An error after the answer stream started: the problem details' title, status and detail."""
    return event({**error_of(exc, openai=False), "type": "error"})


async def relay(items: Iterator[Any], cancel: threading.Event | None = None) -> AsyncIterator[Any]:
    """Items of a blocking iterator, each read in a worker thread. When the consumer stops (the
    client left), `cancel` is set, which stops generation within a token, and the iterator is
    closed."""
    try:
        while True:
            item = await blocking(next, items, _END)
            if item is _END:
                break
            yield item
    finally:
        # No await here: a closing async generator may not await. If a worker thread is inside
        # the iterator right now it cannot be closed from here; it ends by itself after `cancel`.
        if cancel is not None:
            cancel.set()
        close = getattr(items, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # "generator already executing": the worker thread holds it
                pass
