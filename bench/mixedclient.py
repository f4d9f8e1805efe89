"""Raw XMPP clients of every carrier we serve, for the mixed load bench (``bench.load_mixed``).

One :class:`Session` interface over four carriers, each logging in with SASL EXTERNAL and a client certificate
of its own (``bench.clientcerts``), then held open to send and receive stanzas:

- ``starttls``: TCP, ``<starttls/>`` then TLS (RFC 6120 §5.4), via ``bench.loadclient.xmpp_login``;
- ``tls``: direct TLS (XEP-0368), the same;
- ``wss``: WebSocket (RFC 7395: the ``xmpp`` subprotocol, ``<open/>`` framing, one element per message) with
  the ``websockets`` library;
- ``bosh``: BOSH (XEP-0124, XEP-0206) in raw HTTP/1.1 over TLS keep-alive connections: the login on one
  connection, then a second one so that one request is always held by the server (``hold = 1``,
  ``requests = 2``, XEP-0124 §10) while the other carries what the client sends.

No XMPP library in the measured path. Every session answers the server's pings (XEP-0199 §4.2), can ping the
server itself (§4.1) to prove it is alive, and hands every other stanza to ``handler``; a stream error, a
BOSH ``terminate`` or the connection's end marks it ``lost`` (with why), which the bench counts as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import websockets
from websockets.exceptions import WebSocketException

from bench import loadclient
from bench.loadclient import AUTH_EXTERNAL, LoginError, _attr, _first_child, _open, xmpp_login

logger = logging.getLogger(__name__)

TRANSPORTS = ("starttls", "tls", "wss", "bosh")
CLIENT_NS = "jabber:client"
FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"  # RFC 7395 §3.3.1
HTTPBIND_NS = "http://jabber.org/protocol/httpbind"  # XEP-0124 §6
XBOSH_NS = "urn:xmpp:xbosh"  # XEP-0206 §4
BOSH_WAIT = 60  # seconds the server may hold a request (XEP-0124 §7.1 'wait'; our server's maximum)
BIND = (  # RFC 6120 §7.6, in jabber:client for the framed carriers (RFC 7395 §3.3.3, XEP-0206 §7)
    b"<iq xmlns='jabber:client' type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<resource>bench</resource></bind></iq>"
)
JID = re.compile(rb"<jid>([^<]+)</jid>")

Handler = Callable[["Session", bytes], None]
OPEN_ATTEMPTS = 3  # a BOSH connection that cannot be (re)opened is tried this often, a second apart


def step_timeout() -> float:
    """Seconds one protocol step may take (``bench.loadclient.STEP_TIMEOUT``, which the bench may raise)."""
    return loadclient.STEP_TIMEOUT


@dataclass(frozen=True)
class Target:
    """Where one server listens: its c2s ports and its HTTPS port (WebSocket and BOSH paths)."""

    host: str
    domain: str
    starttls_port: int
    tls_port: int
    https_port: int
    ws_path: str = "/ws-xmpp"
    bosh_path: str = "/http-bind"


def split_elements(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete top-level elements at the start of ``buffer`` and what is left of it.

    Enough for what our server sends (no element nested in one of the same name, no ``>`` in attribute
    values); a ``</stream:stream>`` comes out as an element of its own.
    """
    elements: list[bytes] = []
    position = 0
    size = len(buffer)
    while True:
        while position < size and buffer[position] in b" \t\r\n":
            position += 1
        if position >= size or buffer[position] != ord("<"):
            break
        start_end = buffer.find(b">", position)
        if start_end < 0:
            break
        if buffer[start_end - 1] == ord("/") or buffer.startswith(b"</", position):
            elements.append(buffer[position : start_end + 1])
            position = start_end + 1
            continue
        name = buffer[position + 1 : start_end].split(None, 1)[0]
        close = buffer.find(b"</" + name + b">", start_end)
        if close < 0:
            break
        end = close + len(name) + 3
        elements.append(buffer[position:end])
        position = end
    return elements, buffer[position:]


def message(to: str, message_id: str) -> bytes:
    """A chat message whose id is also its body (RFC 6121 §5.2)."""
    return (
        f"<message xmlns='{CLIENT_NS}' to='{to}' id='{message_id}' type='chat'>"
        f"<body>{message_id}</body></message>"
    ).encode()


