"""Our Redis channel layer: channels-redis with a connection pool that waits instead of failing.

Spec: the Channels layer API (channels docs "Channel Layer Specification"). Its own module, imported only
through ``CHANNEL_LAYERS`` when ``REDIS_URL`` is set (``xmppauth.settings``), so an embedded process never
loads channels-redis and redis-py (issue 17 §5: about 5 MiB at start).

Why: channels-redis gives each event loop a redis-py ``ConnectionPool``, which in redis-py 8 holds at most 100
connections and raises ``MaxConnectionsError`` on the 101st concurrent command instead of
waiting. A burst of stanzas (``bench.load_mixed``: 200 sessions, 500 messages) made over 100 ``send`` calls
at once, and each failed send ended its session with ``internal-server-error``. With redis-py's
``BlockingConnectionPool`` a send waits for a free connection (up to the pool's ``timeout``), so the number of
Redis connections per process stays bounded and a burst is only slower.
"""

from __future__ import annotations

import logging

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


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

    async def _clean_receive_backup(self, index: int, channel: str) -> None:
        """channels-redis fires this off as a task of its own after each message received, and nobody awaits
        it: when Redis goes away meanwhile, its ConnectionError stayed in the task, and asyncio printed the
        traceback whenever the task was collected. The outage is logged in one line instead; the entry it
        could not clear is only a backup copy of a message already handed over."""
        try:
            await super()._clean_receive_backup(index, channel)
        except (RedisError, OSError) as exc:
            logger.warning("channel layer (Redis): a received message's backup copy not cleared: %s", exc)
