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
- A message that is not exactly one element (two elements, text, an unfinished element) gets the stream error
  ``not-well-formed``: a document with more or less than one root element is not well-formed XML (XML 1.0
  §2.1), and §3.3.3 requires each message to be such a document. Where the core has a more precise condition
  (``restricted-xml`` for a comment or an entity) the core's wins.
- A message that declares a DTD gets ``restricted-xml``, as on TCP (RFC 6120 §11.1). Each message is a
  document of its own (RFC 7395 §3.3.3), so its DTD sits in the prolog; the core reads messages as children
  of one invisible root, where expat would only see a syntax error, so :func:`declares_dtd` looks first.
- A message larger than the listener's ``max_stanza_size`` (``[[listen.http]]`` has none: 64 KiB, the core's
  default) gets ``policy-violation`` (RFC 6120 §13.12). daphne's own cap (``TlsExtensionServer``) is larger,
  so such a message reaches us and the client learns why; beyond it, the WebSocket is closed with 1009
  (RFC 6455 §7.4.1; ``TlsExtensionServer`` makes autobahn send that close frame instead of dropping TCP).
- A binary message gets the stream error ``unsupported-encoding`` (RFC 6455 §7.4.1's 1003 would fit, but
  daphne lets an application close only with 1000 or 3000-4999; the stream error says why).
- ``disconnect_on_failure`` with a refused certificate refuses the handshake (HTTP 403), the WebSocket
  counterpart of TCP's aborted connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from xml.parsers import expat

from autobahn.exception import Disconnected
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
_XML_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")


class _Stop(Exception):
    """Raised inside expat handlers to end a pre-check early (frame_element_count, declares_dtd)."""


def frame_element_count(frame: bytes) -> int | None:
    """How many top-level elements a message holds (text outside them counts as one more), or None.

    None means the message is not plain well-formed content (syntax error, DTD, entity, ...): the core's
    restricted parser then decides. Only counts: nothing here is handed to the core.
    """
    body = _XML_DECLARATION.sub(b"", frame, count=1)
    parser = expat.ParserCreate()
    depth = 0
    count = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, count
        depth += 1
        if depth == 2:
            count += 1

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    def text(data: str) -> None:
        nonlocal count
        if depth == 1 and data.strip():
            count += 1

    def refuse(*args: object) -> None:
        raise _Stop

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ProcessingInstructionHandler = refuse
    parser.CommentHandler = refuse
    try:
        parser.Parse(b"<frame>" + body + b"</frame>", True)
    except (expat.ExpatError, _Stop):
        return None
    return count


def declares_dtd(frame: bytes) -> bool:
    """Whether a message, read as the document it is (RFC 7395 §3.3.3), opens with a DTD.

    The handler stops expat at the ``<!DOCTYPE``, before any declaration inside it is read.
    """
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def found(*args: object) -> None:
        raise _Stop

    parser.StartDoctypeDeclHandler = found
    try:
        parser.Parse(frame, True)
    except _Stop:
        return True
    except expat.ExpatError:
        return False
    return False


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
        frame = text_data.encode()
        max_size = session.core.settings.max_stanza_size
        if len(frame) > max_size:
            session.close_with_error(
                errors.POLICY_VIOLATION, f"message larger than {max_size} bytes"
            )  # RFC 6120 §13.12
        else:
            count = frame_element_count(frame)
            if count is None and declares_dtd(frame):
                session.close_with_error(
                    errors.RESTRICTED_XML, "a DTD is not allowed in XMPP (RFC 6120 §11.1)"
                )
            elif count is None:
                session.receive(frame)  # the core's restricted parser names the problem
                if not session.closed:
                    session.close_with_error(errors.NOT_WELL_FORMED, "a message must be one complete element")
            elif count != 1:
                session.close_with_error(
                    errors.NOT_WELL_FORMED, f"{count} elements in one message (RFC 7395 §3.3.3)"
                )
            else:
                session.receive(frame)
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
