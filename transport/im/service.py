"""The router channel served inside a listener process, for deployments without Redis.

Spec: DESIGN §1 (embedded mode: one process, in-memory channel layer). With Redis, ``manage.py runworker
xmpp.router`` serves the same channel through ``transport.im.router.RouterConsumer`` (xmppauth.asgi); without
it
the in-memory layer reaches only this process, so ``runxmpp`` and ``runc2s`` run :func:`serve_router` here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.layers import get_channel_layer
from channels.worker import Worker

from transport.im.bridge import in_db_thread, layer_outage, send_all
from transport.im.router import ROUTER_CHANNEL, Router, bounce_refused, routed_when_possible

logger = logging.getLogger(__name__)
RETRY_SECONDS = 1.0  # between two receives while the channel layer is unreachable


async def serve_router(layer: Any = None, channel: str = ROUTER_CHANNEL) -> None:
    """Handle ``xmpp.route`` messages on ``channel`` until cancelled, one at a time, like runworker."""
    layer = layer if layer is not None else get_channel_layer()
    router = Router(final=True)
    logger.info("router serving %s in-process", channel)
    while True:
        message = await layer.receive(channel)
        if message.get("type") != "xmpp.route":
            logger.debug("router: %s ignored", message.get("type"))
            continue
        try:
            outs = await in_db_thread(routed_when_possible, router, message)
        except Exception:
            logger.exception("router: failed on %s", str(message.get("xml", ""))[:200])
            continue
        for _, refused in await send_all(layer, outs):  # a full channel: bounced (RFC 6120 §8.3)
            await send_all(layer, await in_db_thread(bounce_refused, router, refused))


_tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


def start_in_process_router(
    layer: Any = None, loop: asyncio.AbstractEventLoop | None = None
) -> asyncio.Task[None]:
    """Start :func:`serve_router` on ``loop`` (by default the Twisted asyncio reactor's loop)."""
    if loop is None:
        from twisted.internet import reactor

        loop = getattr(reactor, "_asyncioEventloop", None) or asyncio.get_event_loop()
    task = loop.create_task(serve_router(layer))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


class ResilientWorker(Worker):
    """channels' ``Worker`` for ``manage.py runworker xmpp.router``, whose receive loop outlives the channel
    layer: stock, one Redis error ends the process, and the router would stay down after Redis came back
    (issue 16 point 4). Here the error is logged once per outage and the receive is retried."""

    async def listener(self, channel: str) -> None:
        while True:
            try:
                message = await self.channel_layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                layer_outage.failed(exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            layer_outage.ok()
            if not message.get("type", None):
                logger.warning("worker: a message without type on %s ignored", channel)
                continue
            queue = self.get_or_create_application_instance(channel, {"type": "channel", "channel": channel})
            await queue.put(message)
