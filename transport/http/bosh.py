"""XMPP over BOSH (XEP-0124, XEP-0206): an ASGI app at each ``handlers.mod_bosh`` path.

Specs: XEP-0124 §7 (session creation request and response: ``sid``, ``wait``, ``hold``, ``requests``,
``inactivity``, ``polling``, ``ver``), §9 (sending and receiving, ``rid``), §10 (``hold``: an earlier held
request is answered when a new one comes), §12 (inactivity), §13 (``type="terminate"``), §14.3 (``rid``
window and repeated requests), §17 (terminal binding conditions), XEP-0206 §5 (``xmpp:restart``), §6
(stream features in a response body), DESIGN §3 (certificates verified with ``certauth``).

Each session owns one sans-I/O c2s core in WebSocket framing (``transport.driver``): the ``<body/>`` is read
once, by the core's parser (``parse_document``: RFC 6120 §11's restrictions, each child's size), and its
children go to the core as parsed, one element at a time; a restart is an ``<open/>``, and the core's
output frames go out as
``<body/>`` children (its ``<open/>`` becomes the session creation response's attributes, its ``<close/>`` and
stream errors a ``type="terminate"`` body).

Decisions:

- Sessions live in this process (a dict). Behind a load balancer every request of a session must reach the
  process that created it (sticky routing on the ``sid``, or one daphne process serving BOSH).
- ``hold`` is at most 1 and ``wait`` at most 60 s; ``requests`` = hold + 1 (XEP-0124 §7.1 recommends it).
- A repeated ``rid`` (within the window) gets the very response sent before (§14.3); a ``rid`` older than
  the window or more than ``requests`` beyond the last one ends the session with ``item-not-found``.
- An unknown ``sid``: HTTP 200 with ``<body type="terminate" condition="item-not-found"/>`` (§17.2).
- The session is bound to the client certificate of the request that created it (SHA-256 of the leaf; or
  to "no certificate"). A request whose TLS connection presents a different certificate, or none, is refused
  with HTTP 403 and ``<body type="terminate" condition="policy-violation"/>``; the session itself stays up
  (someone who learnt a ``sid`` must not be able to end it), and that request's ``rid`` is not consumed.
- ``disconnect_on_failure`` with a refused certificate refuses the session creation request the same way.
- A request whose ``Origin`` is neither absent, our own, nor on the handler's ``allowed_origins``
  (``transport.http.origin``) is refused with HTTP 403 and ``policy-violation`` before its body is read,
  preflight
  ``OPTIONS`` included. CORS answers name the request's allowed origin (with credentials: the page's
  requests carry the client certificate), never ``*``; without ``Origin`` they carry no CORS headers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from transport.driver import SessionDriver, leaf_fingerprint
from transport.http.origin import OriginVerdict, check_origin, cors_headers
from transport.http.session import (
    LoopAdapter,
    new_session,
    scope_chain,
    scope_listener,
    scope_peer,
    start_session,
)
from transport.xmpp import errors
from transport.xmpp import namespaces as ns
from transport.xmpp.xml import StanzaParsed, StreamOpen, parse_document

logger = logging.getLogger(__name__)

HTTPBIND = "http://jabber.org/protocol/httpbind"  # XEP-0124 §6
XBOSH = "urn:xmpp:xbosh"  # XEP-0206 §4
BODY = ns.qname(HTTPBIND, "body")
XMPP_VERSION = ns.qname(XBOSH, "version")
XMPP_RESTART = ns.qname(XBOSH, "restart")
BOSH_VERSION = "1.11"  # XEP-0124 version we implement (§7.1 'ver')
MAX_WAIT = 60  # seconds a request may be held
MAX_HOLD = 1
INACTIVITY = 60  # seconds without a request before the session ends (§7.1 'inactivity')
POLLING = 2  # shortest allowed polling interval (§7.1 'polling')
MAX_BODY = 1 << 20  # bytes of one request body
MAX_INT_DIGITS = 16  # an integer attribute (rid, wait, hold) has at most this many digits
CONTENT_TYPE = b"text/xml; charset=utf-8"
# The answer to a CORS preflight from an allowed origin (Fetch, "CORS protocol"): what a BOSH client sends.
PREFLIGHT_HEADERS = (
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type"),
    (b"access-control-max-age", b"600"),
)

# XEP-0124 §17.2 terminal binding conditions we send.
BAD_REQUEST = "bad-request"
HOST_UNKNOWN = "host-unknown"
ITEM_NOT_FOUND = "item-not-found"
POLICY_VIOLATION = "policy-violation"
REMOTE_STREAM_ERROR = "remote-stream-error"
INTERNAL_SERVER_ERROR = "internal-server-error"


class BoshError(Exception):
    """A request that ends with a terminal binding condition (and the HTTP status to send it with)."""

    def __init__(self, condition: str, reason: str, status: int = 200) -> None:
        super().__init__(reason)
        self.condition = condition
        self.status = status


@dataclass(frozen=True)
class Body:
    """A request's ``<body/>``: its attributes (Clark notation) and its children as the core's parser read
    them (each with its size, which the core holds against ``max_stanza_size``)."""

    attrs: dict[str, str]
    children: tuple[StanzaParsed, ...] = ()
    tag: str = BODY

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attrs.get(name, default)


def parse_body(data: bytes, limit: int) -> Body:
    """The request's ``<body/>``, read by the core's restricted parser (RFC 6120 §11: no DTD, entities);
    ``limit``: the bytes one child may take here (the core's own, smaller, limit applies when it reads it)."""
    try:
        events = parse_document(data, limit, container=True)
    except errors.StreamError as exc:
        raise BoshError(BAD_REQUEST, f"body refused: {exc.condition} {exc.text}", 400) from None
    root = events[0] if events else None
    if not isinstance(root, StreamOpen) or root.tag != BODY:
        raise BoshError(BAD_REQUEST, "the request is not one <body/> of XEP-0124", 400)
    return Body(root.attrs, tuple(event for event in events if isinstance(event, StanzaParsed)))


def body_bytes(attrs: dict[str, str], children: Sequence[bytes] = ()) -> bytes:
    """A response ``<body/>`` with these attributes and already serialised children."""
    rendered = "".join(f' {key}="{_escape(value)}"' for key, value in attrs.items())
    head = f'<body xmlns="{HTTPBIND}"{rendered}'
    if not children:
        return f"{head}/>".encode()
    return f"{head}>".encode() + b"".join(children) + b"</body>"


def terminate_bytes(condition: str | None = None, children: Sequence[bytes] = ()) -> bytes:
    attrs = {"type": "terminate"}
    if condition:
        attrs["condition"] = condition
    if condition == REMOTE_STREAM_ERROR:
        attrs["xmlns:stream"] = ns.STREAMS
    return body_bytes(attrs, children)


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def _int_attr(body: Body, name: str, default: int | None = None) -> int:
    value = body.get(name)
    if value is None:
        if default is None:
            raise BoshError(BAD_REQUEST, f"the <body/> has no '{name}'", 400)
        return default
    # ASCII digits only: str.isdigit() also takes '²' or '٣', which int() then refuses or reads. At most 16
    # of them: XEP-0124 §14.1 keeps rid below 2**53, and nothing else here is larger.
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_INT_DIGITS):
        raise BoshError(BAD_REQUEST, f"'{name}' is not a non-negative integer of at most 16 digits", 400)
    return int(value)


