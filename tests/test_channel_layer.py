"""The embedded in-memory channel layer (xmppauth.channel_layer): stock expiry rules, without a global walk
on every receive."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from xmppauth.channel_layer import LazyExpiryInMemoryChannelLayer


def run(coro):
    return asyncio.run(coro)


def test_settings_use_the_lazy_layer_without_redis():
    if settings.REDIS_URL:
        pytest.skip("REDIS_URL set: the Redis layer is configured")
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    assert backend == "xmppauth.channel_layer.LazyExpiryInMemoryChannelLayer"


def test_a_message_sent_is_received_on_its_channel():
    async def scenario():
        layer = LazyExpiryInMemoryChannelLayer()
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "hello"})
        return await layer.receive(channel)

    assert run(scenario()) == {"type": "hello"}


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
