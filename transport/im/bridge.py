"""Connects one bound c2s session, of any transport, to the router and the Channels layer.

Specs: RFC 6120 §7.7.2.2 (a second login with the same full JID ends the older stream with ``conflict``),
RFC 6121 §4 (the session's presence: initial, broadcast, answered probes, unavailable at the end), DESIGN §1
(routing through the channel layer). The routing decisions are ``transport.im.router``'s; this module only
moves stanzas between the adapter, the router (in a worker thread) and the channel layer.

An adapter (TCP, WebSocket, BOSH) does four things, all on the event loop's thread::

    bridge = SessionBridge(full_jid, deliver=lambda el: ..., close=lambda condition, text: ...)
    handle = live.bind_session(..., bridge=bridge)  # starts it once the bind is admitted:
    bridge.start(handle, older)                # older: the sessions this login replaces (None: look up)
    bridge.from_client(element)                # each StanzaReceived
    bridge.stop()                              # when the connection is gone, however it ends

``deliver(element)`` queues a stanza for the client (``core.send_stanza`` and a flush); ``close`` ends the
stream with a stream error. Stanzas from the client are handled one at a time, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from xml.etree.ElementTree import Element

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from transport.im import local
from transport.im.router import (
    BROADCAST_TYPES,
    ROUTER_CHANNEL,
    Live,
    Out,
    Router,
    bounce_refused,
    close_message,
    dump,
    element_kind,
    expiry_notice,
    load,
    offline_delivered,
    older_sessions,
    route_message,
    stanza_message,
)
from transport.sessions import terminations as store
from transport.workers import in_database
from transport.xmpp import namespaces as ns
from xmppauth import limits, metrics
from xmppauth.outage import DATABASE_UNAVAILABLE, OutageLog
from xmppauth.queues import LightQueue

logger = logging.getLogger(__name__)
layer_outage = OutageLog(logger, "channel layer (Redis)", "redis")  # once per outage, not per session
database_outage = OutageLog(logger, "database (routing)")

CONFLICT = "conflict"  # RFC 6120 §4.9.3.3
INTERNAL = "internal-server-error"  # RFC 6120 §4.9.3.8: routing failed, the client should reconnect
DRAIN_SECONDS = 1.0  # after a session ends, its channel is read this long for stanzas already on their way


def new_channel_name(layer: Any) -> str:
    """``layer.new_channel()`` without awaiting: both layers we use make the name without I/O."""
    coroutine = layer.new_channel()
    try:
        coroutine.send(None)
    except StopIteration as done:
        return str(done.value)
    coroutine.close()
    raise RuntimeError(f"{type(layer).__name__}.new_channel needs I/O; call it from a coroutine")


async def in_db_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run a session's Django code (``transport.workers.in_database``: on the loop's thread while SQLite's
    calls are short there, else in a worker thread, where sessions route in parallel)."""
    return await in_database(function, *args)


async def send_all(layer: Any, outs: list[Out]) -> list[Out]:
    """Send each; returns those a full channel refused (the caller bounces them: ``bounce_refused``)."""
    refused: list[Out] = []
    for channel, message in outs:
        try:
            await layer.send(channel, message)
        except ChannelFull:
            logger.warning("channel %s is full: a %s was refused", channel, message.get("type"))
            refused.append((channel, message))
    return refused


async def send_each(layer: Any, outs: list[Out]) -> tuple[list[Out], list[Out]]:
    """Send each; returns those a full channel refused and those the layer could not take at all (Redis
    unreachable: ``transport.im.local`` delivers or bounces them)."""
    refused: list[Out] = []
    unreachable: list[Out] = []
    for channel, message in outs:
        for attempt in (1, 2):  # after a Redis restart a pooled connection fails once, then reconnects
            try:
                await layer.send(channel, message)
            except ChannelFull:
                logger.warning("channel %s is full: a %s was refused", channel, message.get("type"))
                refused.append((channel, message))
            except Exception as exc:
                if attempt == 1:
                    continue
                layer_outage.failed(exc)
                unreachable.append((channel, message))
            else:
                layer_outage.ok()
            break
    return refused, unreachable


