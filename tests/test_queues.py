"""xmppauth.queues.LightQueue: asyncio.Queue's semantics for what the bridge and the channel layer use."""

from __future__ import annotations

import asyncio

import pytest

from xmppauth.queues import LightQueue


def run(coro):
    return asyncio.run(coro)


def test_items_come_out_in_order_and_nowait_calls_raise_as_asyncio_queue():
    queue: LightQueue[int] = LightQueue(maxsize=2)
    assert queue.empty() and not queue.full()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert queue.full() and queue.qsize() == 2
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(3)
    assert [queue.get_nowait(), queue.get_nowait()] == [1, 2]
    assert queue.empty()


def test_an_unbounded_queue_is_never_full():
    queue: LightQueue[int] = LightQueue()
    for n in range(5000):
        queue.put_nowait(n)
    assert not queue.full() and queue.qsize() == 5000


def test_waiting_getters_are_served_in_the_order_they_came():
    async def scenario():
        queue: LightQueue[str] = LightQueue()
        got: list[tuple[int, str]] = []

        async def getter(n: int) -> None:
            got.append((n, await queue.get()))

        tasks = [asyncio.create_task(getter(n)) for n in range(3)]
        await asyncio.sleep(0)
        for item in ("a", "b", "c"):
            queue.put_nowait(item)
        await asyncio.gather(*tasks)
        return got

    assert run(scenario()) == [(0, "a"), (1, "b"), (2, "c")]


def test_a_getter_cancelled_after_its_wake_up_passes_the_item_on():
    async def scenario():
        queue: LightQueue[str] = LightQueue()
        first = asyncio.create_task(queue.get())
        second = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.put_nowait("x")  # wakes the first getter...
        first.cancel()  # ...which is cancelled before it runs
        got = await asyncio.wait_for(second, 5)
        return first.cancelled(), got, queue.empty()

    assert run(scenario()) == (True, "x", True)


def test_a_cancelled_getter_leaves_no_waiter_behind():
    async def scenario():
        queue: LightQueue[str] = LightQueue()
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        getter.cancel()
        await asyncio.gather(getter, return_exceptions=True)
        queue.put_nowait("kept")
        return queue._getters, queue.get_nowait()  # noqa: SLF001

    assert run(scenario()) == ([], "kept")
