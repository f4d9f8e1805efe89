"""``runworker xmpp.router`` serves :func:`transport.im.router.router_application` quietly (issue 18 §6):
channels' worker hands the consumer a ``send`` that is not a coroutine function, and asgiref warned about it
on the first message of every run."""

from __future__ import annotations

import asyncio
import logging
import warnings

from channels.layers import InMemoryChannelLayer
from channels.routing import ChannelNameRouter
from channels.worker import Worker

from transport.im.router import router_application

CHANNEL = "test.router"


async def _serve_one(layer: InMemoryChannelLayer) -> None:
    worker = Worker(ChannelNameRouter({CHANNEL: router_application()}), [CHANNEL], layer)
    listener = asyncio.ensure_future(worker.listener(CHANNEL))
    await layer.send(CHANNEL, {"type": "xmpp.route", "xml": "<not xml"})
    for _ in range(100):  # until the consumer instance took the message
        await asyncio.sleep(0.02)
        if worker.application_instances and layer.channels.get(CHANNEL) is None:
            break
    await asyncio.sleep(0.2)
    listener.cancel()
    for instance in worker.application_instances.values():
        instance["future"].cancel()


def test_the_router_worker_takes_a_message_without_an_asgiref_warning(caplog):
    layer = InMemoryChannelLayer()
    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level(logging.ERROR, "transport.im.router"),
    ):
        warnings.simplefilter("always")
        asyncio.run(_serve_one(layer))
    assert "router: failed on <not xml" in caplog.text  # the consumer did handle the message
    assert [str(w.message) for w in caught if "async_to_sync" in str(w.message)] == []