class SessionBridge:
    """One session's side of routing: its channel, its presence, its queue of stanzas to route."""

    def __init__(
        self,
        full_jid: str,
        *,
        deliver: Callable[[Element], None],
        close: Callable[[str, str], None],
        layer: Any = None,
        router_channel: str = ROUTER_CHANNEL,
    ) -> None:
        self.full_jid = full_jid
        self.bare_jid = full_jid.split("/", 1)[0]
        self.deliver = deliver
        self.close = close
        self.layer = layer if layer is not None else get_channel_layer()
        self.channel_name = new_channel_name(self.layer)
        self.router = Router(final=False, router_channel=router_channel)
        self.presence: Element | None = None  # the last available broadcast presence (answers probes)
        self.session_id: Any = None
        self.facts: Any = None  # the registry's SessionFacts (certificate, transport, peer), once bound
        self.started_at: Any = None  # the registry row's start time (RFC 6120 §7.7.2.2 compares them)
        self.cert_not_after: Any = None  # the session certificate's notAfter (None: a password login)
        self._queue: LightQueue[tuple[str, Any]] = LightQueue()  # ~3 KiB less than asyncio.Queue per session
        # The routing task runs while the queue holds work and is gone between (issue 17 §5: an idle session
        # holds no task of its own but the channel's listener).
        self._worker: asyncio.Task[Any] | None = None
        self._listener: asyncio.Task[Any] | None = None
        self._stopped = False
        self._replaced = False  # ended by a newer login of the same full JID
        self._owns_row = False  # set in start() when the session has a registry row to delete
        self._queued_bytes = 0  # serialised size of the client's stanzas waiting in _queue
        self._failed = False  # routing failed: the stream is being closed with internal-server-error
        self._offline_taken: list[int] = []  # offline messages the stream took, to delete from the store
        self._chores: set[asyncio.Task[Any]] = set()
        self.directed: set[str] = set()  # JIDs that got directed presence (RFC 6121 §4.6.3)

    # -- adapter interface -------------------------------------------------------------------------------

    def start(self, handle: Any = None, older: list[Live] | None = None) -> None:
        """The session is bound and registered (``handle`` from ``live.bind_session``); ``older``: what
        :meth:`older_than_me` answered right after the row's insert (None: not asked, look it up)."""
        self.session_id = getattr(handle, "session_id", None)
        self.facts = getattr(handle, "facts", None)
        self.started_at = getattr(getattr(handle, "facts", None), "started_at", None)
        self.cert_not_after = getattr(getattr(handle, "facts", None), "cert_not_after", None)
        # Only a persisted session has a row; then the bridge, not the registry, deletes it (live.py).
        self._owns_row = getattr(handle, "saved", None) is not None
        if self._owns_row:
            handle.row_deleted_by_bridge = True
        loop = asyncio.get_running_loop() if _loop_running() else asyncio.get_event_loop()
        local.register(self)  # reachable without the layer while Redis is down
        self._listener = loop.create_task(self._listen())
        self._listener.add_done_callback(self._supervise)
        self._enqueue("older", older)  # first of all (RFC 6120 §7.7.2.2)

    def from_client(self, element: Element) -> None:
        """Queue a client's stanza for routing; past ``[xmppauth] session_queue_stanzas`` or
        ``session_queue_bytes`` waiting, the session ends with ``policy-violation`` (RFC 6120 §4.9.3.14)."""
        if self._stopped or self._failed:
            return
        size = len(dump(element))
        self._queued_bytes += size
        stanzas, octets = limits.option("session_queue_stanzas"), limits.option("session_queue_bytes")
        if self._queue.qsize() >= stanzas or self._queued_bytes > octets:
            logger.warning(
                "%s: %d stanza(s), %d byte(s) waiting to be routed (limits %d, %d): the session ends",
                self.full_jid, self._queue.qsize(), self._queued_bytes, stanzas, octets,
            )  # fmt: skip
            self._failed = True
            # Not from inside the adapter's own event handling (it called us): on the next loop turn.
            loop = asyncio.get_running_loop() if _loop_running() else asyncio.get_event_loop()
            loop.call_soon(self.close, limits.POLICY_VIOLATION, "too many stanzas waiting to be routed")
            return
        metrics.count_stanza(element_kind(element), "in")
        self._enqueue("client", (element, size))

    def stop(self) -> None:
        """The connection is gone: broadcast unavailable if we were available, stop listening."""
        if self._stopped:
            return
        self._stopped = True
        self._enqueue("stop", None)  # the channel is still read until _finish is done

    # -- the work queue (one stanza at a time, in order) ------------------------------------------------

    def _enqueue(self, what: str, item: Any) -> None:
        """Queue work, and start the routing task if none runs (``start`` ran: the listener is there)."""
        self._queue.put_nowait((what, item))
        if self._worker is None and self._listener is not None:
            loop = asyncio.get_running_loop() if _loop_running() else asyncio.get_event_loop()
            self._worker = loop.create_task(self._work())
            self._worker.add_done_callback(self._supervise)

    async def _work(self) -> None:
        """The session's routing task, until the queue is empty. Supervised: an error ends the session with
        ``internal-server-error`` (logged with its cause), never a session that silently routes nothing;
        ``stop`` is still honoured."""
        try:
            await self._work_through_queue()
        finally:
            self._worker = None  # no await since the queue was found empty: the next put starts a new one

    async def _work_through_queue(self) -> None:
        while not self._queue.empty():
            what, item = self._queue.get_nowait()
            if what == "older":
                try:
                    await self._end_older_session(item)
                except Exception:
                    self._fail("ending the older session failed")
                continue
            if what == "stop":
                try:
                    await self._finish()
                except DATABASE_UNAVAILABLE as exc:
                    database_outage.failed(exc)
                    logger.warning("%s: not cleaned up, the database is unavailable: its row leaves with its"
                                   " lease", self.full_jid)  # fmt: skip
                except Exception:  # the lease removes the row; the peers' view catches up
                    logger.exception("%s: cleaning up after the session failed", self.full_jid)
                finally:
                    local.unregister(self)
                return
            if self._failed:
                continue  # the stream is closing: the client was told
            try:
                if what == "client":
                    element, size = item
                    self._queued_bytes -= size
                    await self._route(element)
                elif what == "presence_request":
                    await self._answer_presence_request(*item)
            except Exception:
                self._fail(f"routing a {what} stanza failed")

    def _fail(self, what: str) -> None:
        """Log the cause (call from an ``except`` block) and end the stream with ``internal-server-error``."""
        logger.exception("%s: %s; the session ends with %s", self.full_jid, what, INTERNAL)
        if self._failed or self._stopped:
            return
        self._failed = True
        try:
            self.close(INTERNAL, "routing failed")
        except Exception:
            logger.exception("%s: closing the session failed", self.full_jid)

    def _supervise(self, task: asyncio.Task[Any]) -> None:
        """A routing task that ends with an error (it should not: both catch theirs) ends the session."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        local.unregister(self)  # nothing is handed to a session whose routing is gone
        try:
            raise error
        except Exception:
            self._fail("the routing task died")

    async def _route(self, element: Element) -> None:
        try:
            outs = await self._decide(element)
        except DATABASE_UNAVAILABLE as exc:  # the session stays up; this process's sessions still chat
            database_outage.failed(exc)
            outs = local.route_without_database(element, self)
        else:
            database_outage.ok()
        await self._send(outs)

    async def _decide(self, element: Element) -> list[Out]:
        """The router's decision on a client's stanza (database reads, in a worker thread)."""
        if (
            element_kind(element) == "presence"
            and not element.get("to")
            and element.get("type") in BROADCAST_TYPES
        ):
            initial = self.presence is None and element.get("type") is None
            self.presence = None if element.get("type") == "unavailable" else element
            outs = await in_db_thread(
                self.router.broadcast, element, self.session_id, self.channel_name, initial
            )
            if self.presence is None:
                outs += await self._unavailable_to_directed()
            elif initial:
                outs += expiry_notice(self.full_jid, self.cert_not_after, self.channel_name)
        else:
            if element_kind(element) == "presence" and element.get("type") in BROADCAST_TYPES:
                # RFC 6121 §4.6.3: remember who got directed presence, to tell them when we go.
                if element.get("type") is None:
                    self.directed.add(element.get("to", ""))
                else:
                    self.directed.discard(element.get("to", ""))
            outs = await in_db_thread(self.router.from_client, element, self.channel_name, self.facts)
        return outs

    async def _send(self, outs: list[Out]) -> None:
        """Our own stanzas, and those for another session of this process, are handed over at once; the
        rest goes through the layer; what a full channel refused is bounced to its sender (RFC 6120 §8.3);
        what the layer could not take at all goes the way ``transport.im.local`` says.

        Why not through the layer between two sessions of one process: channels-redis reads a process's
        messages one at a time, four Redis round trips each, so under a storm (``bench.load_mixed``, issue
        16 point 6) they queued in Redis for over a minute; the same process can hand them over itself."""
        remote = []
        for channel, message in outs:
            target = self if channel == self.channel_name else local.by_channel(channel)
            if target is not None:
                target._on_message(message)
            else:
                remote.append((channel, message))
        refused, unreachable = await send_each(self.layer, remote)
        for channel, message in unreachable:
            await self._without_layer(channel, message)
        for _, message in refused:
            bounces = await in_db_thread(bounce_refused, self.router, message, self._channel_of(message))
            for channel, bounce in bounces:
                if channel == self.channel_name:
                    self._on_message(bounce)
                else:
                    await send_all(self.layer, [(channel, bounce)])

    async def _without_layer(self, channel: str, message: dict[str, Any]) -> None:
        """The layer (Redis) could not take ``message`` for ``channel``: a session of this process gets it
        directly; the router's work (offline storage, RFC 6121 §3.1.3 and XEP-0160) is done here; a stanza
        of ours for another process's session is bounced to us (``remote-server-timeout``)."""
        target = local.by_channel(channel)
        if target is not None:
            target._on_message(message)
            return
        text = local.TEXT_NO_LAYER
        if channel == self.router.router_channel and message.get("type") == "xmpp.route":
            try:
                outs = await in_db_thread(Router(final=True).routed, message)
            except DATABASE_UNAVAILABLE as exc:
                database_outage.failed(exc)
                text = local.TEXT_NO_DATABASE
            else:
                await self._send(outs)  # the final router never hands anything to the router channel again
                return
        if message.get("type") == "xmpp.close":
            raise ConnectionError(f"{channel} cannot be told to close: the channel layer is unavailable")
        if message.get("type") != "xmpp.stanza" or message.get("offline_id") is not None:
            return  # presence requests are not answered; an offline message stays stored for the next login
        stanza = load(message["xml"])
        answer = local.bounce(stanza, text)
        if answer is not None and stanza.get("from") == self.full_jid:
            kind, stanza_id = element_kind(stanza), stanza.get("id")
            logger.info("%s: a %s (id %r) bounced: %s", self.full_jid, kind, stanza_id, text)
            self._on_message(answer)

    def _channel_of(self, message: dict[str, Any]) -> str:
        """Our channel when the stanza is ours ('' lets the router look its sender up)."""
        ours = message.get("type") == "xmpp.stanza" and load(message["xml"]).get("from") == self.full_jid
        return self.channel_name if ours else ""

    async def _answer_presence_request(self, to: str, reply_channel: str) -> None:
        """A probe (RFC 6121 §4.3.2) or a new subscriber: our current presence, if we are available."""
        if self.presence is None or not reply_channel:
            return
        answer = Element(self.presence.tag, dict(self.presence.attrib))
        answer.extend(list(self.presence))
        answer.set("from", self.full_jid)
        answer.set("to", to)
        await self._send([(reply_channel, stanza_message(answer))])

    def older_than_me(self, facts: Any) -> list[Live]:
        """The sessions this login replaces; for ``live.sessions.register(after_save=...)`` (a worker thread,
        right after our row's insert, so a login racing ours sees one of the two rows)."""
        return older_sessions(facts.full_jid, facts.session_id, facts.started_at)

    async def _end_older_session(self, older: list[Live] | None = None) -> None:
        """RFC 6120 §7.7.2.2: the same full JID elsewhere is ended with ``conflict``."""
        if self.session_id is None:
            return
        if older is None:  # not looked up with the row's insert (no row, or the insert failed)
            older = await in_db_thread(older_sessions, self.full_jid, self.session_id, self.started_at)
        for session in older:
            logger.info(
                "%s: a new login replaces the session on %s (conflict)", self.full_jid, session.channel
            )
            await self._send([(session.channel, close_message(CONFLICT, "replaced by a new login"))])

    async def _unavailable_to_directed(self) -> list[Out]:
        """Unavailable presence to those that got directed presence and no unavailable (RFC 6121 §4.6.3)."""
        outs: list[Out] = []
        for target in sorted(self.directed):
            gone = Element(ns.PRESENCE, {"type": "unavailable", "from": self.full_jid, "to": target})
            outs += await in_db_thread(self.router.from_client, gone, self.channel_name)
        self.directed.clear()
        return outs

    async def _finish(self) -> None:
        if self._owns_row:
            # Out of the registry before anyone hears we left: nothing more is routed to this channel.
            await in_db_thread(store.delete_session, self.session_id)
        if self.presence is not None and not self._replaced:
            gone = Element(ns.PRESENCE, {"type": "unavailable", "from": self.full_jid})
            self.presence = None
            outs = await in_db_thread(self.router.broadcast, gone, None, self.channel_name, False)  # §4.5.2
            await self._send([o for o in outs if o[0] != self.channel_name])
        if self.directed and not self._replaced:
            outs = await self._unavailable_to_directed()
            await self._send([o for o in outs if o[0] != self.channel_name])
        # Stanzas routed here just before the row went are handed back to the router meanwhile.
        await asyncio.sleep(DRAIN_SECONDS)
        if self._listener is not None:
            self._listener.cancel()

    # -- the session's channel ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: logged once per outage, retried every second
                layer_outage.failed(exc)
                logger.debug("%s: receive on %s failed: %s", self.full_jid, self.channel_name, exc)
                await asyncio.sleep(1)
                continue
            layer_outage.ok()
            self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if self._stopped:
            self._reroute(message)
            return
        if kind == "xmpp.stanza":
            try:
                stanza = load(message["xml"])
                self.deliver(stanza)
            except Exception:
                logger.exception("%s: could not deliver a stanza", self.full_jid)
                return
            metrics.count_stanza(element_kind(stanza), "out")
            if message.get("offline_id") is not None:  # XEP-0160: taken by the stream, out of the store
                self._offline_taken.append(int(message["offline_id"]))
                if len(self._offline_taken) == 1:
                    self._chore(self._delete_offline())
        elif kind == "xmpp.close":
            self._replaced = message.get("condition") == CONFLICT
            self.close(message.get("condition") or CONFLICT, message.get("text") or "")
        elif kind == "xmpp.presence_request":
            self._enqueue("presence_request", (message.get("to", ""), message.get("reply_channel", "")))
        else:
            logger.debug("%s: channel message %s ignored", self.full_jid, kind)

    async def _delete_offline(self) -> None:
        await asyncio.sleep(0)  # one DELETE for the batch delivered together
        ids, self._offline_taken = self._offline_taken, []
        try:
            await in_db_thread(offline_delivered, ids)
        except Exception:  # they stay stored: delivered again at the next login, never lost
            logger.exception("%s: could not delete %d delivered offline message(s)", self.full_jid, len(ids))

    def _chore(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _reroute(self, message: dict[str, Any]) -> None:
        """A message that reached this session after it ended goes back to the router (RFC 6121 §8.5:
        delivered elsewhere, or stored offline); anything else is dropped."""
        if message.get("type") != "xmpp.stanza":
            return
        element = load(message["xml"])
        if element_kind(element) != "message" or element.get("type") == "error":
            return
        logger.info("%s: a message arrived after the session ended, handed back to the router", self.full_jid)
        outs = [(self.router.router_channel, route_message(element))]
        self._chore(self._send(outs))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
