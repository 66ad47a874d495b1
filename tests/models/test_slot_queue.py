"""SlotQueue: FIFO hand-over, 429 beyond max_queue, cancellation while waiting, queue positions, close."""

from __future__ import annotations

import threading
import time

import pytest

from appliance.errors import ApplianceError, NotReady, TooManyRequests
from appliance.models.slots import Cancelled, QueueFull, SlotQueue


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def start_waiter(
    queue: SlotQueue,
    order: list[int],
    tag: int,
    hold: threading.Event | None = None,
    cancel: threading.Event | None = None,
    errors: list | None = None,
) -> threading.Thread:
    def run() -> None:
        try:
            with queue.acquire(cancel):
                order.append(tag)
                if hold is not None:
                    hold.wait(5)
        except ApplianceError as exc:
            if errors is None:
                raise
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_fifo_order_and_direct_handover():
    queue = SlotQueue(slots=1, max_queue=10)
    order: list[int] = []
    first = queue.acquire().__enter__()
    threads = []
    for tag in range(5):
        threads.append(start_waiter(queue, order, tag))
        wait_until(lambda n=tag + 1: queue.depth == n)  # enqueue in a known order
    assert queue.in_use == 1 and order == []
    first.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert queue.in_use == 0 and queue.depth == 0
    assert queue.snapshot()["served"] == 6


def test_several_slots_run_together():
    queue = SlotQueue(slots=2, max_queue=0)
    a = queue.acquire().__enter__()
    b = queue.acquire().__enter__()
    assert queue.in_use == 2
    with pytest.raises(QueueFull):
        queue.acquire().__enter__()
    a.release()
    a.release()  # idempotent
    assert queue.in_use == 1
    b.release()
    assert queue.in_use == 0


def test_queue_full_beyond_max_queue_with_retry_after():
    queue = SlotQueue(slots=1, max_queue=2)
    holder = queue.acquire().__enter__()
    order: list[int] = []
    threads = [start_waiter(queue, order, 1), start_waiter(queue, order, 2)]
    wait_until(lambda: queue.depth == 2)
    with pytest.raises(QueueFull) as info:
        queue.acquire().__enter__()
    err = info.value
    assert isinstance(err, TooManyRequests) and isinstance(err, ApplianceError)
    assert err.status == 429
    assert err.retry_after_s > 0 and err.retry_after >= 1 and isinstance(err.retry_after, int)
    assert "busy" in err.detail
    assert queue.snapshot()["rejected"] == 1
    holder.release()
    for t in threads:
        t.join(5)
    assert order == [1, 2]


def test_retry_after_grows_with_the_work_ahead():
    queue = SlotQueue(slots=1, max_queue=1)
    with queue.acquire():
        time.sleep(0.05)
    holder = queue.acquire().__enter__()
    order: list[int] = []
    t = start_waiter(queue, order, 1)
    wait_until(lambda: queue.depth == 1)
    with pytest.raises(QueueFull) as full:
        queue.acquire().__enter__()
    # Estimated from the measured service time: two requests ahead of a newcomer.
    assert full.value.retry_after_s == pytest.approx(2 * queue.snapshot()["avg_service_s"], rel=0.1)
    holder.release()
    t.join(5)


def test_cancel_while_waiting_leaves_the_queue_at_once():
    queue = SlotQueue(slots=1, max_queue=5)
    holder = queue.acquire().__enter__()
    order: list[int] = []
    errors: list = []
    cancel = threading.Event()
    cancelled = start_waiter(queue, order, 1, cancel=cancel, errors=errors)
    wait_until(lambda: queue.depth == 1)
    behind = start_waiter(queue, order, 2)
    wait_until(lambda: queue.depth == 2)
    cancel.set()
    cancelled.join(2)
    assert not cancelled.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled)
    assert queue.depth == 1
    holder.release()
    behind.join(5)
    assert order == [2]  # the cancelled waiter never ran, and did not hold up the one behind it
    assert queue.in_use == 0


def test_already_cancelled_request_never_queues():
    queue = SlotQueue(slots=1, max_queue=5)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        queue.acquire(cancel).__enter__()
    assert queue.in_use == 0 and queue.depth == 0


def test_positions_are_reported_and_move_forward():
    queue = SlotQueue(slots=1, max_queue=5)
    holder = queue.acquire().__enter__()
    seen: dict[int, list[int]] = {1: [], 2: []}
    leases = {}
    done = threading.Event()

    def waiter(tag: int) -> None:
        lease = queue.acquire(on_position=seen[tag].append)
        leases[tag] = lease
        with lease:
            done.wait(5)

    t1 = threading.Thread(target=waiter, args=(1,), daemon=True)
    t1.start()
    wait_until(lambda: queue.depth == 1)
    t2 = threading.Thread(target=waiter, args=(2,), daemon=True)
    t2.start()
    wait_until(lambda: queue.depth == 2 and seen[2])
    assert leases[1].position == 1 and leases[2].position == 2
    assert queue.position(leases[2].ticket) == 2
    holder.release()
    wait_until(lambda: 1 in seen[2])  # the second waiter moved up
    assert leases[1].position == 0 and leases[2].position == 1
    done.set()
    t1.join(5)
    t2.join(5)
    assert seen[1] == [1, 0]  # position 1, then it got the slot
    assert seen[2][0] == 2 and seen[2][-1] == 0 and 1 in seen[2]


def test_a_waiter_hears_its_position_however_soon_the_slot_comes():
    queue = SlotQueue(slots=1, max_queue=5)
    holder = queue.acquire().__enter__()
    heard: list[int] = []
    # Freed the moment the waiter is queued, before any poll of its wait could have passed: the
    # waiter must still have been told it queued (a client relays that first position).
    releaser = threading.Thread(
        target=lambda: (wait_until(lambda: queue.depth == 1), holder.release()), daemon=True
    )
    releaser.start()
    with queue.acquire(on_position=heard.append):
        assert heard[0] == 1 and heard[-1] == 0
    releaser.join(5)
    assert queue.in_use == 0


def test_close_turns_waiters_away_and_waits_for_the_slots_in_use():
    queue = SlotQueue(slots=1, max_queue=5)
    holder = queue.acquire().__enter__()
    order: list[int] = []
    errors: list = []
    waiter = start_waiter(queue, order, 1, errors=errors)
    wait_until(lambda: queue.depth == 1)
    closed = threading.Event()
    closer = threading.Thread(
        target=lambda: (queue.close("the model was unloaded"), closed.set()), daemon=True
    )
    closer.start()
    waiter.join(5)
    assert order == [] and len(errors) == 1 and isinstance(errors[0], NotReady)
    assert errors[0].detail == "the model was unloaded"
    assert not closed.wait(0.1)  # the running request still holds its slot
    with pytest.raises(NotReady):
        queue.acquire().__enter__()  # newcomers are refused too
    holder.release()
    closer.join(5)
    assert closed.is_set() and queue.in_use == 0 and queue.depth == 0


def test_invalid_sizes_are_refused():
    with pytest.raises(ApplianceError):
        SlotQueue(slots=0, max_queue=1)
