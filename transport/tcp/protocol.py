"""The c2s TCP adapter: a thin Twisted protocol between a socket and the session driver.

Specs: RFC 6120 §5.4.3.3 (after ``<proceed/>`` the TLS handshake starts on the same socket), XEP-0368 (direct
TLS on its own port), RFC 6120 §4.4 (closing a stream), DESIGN §3 (who decides about a certificate).

Everything a session does (the certificate check, SASL, bind, the core's timers, teardown) is in
``transport.driver.SessionDriver``; this module gives it what Twisted provides (:class:`C2SProtocol` is its
``Adapter``): writes, closes, a pool thread for each database call, ``callLater``, and ``startTLS``. It also
keeps the per-address connection limit and stops reading from a client that does not read. The listening
sockets are set up in ``transport.tcp.listener``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from transport.driver import SessionDriver
from transport.sessions import registry as live
from transport.tls.context import (
    ServerTls,
    channel_bindings,
    peer_chain,
    release_bio_buffers,
    session_resumed,
    verify_errors,
)
from transport.workers import defer_to_worker
from transport.xmpp import errors
from xmppauth import limits
from xmppauth.config import C2SListener, TlsOptions
from xmppauth.dbconn import with_fresh_connections

logger = logging.getLogger(__name__)

# After we close, how long a client may take to read what is left before the socket is simply dropped.
CLOSE_GRACE = 30.0

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
    """One client connection: bytes and the TLS handshake to the driver, the driver's requests to Twisted."""

    def __init__(self, factory: C2SFactory) -> None:
        self.factory = factory
        self.peer = "?"
        self.driver: SessionDriver | None = None
        self._counted = False  # this connection counts towards its address's max_connections_per_address
        self._lost = False
        self._bios_to_release = False  # TLS is up and the handshake's BIO buffers are not given back yet

    # -- Twisted's calls ------------------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's names)
        address = self.transport.getPeer()
        self.peer = f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"
        if not limits.connections.admit(limits.address_of(self.peer)):
            logger.warning("c2s %s: too many connections from this address (max_connections_per_address)",
                           self.peer)  # fmt: skip
            self.transport.abortConnection()
            return
        self._counted = True
        factory = self.factory
        try:
            self.driver = SessionDriver(
                factory.core_factory(factory.listener),
                factory.authenticator_factory(factory.tls_options, self.peer),
                self,
                transport=factory.transport,
                peer=self.peer,
                tls_options=factory.tls_options,
                sessions=factory.live_sessions,
                bridge_factory=factory.bridge_factory,
            )
        except Exception:
            logger.exception("c2s %s: cannot set up the connection", self.peer)
            self.transport.loseConnection()
            return
        self.transport.registerProducer(_ReadThrottle(self), True)
        logger.info("c2s %s: connected on %s (%s)", self.peer, factory.name, factory.listener_mode)
        self.driver.open()

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # noqa: N802
        self._lost = True
        if self._counted:
            limits.connections.release(limits.address_of(self.peer))
        why = reason.getErrorMessage() if reason is not None else "closed"
        if self.driver is not None:
            self.driver.connection_lost(why)

    def handshakeCompleted(self) -> None:  # noqa: N802 (IHandshakeListener)
        """TLS is up (direct TLS or after STARTTLS): the driver checks the client's certificate."""
        if self.driver is None:
            return
        try:
            connection = self.transport.getHandle()
            chain, tls_errors = peer_chain(connection), verify_errors(connection)
            bindings = channel_bindings(connection)
            resumed = session_resumed(connection)
        except Exception:
            logger.exception("c2s %s: cannot read the client's certificate chain", self.peer)
            self.driver.close_with_error(errors.INTERNAL_SERVER_ERROR)
            return
        self.driver.certificate_presented(
            chain, channel_bindings=bindings, tls_errors=tls_errors, resumed=resumed
        )
        # Once Twisted has fed OpenSSL what came with the client's Finished and sent what OpenSSL wrote.
        self._bios_to_release = True
        self.factory.clock.callLater(0, self._release_bios)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.driver is not None:
            self.driver.receive(data)
        if self._bios_to_release:
            self._release_bios()

    def _release_bios(self) -> None:
        """The handshake's memory BIO buffers go back (issue 17 §5); while a BIO holds bytes, at the next
        input."""
        if not self._bios_to_release or self._lost or self.transport is None:
            return
        try:
            released = release_bio_buffers(self.transport.getHandle())
        except Exception:  # memory only: never worth a connection
            logger.exception("c2s %s: cannot release the TLS buffers", self.peer)
            released = True
        self._bios_to_release = not released

    # -- the driver's requests (transport.driver.Adapter) ---------------------------------------------

    def send(self, data: bytes) -> None:
        if not self._lost and self.transport is not None:
            self.transport.write(data)

    def close(self, abort: bool = False) -> None:
        """Flush, then close (the throttle goes first: Twisted keeps a connection with a producer open)."""
        if self.transport is None or self._lost:
            return
        if abort:
            self.transport.abortConnection()
            return
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        # A client that never reads would keep the flush, and the connection, pending for ever.
        self.factory.clock.callLater(CLOSE_GRACE, self._abort_if_open)

    def run_in_thread(
        self, function: Callable[[], Any], done: Callable[[Any], None], failed: Callable[[str], None]
    ) -> None:
        deferred = defer_to_worker(self.factory.reactor, _in_db_thread, function)
        deferred.addCallbacks(done, lambda failure: failed(failure.getTraceback()))

    def call_later(self, seconds: float, function: Callable[[], None]) -> Any:
        return self.factory.clock.callLater(seconds, function)

    def start_tls(self) -> None:
        self.transport.startTLS(self.factory.server_tls)

    def _abort_if_open(self) -> None:
        if not self._lost and self.transport is not None:
            logger.info("c2s %s: output not taken within %.0f s of closing, aborting", self.peer, CLOSE_GRACE)
            self.transport.abortConnection()


class C2SFactory(Factory):
    """Per ``[[listen.c2s]]`` listener: its TLS, its core and authenticator makers, the session registry."""

    protocol = C2SProtocol
    noisy = False

    def __init__(
        self,
        listener: C2SListener,
        tls_options: TlsOptions | None,
        server_tls: ServerTls | None,
        *,
        reactor: Any,
        core_factory: Callable[[C2SListener], Any],
        authenticator_factory: Callable[[TlsOptions | None, str], Any],
        live_sessions: live.LiveSessions | None = None,
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
        self.live_sessions = live_sessions if live_sessions is not None else live.sessions
        self.bridge_factory = bridge_factory  # transport.im.bridge.SessionBridge: route through the router
        self.listener_mode = tls_options.mode if tls_options else "plain"
        self.transport = transport_name(tls_options)
        self.name = f"{listener.ip_address}:{listener.port}"

    def buildProtocol(self, addr: Any) -> C2SProtocol:  # noqa: N802
        return self.protocol(self)


def transport_name(tls_options: TlsOptions | None) -> str:
    """``tls`` on a direct TLS port (XEP-0368), else ``tcp``: the name in logs, auth events and sessions."""
    return "tls" if tls_options is not None and tls_options.mode == "tls" else "tcp"
