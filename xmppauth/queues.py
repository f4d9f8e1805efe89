"""A small asyncio queue for the queues every idle session holds (issue 17 §5: memory per idle session).

Each bound session waits on two queues: its bridge's work queue (``transport.im.bridge``) and its channel's
queue in the in-memory channel layer (``xmppauth.channel_layer``). An empty ``asyncio.Queue`` costs about
3 KiB (three deques, an ``Event`` with a fourth, each deque with its first 512-byte block); this one holds a
list and the waiting getters, about 0.3 KiB empty. Same semantics as ``asyncio.Queue`` for what we use:
``put_nowait`` (``QueueFull`` past ``maxsize``), ``get`` (FIFO, waiters woken in order, a cancelled getter
passes its wake-up on), ``get_nowait``, ``qsize``, ``empty``, ``full``; no ``put``, ``join`` or
``task_done``. ``_queue`` is the items, oldest first, as in ``asyncio.Queue`` (the channel layer's expiry
peeks at it).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class LightQueue(Generic[T]):
    """FIFO queue for one event loop; ``maxsize`` <= 0: unbounded."""

    __slots__ = ("_getters", "_maxsize", "_queue")

    def __init__(self, maxsize: int = 0) -> None:
        self._queue: list[T] = []  # not a deque: empty, 56 bytes instead of 760; these queues stay short
        self._maxsize = maxsize
        self._getters: list[asyncio.Future[None]] = []

    def qsize(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    def full(self) -> bool:
        return 0 < self._maxsize <= len(self._queue)

    def put_nowait(self, item: T) -> None:
        if self.full():
            raise asyncio.QueueFull
        self._queue.append(item)
        self._wake_next()

    def get_nowait(self) -> T:
        if not self._queue:
            raise asyncio.QueueEmpty
        return self._queue.pop(0)

    async def get(self) -> T:
        while not self._queue:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()  # a no-op if it was woken; then the next getter gets the wake-up
                try:
                    self._getters.remove(getter)
                except ValueError:
                    pass  # already taken off by _wake_next
                if self._queue and not getter.cancelled():
                    self._wake_next()
                raise
        return self._queue.pop(0)

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return
