"""No stanza lost to a dead listener: per-process liveness keys in Redis, and the sweep of a dead process.

Specs: RFC 6121 §8.5 (a stanza for a resource that is gone is delivered to another resource, stored offline
or answered with an error), RFC 6120 §8.3 (the error goes back to the sender), issue 16 point 1.

With Redis, a stanza for a session on another listener process goes straight to that session's channel
(``transport.im.bridge``). If that process was SIGKILLed, the registry row of the session stays valid until
its lease runs out (``session_lease_seconds``, 30 s) and the stanza would sit in Redis until channels-redis
expires it. So each listener process:

- keeps ``xmppauth:alive:<process id>`` in Redis, expiring ``process_liveness_seconds`` (default 5) after its
  last refresh, refreshed every third of that;
- every :data:`SWEEP_INTERVAL` seconds looks at the registry's other processes; one whose key is gone (while
  this process has reached Redis without a break for the whole bound, so a Redis outage is not a death) is
  claimed by one sweeper (``SET NX xmppauth:swept:<process id>``), its rows are deleted, and the stanzas
  waiting on its channels (and on channels-redis's in-flight backup) are taken out of Redis and handed to the
  router: delivered to another resource, stored offline (XEP-0160) or bounced to their sender. The dead
  process's channels are drained again for :data:`REDRAIN_SECONDS`, for senders that read its rows just
  before they went.

The bound: a stanza sent to a dead listener is re-routed at most ``process_liveness_seconds`` +
:data:`SWEEP_INTERVAL` seconds after the process died (6 s by default). What the dead process had already
taken from Redis and not yet written to its client's socket (milliseconds of traffic) is beyond reach without
stream management (XEP-0198).

A process that finds itself swept (it stalled longer than the bound) ends its sessions with
``internal-server-error``: they are no longer in the registry, so nothing would reach them any more.

A Redis that restarts empty (no persistence) or fails over to a replica that lacks the keys has lost every
liveness key at once: each process notices by :data:`EPOCH_KEY` (a value set once, kept without expiry)
having changed, at its refresh and before any sweep, and calls nobody dead until Redis has answered it for a
whole bound again, time for every live process to set its key anew (issue 16 point 4).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import ParseError

from django.conf import settings
from django.db.models import Max

from transport.im.router import ROUTER_CHANNEL, Out, element_kind, load, route_message
from transport.sessions import terminations as store
from transport.sessions.models import LiveSession
from xmppauth.outage import DATABASE_UNAVAILABLE

logger = logging.getLogger(__name__)

ALIVE_KEY = "xmppauth:alive:"  # + process id
SWEPT_KEY = "xmppauth:swept:"  # + process id: set once, by the one sweeper that claimed the dead process
EPOCH_KEY = "xmppauth:epoch:"  # + layer prefix; set once (NX) by the first process: a new value, data lost
SWEEP_INTERVAL = 1.0  # seconds between two looks for dead processes
REDRAIN_SECONDS = 15.0  # a dead process's channels are drained this long after it was swept
SWEPT_KEEP_SECONDS = 3600  # how long the claim stays (process ids carry their start time: never reused)
INTERNAL = "internal-server-error"  # RFC 6120 §4.9.3.8
TEXT_SWEPT = "this server process lost its place in the session registry"


def bound_seconds() -> int:
    """``[xmppauth] process_liveness_seconds`` of the config (default 5)."""
    options = getattr(getattr(settings, "XMPP", None), "options", None)
    return int(getattr(options, "process_liveness_seconds", 5) or 5)


def channel_key(layer: Any, channel: str) -> str:
    """channels-redis's Redis key for a process-specific channel (``specific.<client prefix>!...``): every
    channel of one process shares it (channels_redis.core.RedisChannelLayer.send)."""
    return f"{layer.prefix}{channel[: channel.index('!') + 1]}"


def reroutable(message: dict[str, Any]) -> Out | None:
    """What a stanza found on a dead process's channel becomes: a route request to the router, or None.

    Messages (RFC 6121 §8.5: delivered elsewhere, stored, or bounced) and IQ requests (§8.5.3.2.3:
    ``service-unavailable`` to the sender) are re-routed; presence to a resource that is gone is dropped
    (§8.5.3.2.2), as are errors and results (RFC 6120 §8.3.1) and control messages. An offline message being
    delivered (it carries ``offline_id``) is still in the store: it is delivered at the next login.
    """
    if message.get("type") != "xmpp.stanza" or message.get("offline_id") is not None:
        return None
    try:
        element = load(str(message.get("xml", "")))
    except ParseError:
        logger.warning("liveness: an unreadable stanza on a dead process's channel was dropped")
        return None
    kind = element_kind(element)
    if not element.get("from") or element.get("type") in ("error", "result"):
        return None
    if kind == "message" or (kind == "iq" and element.get("type") in ("get", "set")):
        return (ROUTER_CHANNEL, route_message(element))
    return None


@dataclass
class Liveness:
    """This process's key and its sweeps. ``refresh`` and ``sweep`` do blocking I/O: call them in a thread."""

    client: Any  # a redis.Redis
    layer: Any  # the process's channels-redis layer (its key prefix and serializer)
    process: str = field(default_factory=store.process_id)
    seconds: int = 5
    ok_since: float | None = None  # monotonic time since when Redis answered every refresh
    epoch: bytes | None = None  # EPOCH_KEY's value when this process last looked
    draining: dict[str, float] = field(default_factory=dict)  # channel key -> drain until (monotonic)

    def refresh(self) -> bool:
        """Renew our key; True when another process has swept us (our sessions must end)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(ALIVE_KEY + self.process, "1", px=int(self.seconds * 1000))
            pipe.exists(SWEPT_KEY + self.process)
            pipe.set(self.epoch_key, uuid.uuid4().hex, nx=True)  # new at every restart, whoever sets it
            pipe.get(self.epoch_key)
            _, swept, _, epoch = pipe.execute()
        except Exception as exc:
            if self.ok_since is not None:
                logger.error("liveness: cannot refresh this process's key in Redis: %s", exc)
            self.ok_since = None
            return False
        self._same_epoch(epoch)
        if self.ok_since is None:
            self.ok_since = time.monotonic()
        return bool(swept)

    @property
    def epoch_key(self) -> str:
        return EPOCH_KEY + str(getattr(self.layer, "prefix", ""))

    def _same_epoch(self, epoch: bytes | None) -> bool:
        """False (and Redis counts as just reached) when its data changed since we last looked."""
        if epoch == self.epoch:
            return True
        if self.epoch is not None:
            logger.warning("liveness: Redis lost its keys (restarted or failed over): no process is called"
                           " dead for the next %d s", self.seconds)  # fmt: skip
        self.epoch = epoch
        self.ok_since = time.monotonic()
        return False

    def dead_processes(self) -> dict[str, str]:
        """Other processes with rows in the registry and no liveness key: process id -> a channel of it."""
        rows = (
            LiveSession.objects.exclude(process_id=self.process)
            .exclude(channel_name="")
            .values("process_id")
            .annotate(channel=Max("channel_name"))
        )
        holders = {row["process_id"]: row["channel"] for row in rows if "!" in row["channel"]}
        if not holders:
            return {}
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([ALIVE_KEY + process for process in holders])
        pipe.get(self.epoch_key)
        alive, epoch = pipe.execute()
        if not self._same_epoch(epoch):
            return {}  # the keys are missing because Redis lost them, not because their processes died
        return {process: holders[process] for process, key in zip(holders, alive, strict=True) if key is None}

    def sweep(self) -> list[Out]:
        """Claim and clear dead processes, drain the channels being drained; returns what to route."""
        now = time.monotonic()
        if self.ok_since is None or now - self.ok_since < self.seconds:
            return []  # not sure enough of Redis to call anyone dead
        for process, channel in self.dead_processes().items():
            if not self.client.set(SWEPT_KEY + process, self.process, nx=True, ex=SWEPT_KEEP_SECONDS):
                continue  # another sweeper has it
            deleted = store.forget_process(process)
            self.draining[channel_key(self.layer, channel)] = now + REDRAIN_SECONDS
            logger.warning(
                "liveness: process %s stopped refreshing its key (%d s): its %d session(s) left the registry,"
                " their waiting stanzas are re-routed",
                process,
                self.seconds,
                deleted,
            )
        outs: list[Out] = []
        for key, until in list(self.draining.items()):
            if until < now:
                del self.draining[key]
                continue
            outs += self.drain(key)
        return outs

    def drain(self, key: str) -> list[Out]:
        """Take every message off one dead channel key (and channels-redis's in-flight backup of it)."""
        pipe = self.client.pipeline(transaction=True)
        for name in (key + "$inflight", key):
            pipe.zrange(name, 0, -1)
            pipe.delete(name)
        results = pipe.execute()
        members = [*results[0], *results[2]]
        outs: list[Out] = []
        for member in members:
            try:
                message = self.layer.deserialize(member)
            except Exception:
                logger.warning("liveness: an unreadable message on %s was dropped", key)
                continue
            message.pop("__asgi_channel__", None)
            out = reroutable(message)
            if out is not None:
                outs.append(out)
        if outs:
            logger.warning("liveness: %d stanza(s) waiting on a dead process's channels re-routed", len(outs))
        return outs


_running: dict[str, Any] = {}


def start(reactor: Any, registry: Any) -> Liveness | None:
    """Run the key refresh and the sweep on ``reactor`` (a listener process with a Redis channel layer)."""
    from channels.layers import get_channel_layer
    from twisted.internet.task import LoopingCall

    from transport.im.bridge import send_all
    from transport.workers import defer_to_worker
    from xmppauth.dbconn import with_fresh_connections

    url = getattr(settings, "REDIS_URL", "")
    layer = get_channel_layer()
    if not url or not hasattr(layer, "deserialize") or "liveness" in _running:
        return None
    import redis

    seconds = bound_seconds()
    liveness = Liveness(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), layer)
    liveness.seconds = seconds

    def in_thread(function: Any, *args: Any) -> Any:
        return defer_to_worker(reactor, function, *args)

    def refreshed(swept: bool) -> None:
        if not swept:
            return
        logger.error("liveness: this process was swept by another (stalled beyond %d s)", seconds)
        for handle in list(registry.handles.values()):
            handle.end(INTERNAL, TEXT_SWEPT)

    def refresh_forever() -> None:
        """Its own thread, not the reactor's pool: a pool busy with database calls must not make a live
        process look dead."""
        while True:
            try:
                if liveness.refresh():
                    reactor.callFromThread(refreshed, True)
            except Exception:
                logger.exception("liveness refresh")
            time.sleep(seconds / 3)

    async def send(outs: list[Out]) -> None:
        refused = await send_all(layer, outs)
        if refused:  # the router channel is full: say so loudly (channels-redis keeps nothing else)
            logger.error("liveness: the router channel refused %d re-routed stanza(s)", len(refused))

    def route(outs: list[Out]) -> None:
        if outs:
            asyncio.ensure_future(send(outs))

    def swept_failed(failure: Any) -> None:
        if failure.check(redis.RedisError, *DATABASE_UNAVAILABLE):  # an outage: the next sweep retries
            logger.warning("liveness sweep: %s", failure.value)
        else:
            logger.error("liveness sweep: %s", failure.getTraceback())

    def sweep() -> Any:
        deferred = in_thread(with_fresh_connections, liveness.sweep)
        deferred.addCallback(route)
        deferred.addErrback(swept_failed)
        return deferred

    liveness.refresh()  # the key exists before this process's first session row
    threading.Thread(target=refresh_forever, name="xmppauth liveness", daemon=True).start()
    loop = LoopingCall(sweep)
    loop.clock = reactor
    loop.start(SWEEP_INTERVAL, now=True)
    _running["sweep"] = loop
    _running["liveness"] = liveness
    logger.info(
        "liveness: key expires %d s after its last refresh; dead processes swept every %g s",
        seconds,
        SWEEP_INTERVAL,
    )
    return liveness
