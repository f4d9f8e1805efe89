"""Our channel layers: the embedded in-memory one with a receive that costs O(1), and the Redis one with a
connection pool that waits instead of failing.

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

Why the Redis one: channels-redis gives each event loop a redis-py ``ConnectionPool``, which in redis-py 8
holds at most 100 connections and raises ``MaxConnectionsError`` on the 101st concurrent command instead of
waiting. A burst of stanzas (``bench.load_mixed``: 200 sessions, 500 messages) made over 100 ``send`` calls
at once, and each failed send ended its session with ``internal-server-error``. With redis-py's
``BlockingConnectionPool`` a send waits for a free connection (up to the pool's ``timeout``), so the number of
Redis connections per process stays bounded and a burst is only slower.
"""

from __future__ import annotations

import time
from typing import Any

from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool

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

    async def receive(self, channel: str) -> dict[str, Any]:
        self._expire_channel(channel, time.time())
        return await super().receive(channel)  # its _clean_expired() is the throttled walk above

    async def flush(self) -> None:
        await super().flush()
        self._next_sweep = 0.0


class BlockingPoolRedisChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` whose per-loop pools wait for a free connection (``BlockingConnectionPool``).

    Each host is ``{"address": url, ...}``; the other keys go to the pool: ``max_connections`` (connections
    per event loop and host) and ``timeout`` (seconds a command waits for one before ``ConnectionError``),
    besides redis-py's connection options (``socket_timeout``).
    """

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        address = host.pop("address")
        return BlockingConnectionPool.from_url(address, **host)