def _as_client_stanza(child: StanzaParsed) -> StanzaParsed:
    """XEP-0206 §7: stanzas in a body are jabber:client; a child left in the body's namespace is taken so."""
    namespace, local = ns.split_qname(child.element.tag)
    if namespace == HTTPBIND:
        child.element.tag = ns.qname(ns.CLIENT, local)
    return child


@dataclass
class BoshSession(LoopAdapter):
    """One BOSH session: its c2s stream, ``rid`` bookkeeping, output waiting for a request, timers.

    It is its stream's ``transport.driver.Adapter``: the core's frames queue here until a request takes them.
    """

    sid: str
    stream: SessionDriver
    domain: str
    wait: int
    hold: int
    fingerprint: str | None  # SHA-256 of the creating request's client certificate, or None without one
    last_rid: int
    responses: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    queued: list[bytes] = field(default_factory=list)
    terminated: bool = False
    stream_error: bytes | None = None
    turn: asyncio.Condition = field(default_factory=asyncio.Condition)
    held: asyncio.Future[bytes] | None = None  # the request waiting for output; its result is its response
    active: int = 0  # requests being handled (the inactivity clock runs only at 0)
    timer: asyncio.TimerHandle | None = None
    release_due: bool = False

    @property
    def requests(self) -> int:
        return self.hold + 1  # XEP-0124 §7.1

    def send(self, data: bytes) -> None:
        """A frame of the core's output into the queue (``<open/>`` dropped; ``<close/>``, errors: end)."""
        if data.startswith(b"<open "):
            return  # XEP-0206 §5: the body attributes stand for the stream header
        if data.startswith(b"<close "):
            self.terminated = True
        elif data.startswith(b"<stream:error"):
            self.stream_error = data
        else:
            self.queued.append(data)
        self._release_soon()

    def close(self, abort: bool = False) -> None:
        self.terminated = True
        self._release_soon()

    def _release_soon(self) -> None:
        """A held request answers with everything the core produced in this turn of the loop (one body)."""
        if not self.release_due:
            self.release_due = True
            asyncio.get_running_loop().call_soon(self._release_now)

    def _release_now(self) -> None:
        self.release_due = False
        if self.queued or self.terminated:
            self.release_held()

    def release_held(self) -> None:
        """Answer the held request now, with what is queued at this moment (§10)."""
        if self.held is not None and not self.held.done():
            self.held.set_result(self.take_response())

    def take_response(self) -> bytes:
        children, self.queued = self.queued, []
        if not self.terminated:
            return body_bytes({}, children)
        if self.stream_error is not None:
            return terminate_bytes(REMOTE_STREAM_ERROR, [*children, self.stream_error])
        return terminate_bytes(None, children)

    def remember(self, rid: int, response: bytes) -> None:
        self.responses[rid] = response
        while len(self.responses) > self.requests:
            self.responses.popitem(last=False)


