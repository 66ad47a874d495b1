"""Admission per class of work: bounded places, a bounded FIFO wait, 429 beyond; threads of its own."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from appliance.api.admission import Admission, Gate, Overloaded, blocking
from appliance.config import load_settings
from appliance.observability.metrics import Metrics


async def _until(predicate) -> None:
    """Let other tasks run until `predicate()` holds (no clock involved: each pass yields once)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_beyond_its_places_and_queue_a_request_is_refused_with_retry_after():
    async def main() -> None:
        gate = Gate("search", concurrency=1, queue=1)
        holder = await gate.enter()
        queued = asyncio.ensure_future(gate.enter())
        await _until(lambda: gate.waiting == 1)
        with pytest.raises(Overloaded) as refused:
            await gate.enter()
        assert refused.value.status == 429 and refused.value.retry_after >= 1
        assert "search" in refused.value.detail
        assert (gate.running, gate.waiting, gate.admitted, gate.rejected) == (1, 1, 1, 1)
        holder.release()
        holder.release()  # idempotent: the place is not given back twice
        permit = await queued
        assert (gate.running, gate.waiting, gate.admitted) == (1, 0, 2)
        permit.release()
        assert gate.running == 0

    asyncio.run(main())


def test_waiters_are_admitted_in_arrival_order_and_a_newcomer_cannot_barge_in():
    async def main() -> None:
        gate = Gate("embeddings", concurrency=1, queue=3)
        holder = await gate.enter()
        order: list[int] = []

        async def wait(n: int):
            permit = await gate.enter()
            order.append(n)
            return permit

        waiters = []
        for n in range(3):
            waiters.append(asyncio.ensure_future(wait(n)))
            await _until(lambda n=n: gate.waiting == n + 1)
        holder.release()
        first = await waiters[0]
        # A freed place went to the head waiter directly: nobody arriving now can take it.
        late = asyncio.ensure_future(wait(99))
        await _until(lambda: gate.waiting == 3)
        first.release()
        for task in [*waiters[1:], late]:
            (await task).release()
        assert order == [0, 1, 2, 99]
        assert gate.running == 0 and gate.waiting == 0

    asyncio.run(main())


def test_a_waiter_that_gives_up_leaves_the_queue_and_its_turn_passes_on():
    async def main() -> None:
        gate = Gate("generation", concurrency=1, queue=2)
        holder = await gate.enter()
        leaving = asyncio.ensure_future(gate.enter())
        staying = asyncio.ensure_future(gate.enter())
        await _until(lambda: gate.waiting == 2)
        leaving.cancel()  # its client went away while it waited
        await _until(lambda: gate.waiting == 1)
        holder.release()
        permit = await staying
        assert gate.running == 1
        permit.release()
        assert gate.running == 0 and gate.waiting == 0
        with pytest.raises(asyncio.CancelledError):
            await leaving

    asyncio.run(main())


def test_a_busy_class_cannot_take_the_threads_another_class_needs():
    """Every thread of `search` blocked in real work: embeddings still runs at once, and a third
    search is refused rather than waiting for a thread."""
    release = threading.Event()
    entered = threading.Semaphore(0)

    def stuck() -> str:
        entered.release()
        release.wait(60)
        return "searched"

    async def main() -> None:
        search = Gate("search", concurrency=2, queue=0)
        embeddings = Gate("embeddings", concurrency=1, queue=0)
        holders = [await search.enter() for _ in range(2)]
        running = [asyncio.ensure_future(search.blocking(stuck)) for _ in holders]
        for _ in holders:
            await asyncio.to_thread(entered.acquire, True, 60)
        with pytest.raises(Overloaded):
            await search.enter()
        permit = await embeddings.enter()
        assert await embeddings.blocking(threading.current_thread) is not threading.main_thread()
        assert await embeddings.blocking(lambda: "embedded") == "embedded"
        permit.release()
        release.set()
        assert await asyncio.gather(*running) == ["searched", "searched"]
        for holder in holders:
            holder.release()
        search.close()
        embeddings.close()

    try:
        asyncio.run(main())
    finally:
        release.set()


def test_blocking_outside_any_class_runs_on_the_default_executor():
    async def main() -> str:
        return await blocking(lambda: threading.current_thread().name)

    assert not asyncio.run(main()).startswith("work-")


def test_unlimited_admits_everyone():
    async def main() -> None:
        gate = Gate("search", concurrency=1, queue=0, limited=False)
        permits = [await gate.enter() for _ in range(50)]
        assert gate.running == 50 and gate.rejected == 0
        assert await gate.blocking(lambda: 42) == 42
        for permit in permits:
            permit.release()

    asyncio.run(main())


def test_settings_defaults_and_metrics():
    settings = load_settings(environ={"APPLIANCE_LLM__SLOTS": "2", "APPLIANCE_LLM__MAX_QUEUE": "5"})
    admission = Admission.from_settings(settings)
    snapshot = admission.snapshot()
    assert snapshot["search"]["concurrency"] == (os.cpu_count() or 1)
    assert snapshot["search"]["queue"] == 4
    # Generation admits what the model queue holds (slots and waiting), no more: its 429 fires.
    assert (snapshot["generation"]["concurrency"], snapshot["generation"]["queue"]) == (7, 0)
    assert all(gate["limited"] for gate in snapshot.values())

    metrics = Metrics()
    admission.register_metrics(metrics.registry)

    async def refuse_one() -> None:
        gate = admission.gates["generation"]
        permits = [await gate.enter() for _ in range(7)]
        with pytest.raises(Overloaded):
            await gate.enter()
        for permit in permits:
            permit.release()

    asyncio.run(refuse_one())
    text = metrics.render()[0].decode()
    assert 'admission_rejected_total{work="generation"} 1.0' in text
    assert 'admission_admitted_total{work="generation"} 7.0' in text
    assert 'admission_queue_depth{work="search"} 0.0' in text
    admission.close()

    off = load_settings(environ={"APPLIANCE_ADMISSION__ENABLED": "false"})
    assert not any(gate["limited"] for gate in Admission.from_settings(off).snapshot().values())
    with pytest.raises(Exception, match="admission.search_queue"):
        load_settings(environ={"APPLIANCE_ADMISSION__SEARCH_QUEUE": "-1"})