class Session:
    """A bound session on one carrier; subclasses move the bytes."""

    transport = "?"

    def __init__(self, jid: str) -> None:
        self.jid = jid  # the full JID the server bound (RFC 6120 §7.6.1)
        self.lost: str | None = None  # why the session ended, if it did
        self.handler: Handler | None = None
        self.closing = False
        self._pings: dict[bytes, asyncio.Future[None]] = {}

    # -- what subclasses provide ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------------------

    def dispatch(self, element: bytes) -> None:
        """One element from the server: a ping answered, a pong taken, anything else to ``handler``."""
        if element.startswith((b"<stream:error", b"</stream:stream", b"<close")):
            self.lose(f"stream error {_first_child(element, b'<stream:error')}")
            return
        if element.startswith(b"<iq"):
            kind, iq_id = _attr(element, b"type"), _attr(element, b"id")
            if kind == b"get" and b"urn:xmpp:ping" in element:  # XEP-0199 §4.2: the server pings us
                sender = _attr(element, b"from")
                to = b" to='" + sender + b"'" if sender else b""
                self.send(b"<iq xmlns='jabber:client' type='result' id='" + iq_id + b"'" + to + b"/>")
                return
            waiter = self._pings.pop(iq_id, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(None)
                return
        if self.handler is not None:
            self.handler(self, element)

    def lose(self, why: str) -> None:
        if self.lost is None and not self.closing:
            self.lost = why
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(LoginError(why))
        self._pings.clear()

    async def ping(self, timeout: float | None = None) -> bool:
        """XEP-0199 §4.1: ask the server for a pong; False when the session is gone or none came."""
        if self.lost is not None:
            return False
        iq_id = f"ping-{secrets.token_hex(4)}".encode()
        waiter = asyncio.get_running_loop().create_future()
        self._pings[iq_id] = waiter
        self.send(
            b"<iq xmlns='jabber:client' type='get' id='" + iq_id + b"'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        try:
            await asyncio.wait_for(waiter, timeout or step_timeout())
        except TimeoutError:
            self._pings.pop(iq_id, None)
            self.lost = self.lost or "no answer to our ping"
            return False
        except LoginError:
            return False
        return True


# == TCP: STARTTLS and direct TLS ==========


class TcpSession(Session):
    def __init__(self, stream, transport: str) -> None:  # noqa: ANN001 (bench.loadclient.Stream)
        super().__init__(stream.jid)
        self.transport = transport
        self.stream = stream
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def login(cls, target: Target, context: ssl.SSLContext, transport: str) -> TcpSession:
        starttls = transport == "starttls"
        port = target.starttls_port if starttls else target.tls_port
        stream = await xmpp_login(target.host, port, target.domain, context, starttls=starttls)
        return cls(stream, transport)

    def start(self) -> None:
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        stream = self.stream
        try:
            while self.lost is None:
                elements, stream.buffer = split_elements(stream.buffer)
                for element in elements:
                    self.dispatch(element)
                chunk = await stream.reader.read(65536)
                if not chunk:
                    self.lose("connection closed by the server")
                    return
                stream.buffer += chunk
        except (OSError, ssl.SSLError) as exc:
            self.lose(f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            pass

    def send(self, data: bytes) -> None:
        if not self.stream.writer.is_closing():
            self.stream.writer.write(data)

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            self.stream.writer.write(b"</stream:stream>")  # RFC 6120 §4.4
            self.stream.writer.close()
        if self.task is not None:
            self.task.cancel()


# == WebSocket (RFC 7395) ==========


def _open_frame(domain: str) -> str:
    return f"<open xmlns='{FRAMING_NS}' to='{domain}' version='1.0' xml:lang='en'/>"  # RFC 7395 §3.3.1


class WsSession(Session):
    transport = "wss"

    def __init__(self, socket: websockets.ClientConnection, jid: str) -> None:
        super().__init__(jid)
        self.socket = socket
        self.task: asyncio.Task[None] | None = None
        self.sends: set[asyncio.Task[None]] = set()

    @classmethod
    async def login(cls, target: Target, context: ssl.SSLContext) -> WsSession:
        url = f"wss://{target.host}:{target.https_port}{target.ws_path}"
        try:
            socket = await websockets.connect(
                url,
                subprotocols=["xmpp"],
                ssl=context,
                server_hostname=target.domain,
                open_timeout=step_timeout(),
                ping_interval=None,  # the server pings (daphne's WebSocket pings, XEP-0199)
                compression=None,
                max_size=1 << 20,
                close_timeout=2,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise LoginError(f"wss connect: {type(exc).__name__}: {exc}") from exc
        try:
            await socket.send(_open_frame(target.domain))
            features = await cls._until(socket, "features", b"<stream:features")
            if b"EXTERNAL" not in features:
                raise LoginError("features: EXTERNAL not offered (certificate not accepted)")
            await socket.send(AUTH_EXTERNAL.decode())
            outcome = await cls._until(socket, "sasl", b"<success", b"<failure")
            if outcome.startswith(b"<failure"):
                raise LoginError(f"sasl: failure {_first_child(outcome, b'<failure')}")  # RFC 6120 §6.5
            await socket.send(_open_frame(target.domain))  # RFC 7395 §3.3.2: the restart
            await cls._until(socket, "features", b"<stream:features")
            await socket.send(BIND.decode())
            result = await cls._until(socket, "bind", b"<iq")
            jid = JID.search(result)
            if b"result" not in result or jid is None:
                raise LoginError(f"bind: no result ({_first_child(result, b'<iq')})")
        except BaseException:
            socket.transport.abort()
            raise
        return cls(socket, jid[1].decode())

    @staticmethod
    async def _until(socket: websockets.ClientConnection, step: str, *starts: bytes) -> bytes:
        """The first message that starts with one of ``starts``; LoginError on a stream error or close."""
        try:
            async with asyncio.timeout(step_timeout()):
                while True:
                    frame = await socket.recv()
                    data = frame.encode() if isinstance(frame, str) else frame
                    if data.startswith((b"<stream:error", b"<close")):
                        raise LoginError(f"{step}: stream error {_first_child(data, b'<stream:error')}")
                    if data.startswith(starts):
                        return data
        except TimeoutError as exc:
            raise LoginError(f"{step}: no answer within {step_timeout():.0f} s") from exc
        except (OSError, WebSocketException) as exc:
            raise LoginError(f"{step}: {type(exc).__name__}: {exc}") from exc

    def start(self) -> None:
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.socket:
                self.dispatch(frame.encode() if isinstance(frame, str) else frame)
            self.lose(f"WebSocket closed by the server ({self.socket.close_code})")
        except (OSError, WebSocketException) as exc:
            self.lose(f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            pass

    def send(self, data: bytes) -> None:
        task = asyncio.create_task(self._send(data.decode()))
        self.sends.add(task)
        task.add_done_callback(self.sends.discard)

    async def _send(self, text: str) -> None:
        try:
            await self.socket.send(text)
        except (OSError, WebSocketException) as exc:
            self.lose(f"send: {type(exc).__name__}: {exc}")

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.socket.send(f"<close xmlns='{FRAMING_NS}'/>"), 2)
        with contextlib.suppress(Exception):
            self.socket.transport.abort()
        if self.task is not None:
            self.task.cancel()


# == BOSH (XEP-0124, XEP-0206) ==========


class ClosedByServer(LoginError):
    """The server closed a keep-alive connection (RFC 9112 §9.3: it may, while the connection is idle)."""


class HttpConnection:
    """One HTTP/1.1 keep-alive connection over TLS: a POST written, its response read (content-length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target) -> None:
        self.reader, self.writer = reader, writer
        self.head = (
            f"POST {target.bosh_path} HTTP/1.1\r\nHost: {target.domain}:{target.https_port}\r\n"
            "Content-Type: text/xml; charset=utf-8\r\n"
        ).encode()

    @classmethod
    async def open(cls, target: Target, context: ssl.SSLContext) -> HttpConnection:
        stream = await _open(target.host, target.https_port, context, target.domain)
        return cls(stream.reader, stream.writer, target)

    def post(self, body: bytes) -> None:
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def response(self, timeout: float) -> bytes:
        """The next response's body; LoginError unless it is a 200 with a content-length."""
        try:
            async with asyncio.timeout(timeout):
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/1.1 ") else b"?"
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length is None:
                    raise LoginError(f"bosh: HTTP {status.decode()} without content-length")
                body = await self.reader.readexactly(int(length[1]))
        except TimeoutError as exc:
            raise LoginError(f"bosh: no response within {timeout:.0f} s") from exc
        except asyncio.IncompleteReadError as exc:
            raise ClosedByServer("bosh: connection closed by the server") from exc
        except (OSError, asyncio.LimitOverrunError) as exc:
            raise LoginError(f"bosh: {type(exc).__name__}: {exc}") from exc
        if status != b"200":
            raise LoginError(f"bosh: HTTP {status.decode()} {_body_condition(body)}")
        return body

    @property
    def closed(self) -> bool:
        """Whether the server has closed it (the stream read its end) or we have."""
        return self.reader.at_eof() or self.writer.is_closing()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


def _body_condition(body: bytes) -> str:
    found = re.search(rb"condition=['\"]([^'\"]+)", body)
    return found[1].decode() if found else ""


def body_children(body: bytes) -> tuple[bytes, list[bytes]]:
    """A response ``<body/>``'s start tag and its child elements."""
    start_end = body.find(b">")
    if start_end < 0:
        return body, []
    if body[start_end - 1] == ord("/"):
        return body[: start_end + 1], []
    inner = body[start_end + 1 : body.rfind(b"</body>")]
    children, _ = split_elements(inner)
    return body[: start_end + 1], children


class BoshSession(Session):
    """A BOSH session: the login on one connection, then two connections that keep one request held."""

    transport = "bosh"

    def __init__(
        self, target: Target, context: ssl.SSLContext, first: HttpConnection, sid: str, rid: int, jid: str
    ) -> None:
        super().__init__(jid)
        self.target, self.context = target, context
        self.connections = [first]
        self.sid = sid
        self.rid = rid  # the last rid used
        self.pending: list[bytes] = []
        self.outstanding = 0  # requests written and not yet answered
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.reopened = 0  # connections reopened after the server closed an idle one
        self.open_retries = 0  # connection attempts that failed and were tried again

    def _body(self, rid: int, children: bytes = b"", extra: str = "") -> bytes:
        head = f"<body xmlns='{HTTPBIND_NS}' rid='{rid}' sid='{self.sid}'{extra}"
        return (head + "/>").encode() if not children else head.encode() + b">" + children + b"</body>"

    @classmethod
    async def login(cls, target: Target, context: ssl.SSLContext) -> BoshSession:
        connection = await HttpConnection.open(target, context)
        try:
            rid = secrets.randbelow(1 << 40) + 1000  # XEP-0124 §14.1: random, far below 2**53
            connection.post(
                (
                    f"<body xmlns='{HTTPBIND_NS}' xmlns:xmpp='{XBOSH_NS}' content='text/xml; charset=utf-8' "
                    f"rid='{rid}' to='{target.domain}' wait='{BOSH_WAIT}' hold='1' ver='1.6' xml:lang='en' "
                    "xmpp:version='1.0'/>"
                ).encode()
            )
            start, children = body_children(await connection.response(step_timeout()))
            sid = re.search(rb"\ssid=['\"]([^'\"]+)", start)
            if sid is None:
                raise LoginError(f"bosh: session not created ({_body_condition(start)})")
            session = cls(target, context, connection, sid[1].decode(), rid, "")
            features = await session._login_step("features", children, b"", b"<stream:features")
            if b"EXTERNAL" not in features:
                raise LoginError("features: EXTERNAL not offered (certificate not accepted)")
            outcome = await session._login_step("sasl", [], AUTH_EXTERNAL, b"<success", b"<failure")
            if outcome.startswith(b"<failure"):
                raise LoginError(f"sasl: failure {_first_child(outcome, b'<failure')}")
            restart = f" xmlns:xmpp='{XBOSH_NS}' to='{target.domain}' xml:lang='en' xmpp:restart='true'"
            await session._login_step("features", [], b"", b"<stream:features", extra=restart)  # XEP-0206 §5
            result = await session._login_step("bind", [], BIND, b"<iq")
            jid = JID.search(result)
            if b"result" not in result or jid is None:
                raise LoginError(f"bind: no result ({_first_child(result, b'<iq')})")
            session.jid = jid[1].decode()
            return session
        except BaseException:
            connection.abort()
            raise

    async def _login_step(
        self, step: str, children: list[bytes], send: bytes, *starts: bytes, extra: str = ""
    ) -> bytes:
        """Post ``send`` (then empty polls) on the first connection until a child starts with ``starts``."""
        connection = self.connections[0]
        first = True
        while True:
            for child in children:
                if child.startswith(b"<stream:error"):
                    raise LoginError(f"{step}: stream error {_first_child(child, b'<stream:error')}")
                if child.startswith(starts):
                    return child
            self.rid += 1
            connection.post(self._body(self.rid, send if first else b"", extra if first else ""))
            first = False
            start, children = body_children(await connection.response(BOSH_WAIT + step_timeout()))
            if b"terminate" in start:
                raise LoginError(f"{step}: bosh terminate {_body_condition(start)}")

    async def open_second(self) -> None:
        """The second connection a BOSH client keeps (XEP-0124 §10: one held, one to send on)."""
        self.connections.append(await HttpConnection.open(self.target, self.context))

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._serve(index)) for index in range(len(self.connections))]

    async def _serve(self, index: int) -> None:
        """Keep at most 2 requests out (XEP-0124 §7.1 'requests'), and always one for the server to hold."""
        try:
            while self.lost is None:
                while not (self.pending or self.outstanding == 0):
                    self.wake.clear()
                    await self.wake.wait()
                    if self.lost is not None:
                        return
                payload, self.pending = b"".join(self.pending), []
                self.rid += 1
                self.outstanding += 1
                try:
                    response = await self._exchange(index, self._body(self.rid, payload))
                finally:
                    self.outstanding -= 1
                    self.wake.set()
                start, children = body_children(response)
                for child in children:
                    self.dispatch(child)
                if b"terminate" in start:
                    self.lose(f"bosh terminate {_body_condition(start)}")
        except LoginError as exc:
            self.lose(exc.kind)
        except asyncio.CancelledError:
            pass
        finally:
            self.wake.set()

    async def _exchange(self, index: int, body: bytes) -> bytes:
        """``body`` on connection ``index``, reopened when the server closed it, as browsers do: an idle
        keep-alive connection may be closed (twisted.web after 60 s), and a request whose connection closed
        before its response is sent again with the same rid (XEP-0124 §14.3 answers a repeated rid)."""
        for attempt in (1, 2):
            if self.connections[index].closed:
                self.connections[index].abort()
                self.connections[index] = await self._reopen()
            connection = self.connections[index]
            connection.post(body)  # written at once: rids go out in order (one event loop)
            try:
                return await connection.response(BOSH_WAIT + step_timeout())
            except ClosedByServer:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _reopen(self) -> HttpConnection:
        """A new connection, tried :data:`OPEN_ATTEMPTS` times (a burst of connects may overflow the server's
        accept queue, whose kernel then resets some: a browser tries again too)."""
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            try:
                connection = await HttpConnection.open(self.target, self.context)
            except LoginError:
                if attempt == OPEN_ATTEMPTS:
                    raise
                self.open_retries += 1
                await asyncio.sleep(1.0)
            else:
                self.reopened += 1
                return connection
        raise AssertionError("unreachable")

    def lose(self, why: str) -> None:
        super().lose(why)
        self.wake.set()

    def send(self, data: bytes) -> None:
        self.pending.append(data)
        self.wake.set()

    async def close(self) -> None:
        """XEP-0124 §13: a ``terminate`` request on a connection of its own (the others may be held)."""
        self.closing = True
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(LoginError, Exception):
            connection = await HttpConnection.open(self.target, self.context)
            try:
                self.rid += 1
                connection.post(self._body(self.rid, b"", " type='terminate'"))
                await connection.response(step_timeout())
            finally:
                connection.abort()
        for connection in self.connections:
            connection.abort()


# == one entry point ==========


async def login(transport: str, target: Target, context: ssl.SSLContext) -> Session:
    """A bound session over ``transport`` (one of :data:`TRANSPORTS`); LoginError says why not."""
    if transport in ("starttls", "tls"):
        return await TcpSession.login(target, context, transport)
    if transport == "wss":
        return await WsSession.login(target, context)
    if transport == "bosh":
        return await BoshSession.login(target, context)
    raise ValueError(f"unknown transport {transport!r}; accepted: {', '.join(TRANSPORTS)}")
