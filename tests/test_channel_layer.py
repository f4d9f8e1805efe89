"""Our channel layers: the embedded in-memory one (xmppauth.channel_layer: stock expiry rules, without a
global walk on every receive), and the Redis one (xmppauth.redis_layer) whose pool waits for a connection in
a burst; an embedded process does not load the Redis one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.utils.module_loading import import_string
from redis.exceptions import MaxConnectionsError

from tests.im.processes import REDIS_TEST_URL, redis_unreachable
from tests.processes import free_port, skip_without_redis
from xmppauth.channel_layer import LazyExpiryInMemoryChannelLayer
from xmppauth.redis_layer import BlockingPoolRedisChannelLayer


def run(coro):
    return asyncio.run(coro)


def test_settings_use_the_lazy_layer_without_redis():
    if settings.REDIS_URL:
        pytest.skip("REDIS_URL set: the Redis layer is configured")
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    assert backend == "xmppauth.channel_layer.LazyExpiryInMemoryChannelLayer"


ROOT = Path(__file__).resolve().parents[1]
LAYER_PROBE = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    import transport.management.commands.runc2s, transport.management.commands.runxmpp
    from channels.layers import get_channel_layer
    layer = get_channel_layer()
    loaded = sorted(name for name in ("channels_redis", "redis") if name in sys.modules)
    print(json.dumps({"layer": type(layer).__name__, "loaded": loaded}))
    """
)


def probe_layer(tmp_path: Path, redis_url: str | None) -> dict:
    """A fresh server process's settings, command modules and channel layer: which Redis modules it loaded."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="xmppauth.settings",
        XMPPAUTH_VAR_DIR=str(tmp_path),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    if redis_url is not None:
        env["REDIS_URL"] = redis_url  # never contacted: making the layer opens no connection
    result = subprocess.run(
        [sys.executable, "-c", LAYER_PROBE], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_embedded_process_does_not_load_channels_redis(tmp_path):
    # Issue 17 §5: channels-redis and redis-py cost about 5 MiB at start in a process that never uses them.
    assert probe_layer(tmp_path, None) == {"layer": "LazyExpiryInMemoryChannelLayer", "loaded": []}


def test_a_process_with_redis_url_loads_the_redis_layer(tmp_path):
    probed = probe_layer(tmp_path, "redis://127.0.0.1:1/0")
    assert probed == {"layer": "BlockingPoolRedisChannelLayer", "loaded": ["channels_redis", "redis"]}


def test_a_message_sent_is_received_on_its_channel():
    async def scenario():
        layer = LazyExpiryInMemoryChannelLayer()
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "hello"})
        return await layer.receive(channel)

    assert run(scenario()) == {"type": "hello"}


def test_a_full_channel_refuses_a_send_and_keeps_what_it_holds():
    async def scenario():
        layer = LazyExpiryInMemoryChannelLayer(capacity=2)
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "one"})
        await layer.send(channel, {"type": "two"})
        with pytest.raises(ChannelFull):
            await layer.send(channel, {"type": "three"})
        return [await layer.receive(channel), await layer.receive(channel)], channel in layer.channels

    assert run(scenario()) == ([{"type": "one"}, {"type": "two"}], False)


def test_a_receive_waiting_on_its_channel_gets_a_later_send():
    async def scenario():
        layer = LazyExpiryInMemoryChannelLayer()
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0)
        await layer.send(channel, {"type": "late"})
        return await asyncio.wait_for(waiting, 5)

    assert run(scenario()) == {"type": "late"}


def test_an_expired_message_is_not_received_and_its_channel_leaves_its_groups():
    async def scenario():
        layer = LazyExpiryInMemoryChannelLayer(expiry=-1)  # every message is already past its expiry
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.send(channel, {"type": "old"})
        layer.expiry = 60
        await layer.send(channel, {"type": "new"})
        message = await layer.receive(channel)
        return message, layer.groups.get("g", {})

    message, group = run(scenario())
    assert message == {"type": "new"}
    assert group == {}


def test_receive_does_not_walk_other_channels_between_sweeps():
    async def scenario():
        layer = LazyExpiryInMemoryChannelLayer(expiry=-1, sweep_interval=3600)
        layer._next_sweep = float("inf")  # no global walk during this test
        other = await layer.new_channel()
        await layer.send(other, {"type": "stale"})  # expired, on a channel nobody receives on
        mine = await layer.new_channel()
        layer.expiry = 60
        await layer.send(mine, {"type": "mine"})
        await layer.receive(mine)
        return other in layer.channels

    assert run(scenario()) is True


def test_the_periodic_sweep_drops_expired_messages_of_channels_nobody_receives_on():
    async def scenario():
        layer = LazyExpiryInMemoryChannelLayer(expiry=-1, sweep_interval=0)
        other = await layer.new_channel()
        await layer.send(other, {"type": "stale"})
        mine = await layer.new_channel()
        layer.expiry = 60
        await layer.send(mine, {"type": "mine"})
        await layer.receive(mine)
        return other in layer.channels

    assert run(scenario()) is False


def test_group_send_reaches_every_member():
    async def scenario():
        layer = LazyExpiryInMemoryChannelLayer()
        first, second = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("g", first)
        await layer.group_add("g", second)
        await layer.group_send("g", {"type": "all"})
        return await layer.receive(first), await layer.receive(second)

    assert run(scenario()) == ({"type": "all"}, {"type": "all"})


# -- the Redis layer: a burst waits for a pooled connection instead of failing (bench.load_mixed found it) --


def _redis_url() -> str:
    return os.environ.get("REDIS_URL") or REDIS_TEST_URL


def _burst(layer, sends: int) -> list:
    """``sends`` concurrent sends to channels of one process (one Redis key: ``capacity`` must hold them all),
    then every message received; the results."""

    async def scenario():
        channels = [await layer.new_channel() for _ in range(sends)]
        try:
            sent = await asyncio.gather(
                *(layer.send(channel, {"type": "burst", "n": n}) for n, channel in enumerate(channels)),
                return_exceptions=True,
            )
            if not any(isinstance(result, Exception) for result in sent):
                received = [await layer.receive(channel) for channel in channels]
                sent = [message["n"] for message in received]
            return sent
        finally:
            await layer.flush()

    return run(scenario())


def test_settings_use_the_blocking_pool_layer_with_redis():
    if not settings.REDIS_URL:
        pytest.skip("no REDIS_URL: the in-memory layer is configured")
    default = settings.CHANNEL_LAYERS["default"]
    assert default["BACKEND"] == "xmppauth.redis_layer.BlockingPoolRedisChannelLayer"
    (host,) = default["CONFIG"]["hosts"]
    assert host["max_connections"] > 0 and host["timeout"] > 0


def test_a_burst_beyond_the_pool_waits_for_connections_and_every_message_arrives():
    skip_without_redis(redis_unreachable(_redis_url()))
    host = {"address": _redis_url(), "max_connections": 4, "timeout": 30}
    layer = BlockingPoolRedisChannelLayer(
        hosts=[host], prefix=f"test-burst-{uuid.uuid4().hex}", capacity=1000
    )
    assert _burst(layer, 300) == list(range(300))


def test_the_stock_layer_fails_the_same_burst():
    """What the blocking pool fixes: redis-py 8's pool raises past ``max_connections`` (default 100)."""
    skip_without_redis(redis_unreachable(_redis_url()))
    host = {"address": _redis_url(), "max_connections": 4}
    layer = RedisChannelLayer(hosts=[host], prefix=f"test-burst-{uuid.uuid4().hex}", capacity=1000)
    results = _burst(layer, 300)
    assert any(isinstance(result, MaxConnectionsError) for result in results), results[:5]


