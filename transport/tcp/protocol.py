"""The c2s TCP listeners: Twisted adapters that move bytes and certificates between a socket and the c2s core.

Specs: RFC 6120 §5.4.3.3 (after ``<proceed/>`` the TLS handshake starts on the same socket), XEP-0368 (direct
TLS on its own port), RFC 6120 §4.4 (closing a stream), DESIGN §3 (who decides about a certificate).

The core (``transport.xmpp``) is sans-I/O: it takes bytes and returns bytes and events. This module only
reads the socket, writes what the core wants written, runs the TLS upgrade, and runs the two database calls
(certificate check, SASL EXTERNAL) in a thread so the reactor never waits on the database. While such a call
is pending, input is held back so the core sees events in order.

Every connection is in :data:`registry` while it lives; a session asking to bind is also registered with
:data:`transport.sessions.registry.sessions` (the session registry: its row, its certificate's expiry, and
the commands
that end it when its certificate is revoked, DESIGN §5), whose worker thread re-checks the certificate and
account before the bind result goes out (``live.bind_session``; the core holds the input meanwhile).
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol
from xml.etree.ElementTree import Element, SubElement

from twisted.internet import threads
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IListeningPort, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from certauth.pki.facts import fingerprint_sha256
from transport.sessions import registry as live
from transport.tls.context import (
    ServerTls,
    channel_bindings,
    must_disconnect,
    peer_chain,
    verify_errors,
    with_default_credentials,
)
from transport.tls.trust_refresh import refresh_trust_anchors
from transport.xmpp import namespaces as ns
from xmppauth import limits
from xmppauth.config import C2SListener, Config, TlsOptions
from xmppauth.dbconn import with_fresh_connections

logger = logging.getLogger(__name__)

# A client that has not authenticated this long after connecting is dropped (slowloris before auth).
AUTH_TIMEOUT = 60.0
# Held-back input while a database call is pending; more than this is a client that does not wait.
MAX_PENDING_INPUT = 1 << 20
# After we close, how long a client may take to read what is left before the socket is simply dropped.
CLOSE_GRACE = 30.0
# How often a listener re-reads its trust anchors (certauth.trust caches them for 5 s per process).
TRUST_REFRESH_INTERVAL = 15.0


class StreamCore(TypingProtocol):
    """What this adapter needs of the sans-I/O c2s core (``transport.xmpp``)."""

    def receive_data(self, data: bytes) -> Iterable[Any]: ...
    def data_to_send(self) -> bytes: ...
    def tls_established(self, check: Any, **kwargs: Any) -> Iterable[Any]: ...
    def auth_result(self, result: Any) -> Iterable[Any]: ...
    def close_with_error(self, condition: str, text: str = "") -> Iterable[Any]: ...
    def send_stanza(self, element: Element) -> bool: ...


class Authenticator(TypingProtocol):
    """``certauth.authenticator.CertificateAuthenticator``: both calls use the database (run in a thread)."""

    def check_certificate(self, chain: list[Any]) -> Any: ...
    def authenticate_external(self, facts: Any, authzid: str | None, domain: str) -> Any: ...
    def refusal_at_bind(self, full_jid: str) -> Any: ...
    def authenticate_password(self, request: Any) -> Any: ...


@dataclass
class ConnectionRegistry:
    """The live c2s connections of this process, by id. Touch it only from the reactor thread."""

    connections: dict[int, C2SProtocol] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def add(self, connection: C2SProtocol) -> int:
        connection_id = next(self._ids)
        self.connections[connection_id] = connection
        return connection_id

    def remove(self, connection_id: int) -> None:
        self.connections.pop(connection_id, None)

    def by_jid(self, jid: str) -> list[C2SProtocol]:
        """Sessions of a full JID, or every session of a bare JID."""
        return [c for c in self.connections.values() if c.jid is not None and jid in (c.jid, c.bare_jid)]

    def by_fingerprint(self, fingerprint_sha256: str) -> list[C2SProtocol]:
        return [c for c in self.connections.values() if c.cert_fingerprint == fingerprint_sha256]

    def __len__(self) -> int:
        return len(self.connections)


registry = ConnectionRegistry()


# Django calls from the pool threads (a module name, so tests can replace it).
_in_db_thread = with_fresh_connections


@implementer(IPushProducer)
class _ReadThrottle:
    """Stops reading from a client while what we write to it backs up (a client that sends but never reads).

    Twisted pauses a transport's producer when its write buffer passes ``bufferSize`` and resumes it when the
    buffer drains; pausing here stops reading from that socket, so the client's own TCP window holds it back.
    """

    def __init__(self, protocol: C2SProtocol) -> None:
        self.protocol = protocol

    def pauseProducing(self) -> None:  # noqa: N802 (IPushProducer)
        logger.debug("c2s %s: client not reading, reading paused", self.protocol.peer)
        self.protocol.transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self.protocol.transport.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        pass


@implementer(IHandshakeListener)
class C2SProtocol(Protocol):
    """One client connection: socket ⇄ core, plus STARTTLS, the certificate check and SASL EXTERNAL."""

    def __init__(self, factory: C2SFactory) -> None:
        self.factory = factory
        self.connection_id = 0
        self.peer = "?"
        self.jid: str | None = None
        self.cert_fingerprint: str | None = None
        self.core: StreamCore | None = None
        self.authenticator: Authenticator | None = None
        self.cert_facts: Any = None
        self.tls_errors: tuple[Any, ...] = ()  # what OpenSSL objected to in the client's chain (for logs)
        # for SCRAM -PLUS (transport.tls.context.channel_bindings)
        self.channel_bindings: dict[str, bytes] = {}
        self._pending = 0  # database calls in flight
        self._held: list[bytes] = []
        self._held_size = 0
        self._closing = False
        self._lost = False
        self._timer: Any = None  # the auth deadline before the session, the keepalive after it
        self._ping_outstanding = False
        self._pings = itertools.count(1)
        self._counted = False  # this connection counts towards its address's max_connections_per_address
        self.live: live.SessionHandle | None = None  # the session registry's handle once bound
        self.bridge: Any = None  # transport.im.bridge.SessionBridge once bound, when the factory routes

    @property
    def bare_jid(self) -> str | None:
        return self.jid.split("/", 1)[0] if self.jid else None

    # -- connection life ------------------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's names)
        address = self.transport.getPeer()
        self.peer = f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"
        self.connection_id = self.factory.registry.add(self)
        if not limits.connections.admit(limits.address_of(self.peer)):
            logger.warning("c2s %s: too many connections from this address (max_connections_per_address)",
                           self.peer)  # fmt: skip
            self._closing = True
            self.transport.abortConnection()
            return
        self._counted = True
        try:
            self.authenticator = self.factory.authenticator_factory(self.factory.tls_options, self.peer)
            self.core = self.factory.core_factory(self.factory.listener)
        except Exception:
            logger.exception("c2s %s: cannot set up the connection", self.peer)
            self._abort()
            return
        self._timer = self.factory.clock.callLater(self.factory.auth_timeout, self._auth_timed_out)
        self.transport.registerProducer(_ReadThrottle(self), True)
        logger.info("c2s %s: connected on %s (%s)", self.peer, self.factory.name, self.factory.listener_mode)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # noqa: N802
        self._lost = True
        self._cancel_timer()
        self.factory.registry.remove(self.connection_id)
        if self._counted:
            limits.connections.release(limits.address_of(self.peer))
        if self.bridge is not None:
            self.bridge.stop()  # unavailable presence to subscribers (RFC 6121 §4.5.2)
        if self.live is not None:
            self.live.unregister()
        lost = getattr(self.core, "connection_lost", None)
        if lost is not None:
            lost()
        why = reason.getErrorMessage() if reason is not None else "closed"
        logger.info("c2s %s: disconnected (%s)%s", self.peer, why, f" jid={self.jid}" if self.jid else "")

    def handshakeCompleted(self) -> None:  # noqa: N802 (IHandshakeListener)
        """TLS is up (direct TLS or after STARTTLS): check the client's certificate in a thread."""
        if self._closing or self.core is None:
            return
        if limits.too_many_auth_failures(self.peer):
            # XEP-0205 §3: an address that keeps failing waits, then is refused with policy-violation.
            delay = limits.option("auth_failure_delay_seconds")
            logger.warning("c2s %s: too many failed authentications from this address, refused in %d s",
                           self.peer, delay)  # fmt: skip
            self._closing = True
            self.factory.clock.callLater(delay, self._refuse_flooder)
            return
        try:
            connection = self.transport.getHandle()
            chain = peer_chain(connection)
            errors = verify_errors(connection)
            self.channel_bindings = channel_bindings(connection)
        except Exception:
            logger.exception("c2s %s: cannot read the client's certificate chain", self.peer)
            self._abort()
            return
        self.tls_errors = errors
        if errors:
            logger.info("c2s %s: OpenSSL chain errors: %s", self.peer, "; ".join(map(str, errors)))
        if chain:
            self.cert_fingerprint = fingerprint_sha256(chain[0])
        self._start_db_call(self._certificate_checked, self.authenticator.check_certificate, chain)

    def _certificate_checked(self, check: Any) -> None:
        tls_options = self.factory.tls_options
        if tls_options is not None and must_disconnect(tls_options, bool(check.verified)):
            # MongooseIM disconnect_on_failure: an invalid certificate ends the connection at once.
            logger.warning("c2s %s: certificate refused, disconnecting: %s", self.peer, check.reason)
            self.transport.abortConnection()
            return
        if check.facts is not None:
            logger.info(
                "c2s %s: client certificate %s (%s)",
                self.peer,
                "verified" if check.verified else "not verified",
                check.reason,
            )
        self.cert_facts = check.facts if check.verified else None
        if self.channel_bindings:
            self._feed(self.core.tls_established(check, channel_bindings=self.channel_bindings))
        else:
            self._feed(self.core.tls_established(check))

    # -- bytes in -------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._closing:
            return
        if self.jid is not None:
            self._ping_outstanding = False  # any byte (pong, stanza, whitespace) shows the client is there
            self._arm_keepalive()
        if self._pending:
            self._hold(data)
            return
        try:
            events = self.core.receive_data(data)
        except Exception:
            logger.exception("c2s %s: core failed on input", self.peer)
            self._internal_error()
            return
        self._feed(events)

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size > MAX_PENDING_INPUT:
            logger.warning("c2s %s: %d bytes held during a check, closing", self.peer, self._held_size)
            self._abort()

    def _release_held(self) -> None:
        while self._held and not self._pending and not self._closing:
            data = self._held.pop(0)
            self._held_size -= len(data)
            self.dataReceived(data)

    # -- events out of the core -----------------------------------------------------------------------

    def _feed(self, events: Iterable[Any] | None) -> None:
        """Write what the core wants written, then act on its events (so ``<proceed/>`` precedes TLS)."""
        events = list(events or ())
        self._flush()
        try:
            for event in events:
                self._handle(event)
        except Exception:
            logger.exception("c2s %s: failure while handling core events", self.peer)
            self._internal_error()
            return
        self._flush()

    def _handle(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "StartTls":
            self._flush()  # <proceed/> goes out in the clear, then the handshake (RFC 6120 §5.4.3.3)
            self.transport.startTLS(self.factory.server_tls)
        elif kind == "AuthenticateRequest":
            self._start_db_call(
                self._authenticated,
                self.authenticator.authenticate_external,
                getattr(event, "facts", self.cert_facts),
                getattr(event, "authzid", None),
                getattr(event, "domain", ""),
            )
        elif kind == "PasswordStepRequest":
            self._start_db_call(self._password_stepped, self.authenticator.authenticate_password, event)
        elif kind == "Authenticated":
            logger.debug("c2s %s: authenticated as %s", self.peer, getattr(event, "jid", "?"))
        elif kind == "BindRequest":
            self._bind(str(event.jid))
        elif kind == "Bound":
            self.jid = str(getattr(event, "jid", ""))
            self._cancel_timer()
            self._arm_keepalive()
            logger.info("c2s %s: session bound to %s", self.peer, self.jid)
        elif kind == "StanzaReceived":
            if self.bridge is not None:
                self.bridge.from_client(event.element)
            else:
                self.factory.on_stanza(self, event)
        elif kind == "Close":
            condition = getattr(event, "condition", None)
            logger.info(
                "c2s %s: stream closed%s: %s",
                self.peer,
                f" with {condition}" if condition else "",
                getattr(event, "reason", ""),
            )
            self._closing = True
            self._flush()
            self._lose_connection()
        else:
            logger.debug("c2s %s: core event %s ignored by the TCP adapter", self.peer, kind)

    def _bind(self, full_jid: str) -> None:
        """Enter the session registry, which re-checks the credentials before the core may send the bind
        result and ends the session whenever its certificate stops being valid (``live.bind_session``)."""
        if self.factory.bridge_factory is not None:
            self.bridge = self.factory.bridge_factory(
                full_jid, deliver=self.deliver, close=self.close_with_error
            )
        self.live = live.bind_session(
            self.factory.live_sessions,
            full_jid=full_jid,
            transport="tls" if self.factory.listener_mode == "tls" else "tcp",
            peer=self.peer,
            cert_fingerprint=self.cert_fingerprint or "",
            cert_facts=self.cert_facts,
            issuer_ca_id=getattr(self.authenticator, "issuer_ca_id", None),
            check=self.authenticator.refusal_at_bind,
            close=self.close_with_error,
            admit=self._bind_admitted,
            bridge=self.bridge,
        )

    def _bind_admitted(self) -> None:
        if self._closing or self._lost or self.core is None:
            return
        self._feed(self.core.bind_result(None))

    def deliver(self, element: Element) -> None:
        """A stanza routed to this session (transport.im.bridge): queue it and write it out."""
        if self._closing or self._lost or self.core is None:
            return
        if self.core.send_stanza(element):
            self._flush()

    def _password_stepped(self, result: Any) -> None:
        """A step of PLAIN/SCRAM judged (the authenticator logged and recorded the outcome)."""
        self._feed(self.core.auth_result(result))

    def _authenticated(self, result: Any) -> None:
        if getattr(result, "jid", None):
            logger.info("c2s %s: SASL EXTERNAL accepted as %s", self.peer, result.jid)
        else:
            logger.info(
                "c2s %s: SASL EXTERNAL refused: %s (%s)",
                self.peer,
                getattr(result, "condition", "?"),
                getattr(result, "reason", ""),
            )
        self._feed(self.core.auth_result(result))

    def _flush(self) -> None:
        data = self.core.data_to_send() if self.core is not None else b""
        if data and self.transport is not None:
            self.transport.write(data)

    # -- threads, timers, errors ----------------------------------------------------------------------

    def _start_db_call(
        self, on_result: Callable[[Any], None], function: Callable[..., Any], *args: Any
    ) -> None:
        """Run ``function(*args)`` in a pool thread; then, on the reactor, ``on_result``, then held input."""
        self._pending += 1
        deferred = threads.deferToThreadPool(
            self.factory.reactor, self.factory.reactor.getThreadPool(), _in_db_thread, function, *args
        )

        def finished(result: Any) -> None:
            self._pending -= 1
            if self._closing or self._lost:
                return  # the connection went away meanwhile: drop the result
            if isinstance(result, Failure):
                logger.error(
                    "c2s %s: %s failed: %s",
                    self.peer,
                    getattr(function, "__name__", function),
                    result.getTraceback(),
                )
                self._internal_error()
                return
            try:
                on_result(result)
            except Exception:
                logger.exception("c2s %s: failure after %s", self.peer, getattr(function, "__name__", "call"))
                self._internal_error()
                return
            self._release_held()

        deferred.addBoth(finished)

    def close_with_error(self, condition: str, text: str = "") -> None:
        """End the stream with a stream error (RFC 6120 §4.9); call from the reactor thread."""
        if self._closing or self.core is None:
            return
        self._feed(self.core.close_with_error(condition, text))
        if not self._closing:
            self._closing = True
            self._lose_connection()

    def _refuse_flooder(self) -> None:
        if self._lost or self.core is None:
            return
        self._closing = False  # set to keep the client's input out meanwhile; close_with_error checks it
        self.close_with_error(limits.POLICY_VIOLATION, "too many failed authentications; try again later")

    def _internal_error(self) -> None:
        try:
            self.close_with_error("internal-server-error", "")
        except Exception:
            logger.exception("c2s %s: could not send the stream error", self.peer)
        self._abort()

    def _abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self._lose_connection()

    def _lose_connection(self) -> None:
        """Flush, then close (the throttle goes first: Twisted keeps a connection with a producer open)."""
        if self.transport is None or self._lost:
            return
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        # A client that never reads would keep the flush, and the connection, pending for ever.
        self.factory.clock.callLater(CLOSE_GRACE, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self._lost and self.transport is not None:
            logger.info("c2s %s: output not taken within %.0f s of closing, aborting", self.peer, CLOSE_GRACE)
            self.transport.abortConnection()

    def _auth_timed_out(self) -> None:
        self._timer = None
        logger.warning(
            "c2s %s: not authenticated after %.0f s, closing", self.peer, self.factory.auth_timeout
        )
        self.close_with_error("connection-timeout", "authenticate sooner")  # RFC 6120 §4.9.3.4
        self._abort()

    def _arm_keepalive(self) -> None:
        interval = self.factory.ping_interval
        if not interval or self._closing:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(interval)
        else:
            self._timer = self.factory.clock.callLater(interval, self._idle)

    def _idle(self) -> None:
        """Nothing from the client for ``ping_interval``: ping it (XEP-0199 §4.2); silent twice: close."""
        self._timer = None
        if self._closing or self.core is None:
            return
        if self._ping_outstanding:
            logger.warning(
                "c2s %s: %s silent for %.0f s after a ping, closing",
                self.peer,
                self.jid,
                self.factory.ping_interval,
            )
            self.close_with_error("connection-timeout", "no answer to ping")  # RFC 6120 §4.9.3.4
            self._abort()
            return
        ping = Element(ns.IQ, {"type": "get", "id": f"keepalive-{next(self._pings)}", "to": self.jid or ""})
        domain = getattr(self.core, "domain", None)
        if domain:
            ping.set("from", domain)
        SubElement(ping, ns.qname(ns.PING, "ping"))
        if self.core.send_stanza(ping):
            self._ping_outstanding = True
            self._flush()
        self._arm_keepalive()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _default_authenticator_factory(config: Config) -> Callable[[TlsOptions | None, str], Authenticator]:
    def make(tls_options: TlsOptions | None, peer: str) -> Authenticator:
        from certauth.authenticator import CertificateAuthenticator  # noqa: PLC0415 (Django app code)

        return CertificateAuthenticator(config, tls_options, "tcp", peer)

    return make


def _default_bridge_factory(full_jid: str, **callbacks: Any) -> Any:
    from transport.im.bridge import SessionBridge  # noqa: PLC0415 (needs the app registry)

    return SessionBridge(full_jid, **callbacks)


def _default_core_factory(config: Config) -> Callable[[C2SListener], StreamCore]:
    def make(listener: C2SListener) -> StreamCore:
        from accounts.domains import checker
        from transport.xmpp import new_c2s_stream  # noqa: PLC0415

        return new_c2s_stream(config, listener, hosted=checker(config.hosts))

    return make


class C2SFactory(Factory):
    """Per ``[[listen.c2s]]`` listener: its TLS, its core and authenticator makers, the registry."""

    protocol = C2SProtocol
    noisy = False

    def __init__(
        self,
        listener: C2SListener,
        tls_options: TlsOptions | None,
        server_tls: ServerTls | None,
        *,
        reactor: Any,
        core_factory: Callable[[C2SListener], StreamCore],
        authenticator_factory: Callable[[TlsOptions | None, str], Authenticator],
        registry: ConnectionRegistry = registry,
        live_sessions: live.LiveSessions | None = None,
        auth_timeout: float = AUTH_TIMEOUT,
        ping_interval: float = 0,
        on_stanza: Callable[[C2SProtocol, Any], None] | None = None,
        bridge_factory: Callable[..., Any] | None = None,
        clock: Any = None,
    ) -> None:
        self.listener = listener
        self.tls_options = tls_options
        self.server_tls = server_tls
        self.reactor = reactor
        self.clock = clock or reactor
        self.core_factory = core_factory
        self.authenticator_factory = authenticator_factory
        self.registry = registry
        self.live_sessions = live_sessions if live_sessions is not None else live.sessions
        self.auth_timeout = auth_timeout
        self.ping_interval = ping_interval  # seconds of client silence before a keepalive ping; 0: never
        self.on_stanza = on_stanza or _unrouted
        self.bridge_factory = bridge_factory  # transport.im.bridge.SessionBridge: route through the router
        self.listener_mode = tls_options.mode if tls_options else "plain"
        self.name = f"{listener.ip_address}:{listener.port}"

    def buildProtocol(self, addr: Any) -> C2SProtocol:  # noqa: N802
        return self.protocol(self)


def _unrouted(connection: C2SProtocol, event: Any) -> None:
    logger.debug("c2s %s: stanza not routed (no router yet)", connection.peer)


def listen_c2s(
    listener: C2SListener,
    tls_options: TlsOptions | None,
    trust_anchors: list[Any],
    reactor: Any,
    *,
    core_factory: Callable[[C2SListener], StreamCore],
    authenticator_factory: Callable[[TlsOptions | None, str], Authenticator],
    reuse_port: bool = False,
    **factory_options: Any,
) -> IListeningPort:
    """Listen on one c2s port: plain with STARTTLS, or direct TLS (XEP-0368) when ``tls.mode = "tls"``.

    ``tls_options`` None is a listener without TLS (no certificate, so no SASL EXTERNAL on it).
    ``reuse_port``: with SO_REUSEPORT, so that several processes listen on the same port and the kernel
    spreads the connections over them (``runc2s --reuse-port``).
    """
    server_tls = ServerTls(tls_options, trust_anchors) if tls_options is not None else None
    factory = C2SFactory(
        listener,
        tls_options,
        server_tls,
        reactor=reactor,
        core_factory=core_factory,
        authenticator_factory=authenticator_factory,
        **factory_options,
    )
    wrapped: Any = factory
    if tls_options is not None and tls_options.mode == "tls":
        wrapped = TLSMemoryBIOFactory(server_tls, False, factory)
    if reuse_port:
        with _reuse_port_socket(listener) as sock:  # Twisted adopts a duplicate of it
            port = reactor.adoptStreamPort(sock.fileno(), sock.family, wrapped)
    else:
        port = reactor.listenTCP(
            listener.port, wrapped, backlog=listener.backlog, interface=listener.ip_address
        )
    address = port.getHost()
    factory.name = f"{address.host}:{address.port}"
    if tls_options is None:
        logger.warning("c2s listening on %s without TLS: no certificate, no SASL EXTERNAL", factory.name)
    else:
        logger.info(
            "c2s listening on %s (mode %s, verify_mode %s, disconnect_on_failure %s, %d trust anchors)",
            factory.name,
            tls_options.mode,
            tls_options.verify_mode,
            tls_options.disconnect_on_failure,
            len(trust_anchors),
        )
    return port


def _reuse_port_socket(listener: C2SListener) -> socket.socket:
    """A listening socket with SO_REUSEPORT on the listener's address (Linux lets only sockets of the same
    user share a port this way)."""
    family = socket.AF_INET6 if ":" in listener.ip_address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listener.ip_address, listener.port))
        sock.listen(listener.backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def listener_tls_options(listener: C2SListener, var_dir: Path) -> TlsOptions | None:
    """The listener's TLS options; the bootstrap's ``var/pki/server.pem`` when it names no certificate."""
    if listener.tls is None:
        return None
    pki_dir = var_dir / "pki"
    return with_default_credentials(listener.tls, pki_dir / "server.pem", pki_dir / "server.key")


def start_c2s_listeners(config: Config, reactor: Any, *, reuse_port: bool = False) -> list[IListeningPort]:
    """Start every ``[[listen.c2s]]`` listener of ``config`` on ``reactor`` (runc2s and runxmpp call this);
    ``reuse_port``: see :func:`listen_c2s`."""
    from django.conf import settings  # noqa: PLC0415

    from certauth.trust import trust_anchors  # noqa: PLC0415 (needs the app registry)

    ports = []
    for listener in config.listen_c2s:
        tls_options = listener_tls_options(listener, Path(settings.VAR_DIR))
        port = listen_c2s(
            listener,
            tls_options,
            list(trust_anchors(tls_options.cacertfile).certificates) if tls_options else [],
            reactor,
            core_factory=_default_core_factory(config),
            authenticator_factory=_default_authenticator_factory(config),
            ping_interval=float(config.options.ping_interval_seconds),
            bridge_factory=_default_bridge_factory,
            reuse_port=reuse_port,
        )
        server_tls = port_factory(port).server_tls
        if server_tls is not None:
            # CAs added or distrusted in the admin reach the handshake (CA list, disconnect_on_failure).
            refresh = LoopingCall(refresh_trust_anchors, reactor, server_tls, "c2s")
            refresh.clock = reactor
            refresh.start(TRUST_REFRESH_INTERVAL, now=False)
        ports.append(port)
    return ports


def port_factory(port: IListeningPort) -> C2SFactory:
    """The C2SFactory behind a listening port (unwrapping direct TLS)."""
    factory = port.factory  # type: ignore[attr-defined]
    return getattr(factory, "wrappedFactory", factory)
