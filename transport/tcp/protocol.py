"""The c2s TCP adapter: a thin ``asyncio.Protocol`` between a socket and the session driver, TLS included.

Specs: RFC 6120 §5.4.3.3 (after ``<proceed/>`` the TLS handshake starts on the same socket), XEP-0368 (direct
TLS on its own port), RFC 6120 §4.4 (closing a stream), RFC 8446 §6 (close_notify, alerts), DESIGN §3 (who
decides about a certificate).

Everything a session does (the certificate check, SASL, bind, the core's timers, teardown) is in
``transport.driver.SessionDriver``; this module gives it what the event loop provides (:class:`C2SProtocol`
is its ``Adapter``): writes, closes, a pool thread for each database call, ``callLater``, and ``start_tls``.
TLS is pyOpenSSL over memory BIOs (``transport.tcp.tls.TlsPump``) driven here, on the asyncio loop behind
Twisted's asyncio reactor (issue 17 §3: cheaper per handshake and per record than Twisted's
``TLSMemoryBIOProtocol``, measured on whole logins in bench/RESULTS.md). It also keeps the per-address
connection limit and stops reading from a client that does not read. The listening sockets are set up in
``transport.tcp.listener``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from transport.driver import SessionDriver
from transport.sessions import registry as live
from transport.tcp.tls import TlsFailure, TlsPump
from transport.tls.context import (
    ServerTls,
    channel_bindings,
    peer_chain,
    release_bio_buffers,
    session_resumed,
    verify_errors,
)
from transport.workers import defer_to_database
from transport.xmpp import errors
from xmppauth import limits
from xmppauth.config import C2SListener, TlsOptions

logger = logging.getLogger(__name__)

# After we close, how long a client may take to read what is left before the socket is simply dropped.
CLOSE_GRACE = 30.0


class C2SProtocol(asyncio.Protocol):
    """One client connection: bytes and the TLS handshake to the driver, the driver's requests to asyncio."""

    def __init__(self, factory: C2SFactory) -> None:
        self.factory = factory
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self.driver: SessionDriver | None = None
        self.tls: TlsPump | None = None  # TLS is on (direct TLS from the start, else after STARTTLS)
        self._counted = False  # this connection counts towards its address's max_connections_per_address
        self._lost = False
        self._closing = False  # close() was called: nothing more goes out
        self._why: str | None = None  # why we end the connection, for the driver's log line
        self._bios_to_release = False  # the handshake is done and its BIO buffers are not given back yet
        self._in_receive = False  # data_received runs: what the driver sends goes out once, at its end

    # -- asyncio's calls ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername") or ("?", "?")
        self.peer = f"{peername[0]}:{peername[1]}"
        if not limits.connections.admit(limits.address_of(self.peer)):
            logger.warning("c2s %s: too many connections from this address (max_connections_per_address)",
                           self.peer)  # fmt: skip
            transport.abort()
            return
        self._counted = True
        _open.add(self)
        factory = self.factory
        try:
            if factory.direct_tls:
                self.tls = self._new_tls()
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
            transport.close()
            return
        logger.info("c2s %s: connected on %s (%s)", self.peer, factory.name, factory.listener_mode)
        self.driver.open()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:  # already told (disconnect_all at shutdown), now by asyncio
            return
        self._lost = True
        _open.discard(self)
        if self._counted:
            self._counted = False
            limits.connections.release(limits.address_of(self.peer))
        why = self._why or (str(exc) if exc is not None else "closed")
        if self.driver is not None:
            self.driver.connection_lost(why)
        self.tls = None

    def data_received(self, data: bytes) -> None:
        if self._closing or self._lost:
            return
        self._in_receive = True
        try:
            if self.tls is None:
                # Plaintext (before STARTTLS): a <starttls/> in here switches TLS on for the next read;
                # the core drops what followed it in this one (RFC 6120 §5.4.3.3).
                if self.driver is not None:
                    self.driver.receive(data)
            else:
                self._tls_received(data)
        finally:
            self._in_receive = False
        self._flush()

    def _tls_received(self, data: bytes) -> None:
        tls = self.tls
        assert tls is not None
        try:
            received = tls.receive(data)
        except TlsFailure as failure:
            self._tls_failed(str(failure))
            return
        if received.handshake_done:
            self._handshake_completed()
        if received.data and self.driver is not None:
            self.driver.receive(received.data)
        if received.closed and not self._closing:  # RFC 8446 §6.1: answer close_notify with ours, then go
            self._why = "the client closed TLS"
            self.close()

    def _tls_failed(self, reason: str) -> None:
        """RFC 8446 §6.2: after a fatal alert, received or ours (in the pump's output), the connection is
        over; the driver's "disconnected" line gives OpenSSL's reason (a refused certificate also has its
        own line and AuthEvent, from ``ServerTls``)."""
        handshake = self.tls is not None and not self.tls.handshake_done
        self._why = f"TLS {'handshake ' if handshake else ''}failed: {reason}"
        self._write_tls_output()
        self._closing = True
        if self.transport is not None:
            self.transport.close()  # our alert, if any, goes out first
            self.factory.clock.callLater(CLOSE_GRACE, self._abort_if_open)  # to a client that reads it

    def _handshake_completed(self) -> None:
        """TLS is up (direct TLS or after STARTTLS): the driver checks the client's certificate."""
        if self.driver is None or self.tls is None:
            return
        connection = self.tls.connection
        assert connection is not None
        try:
            chain, tls_errors = peer_chain(connection), verify_errors(connection)
            bindings = channel_bindings(connection)
            resumed = session_resumed(connection)
        except Exception:
            logger.exception("c2s %s: cannot read the client's certificate chain", self.peer)
            self.driver.close_with_error(errors.INTERNAL_SERVER_ERROR)
            return
        # OpenSSL's connection is freed if its records were handed over (issue 17 §5); else its BIO buffers
        # go back once what came with the client's Finished is read and ours is sent.
        self._bios_to_release = not self.tls.release_handshake()
        self.driver.certificate_presented(
            chain, channel_bindings=bindings, tls_errors=tls_errors, resumed=resumed
        )

    def pause_writing(self) -> None:
        """Our output to this client backs up (a client that sends but never reads): stop reading from it, so
        its own TCP window holds it back."""
        logger.debug("c2s %s: client not reading, reading paused", self.peer)
        if self.transport is not None and not self._lost:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self._lost and not self._closing:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # the client's FIN: close our side too (connection_lost follows)

    # -- the driver's requests (transport.driver.Adapter) ---------------------------------------------

    def send(self, data: bytes) -> None:
        if self._lost or self._closing or self.transport is None:
            return
        if self.tls is None:
            self.transport.write(data)
            return
        try:
            self.tls.send(data)
        except TlsFailure as failure:
            self._tls_failed(str(failure))
            return
        if not self._in_receive:
            self._flush()

    def close(self, abort: bool = False) -> None:
        """Flush, then close: our close_notify (RFC 8446 §6.1) after the last record, then the socket once
        what is buffered is written."""
        if self.transport is None or self._lost:
            return
        if abort:
            self._closing = True
            self.transport.abort()
            return
        if self._closing:
            return
        if self.tls is not None:
            self.tls.close()
            self._write_tls_output()
        self._closing = True
        self.transport.close()
        # A client that never reads would keep the flush, and the connection, pending for ever.
        self.factory.clock.callLater(CLOSE_GRACE, self._abort_if_open)

    def run_in_thread(
        self, function: Callable[[], Any], done: Callable[[Any], None], failed: Callable[[str], None]
    ) -> None:
        deferred = defer_to_database(self.factory.reactor, function)
        deferred.addCallbacks(done, lambda failure: failed(failure.getTraceback()))

    def call_later(self, seconds: float, function: Callable[[], None]) -> Any:
        return self.factory.clock.callLater(seconds, function)

    def start_tls(self) -> None:
        """RFC 6120 §5.4.3.3: ``<proceed/>`` is already written in plaintext; from the next byte read on,
        this socket speaks TLS."""
        if self.tls is not None or self.factory.server_tls is None:
            raise RuntimeError("start_tls on a connection that cannot start TLS")
        # <proceed/> went to the socket's buffer as it was sent; nothing TLS writes can come before it.
        self.tls = self._new_tls()

    # -- helpers --------------------------------------------------------------------------------------

    def _new_tls(self) -> TlsPump:
        server_tls = self.factory.server_tls
        assert server_tls is not None
        return TlsPump(server_tls.connection_for(self.peer))

    def _flush(self) -> None:
        """What TLS has for the wire goes out; then the handshake's BIO buffers go back (issue 17 §5)."""
        if self.tls is None or self._lost:
            return
        if not self._closing:
            self._write_tls_output()
        if self._bios_to_release:
            self._release_bios()

    def _write_tls_output(self) -> None:
        if self.tls is not None and self.transport is not None:
            out = self.tls.data_to_send()
            if out:
                self.transport.write(out)

    def _release_bios(self) -> None:
        """The handshake's memory BIO buffers go back once both are empty (else at the next input)."""
        if self.tls is None or self.tls.connection is None:
            return
        try:
            released = release_bio_buffers(self.tls.connection)
        except Exception:  # memory only: never worth a connection
            logger.exception("c2s %s: cannot release the TLS buffers", self.peer)
            released = True
        self._bios_to_release = not released

    def _abort_if_open(self) -> None:
        if not self._lost and self.transport is not None:
            logger.info("c2s %s: output not taken within %.0f s of closing, aborting", self.peer, CLOSE_GRACE)
            self.transport.abort()


# The connections not yet lost, for disconnect_all.
_open: set[C2SProtocol] = set()


def disconnect_all() -> None:
    """At the reactor's shutdown: drop every c2s connection and tell its driver now, as Twisted's reactor
    did for its own connections (the session leaves the registry and the router before the loop stops)."""
    for connection in list(_open):
        connection._why = "the server is shutting down"
        if connection.transport is not None:
            connection.transport.abort()
        connection.connection_lost(None)


class C2SFactory:
    """Per ``[[listen.c2s]]`` listener: its TLS, its core and authenticator makers, the session registry."""

    protocol = C2SProtocol

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
        self.direct_tls = tls_options is not None and tls_options.mode == "tls"  # XEP-0368
        self.transport = transport_name(tls_options)
        self.name = f"{listener.ip_address}:{listener.port}"

    def buildProtocol(self, addr: Any) -> C2SProtocol:  # noqa: N802 (the name tests and tools know)
        return self.protocol(self)


def transport_name(tls_options: TlsOptions | None) -> str:
    """``tls`` on a direct TLS port (XEP-0368), else ``tcp``: the name in logs, auth events and sessions."""
    return "tls" if tls_options is not None and tls_options.mode == "tls" else "tcp"