# -- the configured layer keeps a message however long it waits (issue 16 point 6) ------------------------


def _configured_layer():
    """The layer ``settings.CHANNEL_LAYERS`` configures on this leg (Redis: under a prefix of its own)."""
    default = settings.CHANNEL_LAYERS["default"]
    config = dict(default.get("CONFIG") or {})
    if "hosts" in config:
        skip_without_redis(redis_unreachable(_redis_url()))
        config["prefix"] = f"test-expiry-{uuid.uuid4().hex}"
    return import_string(default["BACKEND"])(**config)


def test_a_message_that_waited_over_a_minute_for_its_reader_is_still_received(monkeypatch):
    """channels' default expiry (60 s) dropped, without a trace, a message that waited behind a storm
    (bench.load_mixed saw 70 s): a stanza must be delivered, stored or bounced (RFC 6120 §8.3)."""
    layer = _configured_layer()

    async def scenario():
        waited, other = await layer.new_channel(), await layer.new_channel()  # one process's channels
        try:
            await layer.send(waited, {"type": "waited"})
            later = time.time() + 61
            monkeypatch.setattr(time, "time", lambda: later)  # a minute on: the next send and receive expire
            await layer.send(other, {"type": "later"})
            return await asyncio.wait_for(layer.receive(waited), 5), await layer.receive(other)
        finally:
            monkeypatch.undo()
            await layer.flush()

    assert run(scenario()) == ({"type": "waited"}, {"type": "later"})


def test_a_backup_cleaner_that_meets_a_redis_outage_logs_one_line_and_raises_nothing(caplog):
    """channels-redis runs this cleaner as a task nobody awaits: an exception left in it was printed as a
    traceback whenever asyncio collected the task (seen in tests/faults/test_redis_outage.py)."""
    address = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    ours = BlockingPoolRedisChannelLayer(hosts=[{"address": address, "timeout": 2}], prefix="test-cleaner")
    with caplog.at_level("WARNING", logger="xmppauth.redis_layer"):
        assert asyncio.run(ours._clean_receive_backup(0, "test.channel")) is None
    assert "a received message's backup copy not cleared" in caplog.text
    stock = RedisChannelLayer(hosts=[{"address": address}], prefix="test-cleaner")
    from redis.exceptions import ConnectionError as RedisConnectionError

    with pytest.raises(RedisConnectionError):  # what the task kept before
        asyncio.run(stock._clean_receive_backup(0, "test.channel"))
