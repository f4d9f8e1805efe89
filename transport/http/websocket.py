"""XMPP over WebSocket (RFC 7395): a Channels consumer at each ``handlers.mod_websockets`` path.

Specs: RFC 7395 §3.2 (the ``xmpp`` subprotocol is required: a handshake without it is refused), §3.3.1
(``<open/>`` and ``<close/>`` in ``urn:ietf:params:xml:ns:xmpp-framing``), §3.3.3 (each message is one
complete element, a well-formed XML document of its own), §3.4 (no STARTTLS: the WebSocket is already TLS),
RFC 6455 §5.6 (text frames), DESIGN §3 (the client chain comes from the ASGI TLS extension and is verified
with ``certauth``, like on TCP).

Decisions:

- The handshake's ``Origin`` is checked first (``transport.http.origin``: none, our own, or
  ``allowed_origins``);
  any other page's handshake is refused with HTTP 403 before any certificate is looked at.
- Each text message goes to the core whole: the core reads it as a document of its own and checks that it
  is exactly one element (RFC 7395 §3.3.3; ``not-well-formed`` otherwise, ``restricted-xml`` for a DTD or a
  comment, ``policy-violation`` past the listener's ``max_stanza_size``: ``[[listen.http]]`` has none, so
  64 KiB, the core's default). daphne's own cap (``TlsExtensionServer``) is larger, so such a message
  reaches the core and the client learns why; beyond it, the WebSocket is closed with 1009 (RFC 6455
  §7.4.1; ``TlsExtensionServer`` makes autobahn send that close frame instead of dropping TCP).
- A binary message gets the stream error ``unsupported-encoding`` (RFC 6455 §7.4.1's 1003 would fit, but
  daphne lets an application close only with 1000 or 3000-4999; the stream error says why).
- ``disconnect_on_failure`` with a refused certificate refuses the handshake (HTTP 403), the WebSocket
  counterpart of TCP's aborted connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from transport.driver import SessionDriver
from transport.http.origin import check_origin
from transport.http.session import (
    LoopAdapter,
    new_session,
    scope_chain,
    scope_channel_bindings,
    scope_listener,
    scope_peer,
    start_session,
)
from transport.xmpp import errors

logger = logging.getLogger(__name__)

# A send after the client closed: autobahn (under daphne) raises Disconnected; the ASGI spec (2.4) asks
# servers for an OSError subclass.
_SEND_ON_CLOSED: tuple[type[BaseException], ...] = (Disconnected, OSError)

SUBPROTOCOL = "xmpp"  # RFC 7395 §3.2
CLOSE_NORMAL = 1000  # RFC 6455 §7.4.1


class _Output(LoopAdapter):
    """The consumer's side of ``transport.driver.Adapter``: frames wait in an outbox that ``_flush`` sends in
    order (the consumer's own ``send``/``close`` are the ASGI ones)."""

    def __init__(self, consumer: XmppWebsocketConsumer) -> None:
        self.consumer = consumer
        self.frames: list[bytes] = []
        self.close_requested = False
        self._flush_due = False

    def send(self, data: bytes) -> None:
        self.frames.append(data)
        self._kick()

    def close(self, abort: bool = False) -> None:
        self.close_requested = True
        self._kick()

    def _kick(self) -> None:
        """Output produced outside a message handler (a database call, a timer, a revocation): send it soon.
        Before the handshake is accepted it waits (and is dropped if the handshake is refused)."""
        if self.consumer.session is None or self._flush_due:
            return
        self._flush_due = True
        self.keep(asyncio.get_running_loop().create_task(self.consumer._flush()))


class XmppWebsocketConsumer(AsyncWebsocketConsumer):
    """One RFC 7395 connection: handshake checks, then one message in, one element per message out."""

    session: SessionDriver | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """channels' dispatch without its ``aclose_old_connections()`` before every message.

        That call runs in asgiref's one thread-sensitive thread, shared by the whole process, so every frame
        of every WebSocket queued there behind the others' (``bench.load_mixed``: under a message storm the
        clients' pongs came after the 60 s ping timeout and 2381 of 2500 wss sessions were closed). Our
        handlers reach the database only through ``transport.workers`` (``LoopAdapter.run_in_thread`` and
        ``in_db_thread``), which close stale connections around each call themselves."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.session = None
        self._send_lock = asyncio.Lock()
        self._ws_closed = False
        self._output = _Output(self)
        peer = scope_peer(self.scope)
        config = settings.XMPP
        listener = scope_listener(config, self.scope)
        origin = check_origin(config, listener, self.scope, "mod_websockets")
        if not origin.allowed:  # a browser page of another site: the user's certificate is not its to use
            logger.warning(
                "ws %s: handshake refused (HTTP 403), Origin %s: %s", peer, origin.log_value(), origin.reason
            )
            await self.close()
            return
        if SUBPROTOCOL not in (self.scope.get("subprotocols") or ()):
            logger.info("ws %s: handshake refused, no %r subprotocol (RFC 7395 §3.2)", peer, SUBPROTOCOL)
            await self.close()
            return
        session = None
        try:
            session = new_session(config, self.scope, self._output, transport="ws")
            accepted = await start_session(
                session, scope_chain(self.scope), scope_channel_bindings(self.scope)
            )
        except Exception:
            logger.exception("ws %s: cannot set up the session", peer)
            accepted = False
        if not accepted:
            if session is not None:
                session.connection_lost("handshake refused")
            await self.close()  # disconnect_on_failure: the handshake is refused (HTTP 403)
            return
        self.session = session
        await self.accept(subprotocol=SUBPROTOCOL)
        logger.info("ws %s: connected (%s%s)", peer, self.scope.get("path"), origin.describe())
        await self._flush()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        session = self.session
        if session is None or session.closed:
            return
        self._output._flush_due = True  # this handler flushes at its end: no extra task for its output
        if text_data is None:
            session.close_with_error(
                errors.UNSUPPORTED_ENCODING, "binary messages are not XMPP (RFC 7395 §3.3)"
            )
            await self._flush()
            return
        session.receive(text_data.encode())  # one message: the core checks it is one element
        await self._flush()

    async def disconnect(self, code: Any) -> None:
        self._ws_closed = True
        if self.session is not None:
            self.session.connection_lost(f"WebSocket closed, code {code}")

    async def _flush(self) -> None:
        output = self._output
        output._flush_due = False
        async with self._send_lock:
            if self._ws_closed:
                return
            try:
                while output.frames:
                    await self.send(text_data=output.frames.pop(0).decode())
                if output.close_requested:
                    self._ws_closed = True
                    await self.close(code=CLOSE_NORMAL)
            except _SEND_ON_CLOSED as exc:
                # The client closed first: daphne learns it (websocket.disconnect) a moment after autobahn
                # leaves the OPEN state, and a send in between raises. Nothing is lost that could still
                # be delivered; the session ends in disconnect().
                self._ws_closed = True
                peer = getattr(self.session, "peer", "?")
                logger.debug("ws %s: not sent, the WebSocket is already closing (%s)", peer, exc)


class NoXmppHereConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: refused at the handshake."""

    async def connect(self) -> None:
        await self.close()
