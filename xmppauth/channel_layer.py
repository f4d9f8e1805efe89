"""Our embedded channel layer: the in-memory one, with a receive that costs O(1).

Spec: the Channels layer API (``send``, ``receive``, ``new_channel``, groups, flush; channels docs "Channel
Layer Specification"), with the same expiry rules as ``channels.layers.InMemoryChannelLayer``: a message older
than ``expiry`` is dropped and its channel leaves every group; a group membership older than ``group_expiry``
ends.

Why the in-memory one: the stock layer runs ``_clean_expired`` on every ``receive`` and ``group_send``, which
walks every channel and every group. Each TCP session listens on a channel of its own
(``transport.im.bridge``), so each new session's first ``receive`` cost O(sessions): logins fell from 82/s to
24/s as 10 000 sessions piled up (bench/RESULTS.md). Here a ``receive`` expires only its own channel's
messages, and the global walk (for channels nobody receives on, and for group memberships) runs at most once
per :data:`SWEEP_INTERVAL`.

The Redis one is in ``xmppauth.redis_layer``: importing channels-redis and redis-py here would load them
(about 5 MiB) into every embedded process, which never uses them.
"""

from __future__ import annotations

import asyncio
import time
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

from xmppauth.queues import LightQueue

SWEEP_INTERVAL = 5.0  # seconds between two walks over all channels and groups


class LazyExpiryInMemoryChannelLayer(InMemoryChannelLayer):
    """``InMemoryChannelLayer`` whose expiry walk is per channel on receive, global only now and then."""

    def __init__(self, *args: Any, sweep_interval: float = SWEEP_INTERVAL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sweep_interval = sweep_interval
        self._next_sweep = 0.0

    def _expire_channel(self, channel: str, now: float) -> None:
        """Drop ``channel``'s expired messages; any drop takes the channel out of all groups (as stock)."""
        queue = self.channels.get(channel)
        if queue is None:
            return
        dropped = False
        while not queue.empty() and queue._queue[0][0] < now:  # noqa: SLF001 (the stock layer's own peek)
            queue.get_nowait()
            dropped = True
        if dropped:
            self._remove_from_groups(channel)
            if queue.empty():
                self.channels.pop(channel, None)

    def _clean_expired(self) -> None:
        """The stock global walk, but at most once per ``sweep_interval``."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_interval
        super()._clean_expired()

    def _queue(self, channel: str) -> LightQueue[tuple[float, dict[str, Any]]]:
        """The channel's queue: a ``LightQueue``, not the stock ``asyncio.Queue`` (about 3 KiB less for each
        idle session, whose channel has a receive waiting; ``xmppauth.queues``)."""
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = LightQueue(maxsize=self.get_capacity(channel))
        return queue

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """The stock ``send``, on :meth:`_queue`."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, deepcopy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict[str, Any]:
        """The stock ``receive``, on :meth:`_queue`; its ``_clean_expired()`` is the throttled walk above."""
        self.require_valid_channel_name(channel)
        self._expire_channel(channel, time.time())
        self._clean_expired()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def flush(self) -> None:
        await super().flush()
        self._next_sweep = 0.0