Send = Callable[[dict[str, Any]], Awaitable[None]]


class BoshApp:
    """The ASGI app of every ``mod_bosh`` path: one session table for the process."""

    def __init__(self, inactivity: float = INACTIVITY) -> None:
        self.sessions: dict[str, BoshSession] = {}
        self.inactivity = inactivity  # seconds (XEP-0124 §7.1 'inactivity')

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict]], send: Send
    ) -> None:
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        origin = check_origin(settings.XMPP, scope_listener(settings.XMPP, scope), scope, "mod_bosh")
        if not origin.allowed:  # a browser page of another site: the user's certificate is not its to use
            logger.warning(
                "bosh %s: %s refused (HTTP 403), Origin %s: %s",
                scope_peer(scope),
                method,
                origin.log_value(),
                origin.reason,
            )
            await _respond(send, 403, terminate_bytes(POLICY_VIOLATION), origin)
            return
        if method == "OPTIONS":  # CORS preflight of a web client on an allowed origin
            await _respond(send, 200, b"", origin, PREFLIGHT_HEADERS if origin.origin else ())
            return
        if method != "POST":
            await _respond(send, 405, b"", origin, [(b"allow", b"POST, OPTIONS")])
            return
        data = await _read_body(receive)
        if data is None:
            await _respond(send, 413, terminate_bytes(BAD_REQUEST), origin)
            return
        try:
            status, response = 200, await self.handle(scope, data, origin)
        except BoshError as exc:
            logger.info("bosh %s: %s (%s)", scope_peer(scope), exc.condition, exc)
            status, response = exc.status, terminate_bytes(exc.condition)
        except Exception:
            logger.exception("bosh %s: request failed", scope_peer(scope))
            status, response = 500, terminate_bytes(INTERNAL_SERVER_ERROR)
        await _respond(send, status, response, origin)

    async def handle(self, scope: dict[str, Any], data: bytes, origin: OriginVerdict | None = None) -> bytes:
        config = settings.XMPP
        listener = scope_listener(config, scope)
        body = parse_body(data, 4 * getattr(listener, "max_stanza_size", 65536) + 4096)
        rid = _int_attr(body, "rid")
        sid = body.get("sid")
        if sid is None:
            return await self.create(scope, body, rid, origin)
        session = self.sessions.get(sid)
        if session is None:
            raise BoshError(ITEM_NOT_FOUND, "unknown sid")  # XEP-0124 §17.2
        if leaf_fingerprint(scope_chain(scope)) != session.fingerprint:
            raise BoshError(POLICY_VIOLATION, "the client certificate differs from the session's", 403)
        return await self.request(session, body, rid)

    # -- session creation (XEP-0124 §7, XEP-0206 §4) ------------------------------------------------

    async def create(
        self, scope: dict[str, Any], body: Body, rid: int, origin: OriginVerdict | None = None
    ) -> bytes:
        config = settings.XMPP
        to = body.get("to")
        if not to:
            raise BoshError(BAD_REQUEST, "the session creation request has no 'to'", 400)
        wait = min(_int_attr(body, "wait", MAX_WAIT), MAX_WAIT)
        hold = min(_int_attr(body, "hold", MAX_HOLD), MAX_HOLD)
        peer = scope_peer(scope)
        chain = scope_chain(scope)
        sid = secrets.token_urlsafe(24)
        session = BoshSession(
            sid=sid,
            stream=None,  # type: ignore[arg-type]  (the driver needs the session as its adapter first)
            domain=to,
            wait=wait,
            hold=hold,
            fingerprint=leaf_fingerprint(chain),
            last_rid=rid,
        )
        stream = session.stream = new_session(config, scope, session, transport="bosh")
        if not await start_session(stream, chain):
            stream.connection_lost("session creation refused")
            raise BoshError(POLICY_VIOLATION, "client certificate refused (disconnect_on_failure)", 403)
        stream.receive(_open(to, body.get("from")))
        if session.terminated:
            stream.connection_lost("stream refused")
            condition = HOST_UNKNOWN if stream.close_condition == errors.HOST_UNKNOWN else REMOTE_STREAM_ERROR
            return session.take_response() if condition == REMOTE_STREAM_ERROR else terminate_bytes(condition)
        self.sessions[sid] = session
        logger.info(
            "bosh %s: session %s… created for %s (wait %d, hold %d%s)",
            peer,
            sid[:6],
            to,
            wait,
            hold,
            origin.describe() if origin else "",
        )
        attrs = {
            "sid": sid,
            "wait": str(wait),
            "hold": str(hold),
            "requests": str(session.requests),
            "inactivity": str(int(self.inactivity)),
            "polling": str(POLLING),
            "ver": BOSH_VERSION,
            "from": stream.core.domain or to,
            "authid": stream.core.stream_id or "",
            "xmlns:xmpp": XBOSH,
            "xmpp:version": "1.0",
            "xmpp:restartlogic": "true",
            "xmlns:stream": ns.STREAMS,
        }
        children, session.queued = session.queued, []
        response = body_bytes(attrs, children)
        session.remember(rid, response)
        self._arm_inactivity(session)
        return response

    # -- requests of a session (XEP-0124 §9, §10, §13, §14) -----------------------------------------

    async def request(self, session: BoshSession, body: Body, rid: int) -> bytes:
        if rid <= session.last_rid:
            if rid in session.responses:  # §14.3: the same response again
                logger.info("bosh %s: rid %d repeated, response resent", session.stream.peer, rid)
                return session.responses[rid]
            self.end(session, "rid no longer in the window")
            raise BoshError(ITEM_NOT_FOUND, f"rid {rid} is older than the window")
        if rid > session.last_rid + session.requests:
            self.end(session, "rid beyond the window")
            raise BoshError(ITEM_NOT_FOUND, f"rid {rid} is beyond the window")  # §14.3
        session.active += 1
        self._cancel_inactivity(session)
        try:
            return await self._in_turn(session, body, rid)
        finally:
            session.active -= 1
            if session.sid in self.sessions:
                self._arm_inactivity(session)

    async def _in_turn(self, session: BoshSession, body: Body, rid: int) -> bytes:
        async with session.turn:  # requests are processed in rid order (§9.1)
            try:
                await asyncio.wait_for(
                    session.turn.wait_for(lambda: session.last_rid == rid - 1 or session.terminated),
                    timeout=session.wait,
                )
            except TimeoutError:
                self.end(session, f"rid {rid - 1} never came")
                raise BoshError(ITEM_NOT_FOUND, f"rid {rid - 1} missing") from None
            if session.terminated:  # the stream ended meanwhile (auth deadline, revocation)
                response = session.take_response()
                self.end(session, "stream closed")
                return response
            session.release_held()  # §10: the earlier held request answers now, before this one's output
            await self._feed(session, body)
            session.last_rid = rid
            session.turn.notify_all()
        if body.get("type") == "terminate":
            logger.info("bosh %s: session %s… terminated by the client", session.stream.peer, session.sid[:6])
            session.stream.close("the client terminated the BOSH session")
            children, session.queued = session.queued, []
            response = terminate_bytes(None, children)
            self.end(session, "terminated by the client")
            session.remember(rid, response)
            return response
        response = None
        if not session.queued and not session.terminated:
            session.release_held()
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            session.held = future
            try:
                response = await asyncio.wait_for(asyncio.shield(future), timeout=session.wait)
            except TimeoutError:
                pass
            finally:
                if session.held is future:
                    session.held = None
            if response is None and future.done():
                # Released (release_held moved the queued stanzas into it) just as 'wait' ran out: wait_for
                # then reports the timeout, and those stanzas exist only here (bench.load_mixed lost 0.1-0.8 %
                # of messages to BOSH sessions before this).
                response = future.result()
        if response is None:
            response = session.take_response()
        session.remember(rid, response)
        if session.terminated:
            self.end(session, "stream closed")
        return response

    async def _feed(self, session: BoshSession, body: Body) -> None:
        stream = session.stream
        if body.get(XMPP_RESTART) == "true":  # XEP-0206 §5
            stream.receive(_open(session.domain, None))
        for child in body.children:
            if stream.closed:
                break
            stream.receive_element(_as_client_stanza(child))

    # -- ending ---------------------------------------------------------------------------------------

    def end(self, session: BoshSession, reason: str) -> None:
        if self.sessions.pop(session.sid, None) is None:
            return
        self._cancel_inactivity(session)
        if not session.stream.closed:
            session.stream.close(reason)
        session.stream.connection_lost(reason)
        session.terminated = True
        session.release_held()
        logger.info("bosh %s: session %s… ended: %s", session.stream.peer, session.sid[:6], reason)

    def _arm_inactivity(self, session: BoshSession) -> None:
        self._cancel_inactivity(session)
        if session.active == 0:
            session.timer = asyncio.get_running_loop().call_later(
                self.inactivity, self.end, session, f"no request for {self.inactivity:.0f} s (XEP-0124 §12)"
            )

    @staticmethod
    def _cancel_inactivity(session: BoshSession) -> None:
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None


def _open(to: str, from_: str | None) -> bytes:
    attrs = f' to="{_escape(to)}" version="1.0"'
    if from_:
        attrs += f' from="{_escape(from_)}"'
    return f'<open xmlns="{ns.FRAMING}"{attrs}/>'.encode()


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    origin: OriginVerdict,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *cors_headers(origin),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


bosh_app = BoshApp()
