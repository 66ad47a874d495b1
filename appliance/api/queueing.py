"""Model calls that may wait in the slot queue: a stream's opening, and plain calls whose client may leave.

The wait happens before any response: a full queue must still become a 429. Once a stream is
known to be queued (its first position arrives), the route starts its streamed response and
relays positions as they change, then the tokens. A plain (non-streamed) call is watched for
its client leaving, which cancels it, so that nobody keeps a model slot for a reader who is gone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Request

from appliance.api.admission import blocking

T = TypeVar("T")


@dataclass
class Opening:
    task: asyncio.Future  # resolves to what the blocking call returns, or raises
    positions: asyncio.Queue
    queued_at: int | None  # None: the call finished (or failed) without waiting in the queue

    def result(self) -> Any:
        return self.task.result()

    def abandon(self, close: Callable[[Any], None]) -> None:
        """The client left: whatever the call returns (now or once its wait ends) is closed, so a
        slot granted just as the client went is not held by nobody."""

        def done(task: asyncio.Future) -> None:
            if not task.cancelled() and task.exception() is None:
                close(task.result())

        self.task.add_done_callback(done)

    async def waiting(self) -> AsyncIterator[int]:
        """Positions while queued (the first one included), until the slot is granted."""
        if self.queued_at is None:
            return
        yield self.queued_at
        while not self.task.done():
            getter = asyncio.ensure_future(self.positions.get())
            done, _ = await asyncio.wait({self.task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                if getter.result() > 0:
                    yield getter.result()
            else:
                getter.cancel()


async def open_queued(call: Callable[[Callable[[int], None]], Any], cancel: threading.Event) -> Opening:
    """Run `call(on_position)` in a thread; return once it succeeded or is known to be queued.
    A call that failed without queueing raises here (then `cancel` is set), before any response.
    A position reported before the call returned counts as queued even when both are seen at once:
    the client is told it waited."""
    loop = asyncio.get_running_loop()
    positions: asyncio.Queue = asyncio.Queue()

    def on_position(n: int) -> None:
        loop.call_soon_threadsafe(positions.put_nowait, n)

    task = asyncio.ensure_future(blocking(call, on_position))
    while True:
        getter = asyncio.ensure_future(positions.get())
        done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            if getter.result() > 0:
                return Opening(task, positions, getter.result())
            continue  # 0: the slot was granted straight away; the call is about to return
        getter.cancel()  # a cancelled get leaves its item in the queue
        # The call finished, but the positions it reported first may not have been read yet: they
        # were queued on the loop before its result was.
        while not positions.empty():
            if (position := positions.get_nowait()) > 0:
                return Opening(task, positions, position)
        if task.exception() is not None:
            cancel.set()
            raise task.exception()
        return Opening(task, positions, None)


async def _client_gone(request: Request) -> None:
    """Returns once the client has disconnected (ASGI `http.disconnect`); call after the body was read."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body", False) and not message.get("body"):
            # A server whose receive() does not block once the body is read: nothing to watch.
            await asyncio.Event().wait()


async def unless_client_leaves(request: Request, call: Callable[[threading.Event], T]) -> T:
    """Run the blocking `call(cancel)`; if the client disconnects before it returns, set `cancel`
    (generation stops within a token and frees its slot, or leaves the queue) and let it finish.
    Streams need none of this: their relay notices the disconnect when a write fails."""
    cancel = threading.Event()
    work = asyncio.ensure_future(blocking(call, cancel))
    watch = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            cancel.set()
        return await work
    finally:
        watch.cancel()
        cancel.set()  # done or gone: either way the slot is no longer wanted
