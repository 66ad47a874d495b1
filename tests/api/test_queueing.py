"""open_queued: a call that waits in the slot queue is reported as queued, however soon it returns."""

from __future__ import annotations

import asyncio
import threading

import pytest

from appliance.api.queueing import open_queued
from appliance.errors import NotReady
from appliance.models.slots import SlotQueue


async def _positions(opening) -> list[int]:
    return [position async for position in opening.waiting()]


def test_a_position_reported_just_before_the_call_returned_is_not_lost():
    def queued_then_done(on_position) -> str:
        on_position(1)  # waited (briefly) ...
        on_position(0)  # ... got the slot ...
        return "stream"  # ... and returned at once: all three may be seen in one wakeup

    async def main() -> None:
        cancel = threading.Event()
        for _ in range(50):  # each round is another interleaving of the thread and the loop
            opening = await open_queued(queued_then_done, cancel)
            assert opening.queued_at == 1
            assert await _positions(opening) == [1]
            assert opening.result() == "stream"
        assert not cancel.is_set()

    asyncio.run(main())


def test_a_call_that_never_queued_opens_without_a_position():
    async def main() -> None:
        opening = await open_queued(lambda on_position: "stream", threading.Event())
        assert opening.queued_at is None and await _positions(opening) == []
        assert opening.result() == "stream"

    asyncio.run(main())


def test_a_call_that_fails_before_queueing_raises_and_sets_cancel():
    def refused(on_position):
        raise NotReady("the model is loading")

    async def main() -> None:
        cancel = threading.Event()
        with pytest.raises(NotReady):
            await open_queued(refused, cancel)
        assert cancel.is_set()

    asyncio.run(main())


def test_a_call_that_fails_after_queueing_is_still_reported_as_queued():
    def queued_then_refused(on_position):
        on_position(1)
        raise NotReady("the model was unloaded while this request waited")

    async def main() -> None:
        opening = await open_queued(queued_then_refused, threading.Event())
        assert opening.queued_at == 1  # the response starts, and then carries the error
        await _positions(opening)
        with pytest.raises(NotReady):
            opening.result()

    asyncio.run(main())


def test_through_a_real_slot_queue_positions_then_the_slot():
    queue = SlotQueue(slots=1, max_queue=2)
    holder = queue.acquire().__enter__()

    def take(on_position):
        return queue.acquire(on_position=on_position).__enter__()

    async def main() -> None:
        opening = await open_queued(take, threading.Event())  # returns while still queued
        assert opening.queued_at == 1 and not opening.task.done()
        holder.release()
        assert await _positions(opening) == [1]
        lease = opening.result()
        assert lease.held
        lease.release()

    asyncio.run(main())
    assert queue.in_use == 0
